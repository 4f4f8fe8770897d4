"""A small HTTP/1.1 client for kube-apiserver: keep-alive TLS connections, JSON requests.

Why not the official client's urllib3 stack for every call: at a thousand rollouts a tick is
a thousand weight PATCHes and a thousand Event POSTs, and each request through
`ApiClient.call_api` → urllib3 → http.client costs about 1.2 ms of CPU here (header parsing
through `email.parser`, urllib3's pools, retries and timeouts, the client's serialization),
four times what the request itself costs on a TLS socket. This module sends the same request
(the same URL, headers and auth, taken from the client's `Configuration`) on a socket it keeps
open, and reads the answer with the little HTTP/1.1 the API server speaks: a status line,
headers, and a body with Content-Length, chunked, or until close. `pipeline` sends several
requests in one write and reads their answers in order (HTTP/1.1 pipelining, which Go's server
answers in order): the Event writers use it to write a burst with one wait instead of one each.

It is used only for configurations it fully understands (`FastTransport.supports`): no proxy,
no custom retries or socket options, no client-go retries. Anything else keeps the official
client's path. Streaming requests (watches) always do.

Errors: a connection that cannot be made or breaks is an `OSError` (ssl errors are too), as
from urllib3; a reply that is not HTTP/1.x is `ProtocolError` (an `OSError` too). A request
is sent again only when it cannot have reached the server: a kept-alive connection the server
had already closed (found out when writing, or when the answer is an immediate end of stream
to a GET). Writes are never repeated on a broken answer: the caller's compare-and-swap decides.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

_MAX_HEADER_BYTES = 1 << 20
_READ_SIZE = 1 << 16
# An idle connection older than this is not reused: the API server (or a load balancer in
# front of it) may have dropped it, and a new one costs one TLS handshake.
_IDLE_LIMIT_SECONDS = 50.0
# Requests sent in one write by `pipeline`: their answers (an Event's is ~1 kB) must fit in the
# socket buffers, which the server fills while we are still writing.
PIPELINE_LIMIT = 16


class ProtocolError(OSError):
    """The server's answer is not the HTTP/1.1 this client reads."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below the server's base path, not yet percent-encoded
    query: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


class _Connection:
    """One socket to the server, used by one request at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.used_at = time.monotonic()
        self.reused = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def looks_dropped(self) -> bool:
        """An idle connection with something to read has been closed by the server (or holds
        garbage): either way it cannot carry a request."""
        if self.buffer:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def recv(self, deadline: float | None) -> bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out waiting for the API server's answer")
            self.sock.settimeout(remaining)
        return self.sock.recv(_READ_SIZE)


class FastTransport:
    """Requests to one API server over a small pool of kept-alive connections. Thread-safe."""

    def __init__(
        self,
        host: str,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None = None,
        max_idle: int = 32,
    ) -> None:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {host!r}")
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._server_hostname = server_hostname or self.hostname
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle
        self.connections_made = 0  # for tests and benchmarks

    # --- from the official client's configuration ---------------------------------------

    @staticmethod
    def supports(configuration: Any) -> bool:
        """Whether this transport sends exactly what the official client would."""
        proxy = getattr(configuration, "proxy", None)
        return (
            not proxy
            and getattr(configuration, "retries", None) is None
            and getattr(configuration, "socket_options", None) is None
            and not getattr(configuration, "client_go_retries", False)
            and not getattr(configuration, "keep_alive", False)
            and getattr(configuration, "assert_hostname", None) in (None, True, False)
            and urlsplit(getattr(configuration, "host", "")).scheme in ("http", "https")
        )

    @classmethod
    def from_configuration(cls, configuration: Any) -> FastTransport:
        """TLS as the official client sets it up: the CA (file or data), the client
        certificate, `verify_ssl`, `assert_hostname=False` and `tls_server_name`."""
        context: ssl.SSLContext | None = None
        if urlsplit(configuration.host).scheme == "https":
            context = ssl.create_default_context(
                cafile=configuration.ssl_ca_cert, cadata=_ca_data(configuration.ca_cert_data)
            )
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif configuration.assert_hostname is False:
                context.check_hostname = False
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return cls(
            configuration.host,
            ssl_context=context,
            server_hostname=configuration.tls_server_name or None,
            max_idle=max(1, int(configuration.connection_pool_maxsize or 32)),
        )

    # --- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read its whole answer; `timeout` bounds all of it (the
        connection, the write and the answer), None waits as long as it takes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        data = self._encode(Request(method, path, query=query, headers=headers, body=body))
        for attempt in (1, 2):
            conn = self._checkout(deadline)
            try:
                try:
                    self._send(conn, data, deadline)
                except OSError:
                    if conn.reused and attempt == 1:
                        conn.close()  # closed by the server while idle: never reached it
                        continue
                    raise
                response, keep = self._read(conn, method, deadline, retryable=attempt == 1)
            except _RetryOnFreshConnection:
                conn.close()
                continue
            except BaseException:
                conn.close()
                raise
            self._release(conn, keep)
            return response
        raise ProtocolError("the API server closed the connection twice before answering")

    def pipeline(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> list[Response | OSError]:
        """Send `requests` on one connection without waiting for each answer, then read the
        answers in order (HTTP/1.1 pipelining; Go's server, kube-apiserver's, answers a
        connection's requests one after the other, in order). Many requests then cost one
        write and one wait, where `request` costs one each: on a busy machine each wait is a
        context switch and a cold start for the thread that waited.

        Returns, per request, its answer or the `OSError` that left it unanswered. A request
        whose answer did not come may or may not have been carried out (as with `request`,
        writes are not sent again), except after an answer with "Connection: close": the
        server reads nothing after it, so the requests behind it go again on a new
        connection. At most `PIPELINE_LIMIT` requests share one write, so that their answers
        fit in the socket's buffers while it is still being written. `timeout` bounds the
        connection and the write, then each answer from the one before it (the server answers
        them one after the other: a slow server is not a timeout for the last of many).
        """
        results: list[Response | OSError] = []
        for start in range(0, len(requests), PIPELINE_LIMIT):
            results.extend(self._pipeline(requests[start : start + PIPELINE_LIMIT], timeout))
        return results

    def _pipeline(
        self, requests: Sequence[Request], timeout: float | None
    ) -> list[Response | OSError]:
        def deadline() -> float | None:
            return None if timeout is None else time.monotonic() + timeout

        results: list[Response | OSError] = []
        pending = list(requests)
        fresh_tried = False
        while pending:
            sending_by = deadline()
            try:
                conn = self._checkout(sending_by)
            except OSError as exc:  # refused, unreachable, TLS: none of them was sent
                return [*results, *(exc for _ in pending)]
            try:
                self._send(conn, b"".join(self._encode(r) for r in pending), sending_by)
            except OSError as exc:
                conn.close()
                if conn.reused and not fresh_tried:
                    fresh_tried = True  # closed by the server while idle: none reached it
                    continue
                return [*results, *(exc for _ in pending)]
            keep = True
            try:
                while pending and keep:
                    response, keep = self._read(
                        conn, pending[0].method, deadline(), retryable=False
                    )
                    results.append(response)
                    pending.pop(0)
            except OSError as exc:
                conn.close()
                return [*results, *(exc for _ in pending)]
            except BaseException:
                conn.close()
                raise
            # Not kept: answered up to here, and the server read nothing more: send the rest
            # again (on a new connection).
            self._release(conn, keep)
        return results

    def _encode(self, request: Request) -> bytes:
        target = quote(self.base_path + request.path, safe="/:@!$&'()*+,;=-._~%")
        if request.query:
            target += "?" + urlencode(list(request.query.items()))
        head = [f"{request.method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        head.extend(f"{name}: {value}" for name, value in (request.headers or {}).items())
        body = request.body
        if body is not None or request.method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- connections ----------------------------------------------------------------------

    def _checkout(self, deadline: float | None) -> _Connection:
        now = time.monotonic()
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if now - conn.used_at < _IDLE_LIMIT_SECONDS and not conn.looks_dropped():
                conn.reused = True
                return conn
            conn.close()
        timeout = None if deadline is None else max(0.001, deadline - now)
        sock = socket.create_connection((self.hostname, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._server_hostname)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self.connections_made += 1
        return _Connection(sock)

    def _release(self, conn: _Connection, keep: bool) -> None:
        """A connection whose last answer was read whole: kept for reuse, or closed."""
        if keep:
            self._checkin(conn)
        else:
            conn.close()

    def _checkin(self, conn: _Connection) -> None:
        conn.used_at = time.monotonic()
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    @staticmethod
    def _send(conn: _Connection, data: bytes, deadline: float | None) -> None:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out sending to the API server")
            conn.sock.settimeout(remaining)
        else:
            conn.sock.settimeout(None)
        conn.sock.sendall(data)

    # --- answers --------------------------------------------------------------------------

    def _read(
        self, conn: _Connection, method: str, deadline: float | None, *, retryable: bool
    ) -> tuple[Response, bool]:
        while True:
            status, reason, headers = self._read_head(
                conn, deadline, retry_on_eof=retryable and conn.reused and method == "GET"
            )
            if not 100 <= status < 200 or status == 101:
                break  # 1xx (e.g. 100 Continue) precede the real answer
        keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(conn, deadline)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
            body = self._read_exactly(conn, length, deadline)
        else:
            body = self._read_to_close(conn, deadline)
            keep = False
        return Response(status, reason, headers, body), keep

    def _read_head(
        self, conn: _Connection, deadline: float | None, *, retry_on_eof: bool
    ) -> tuple[int, str, dict[str, str]]:
        while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            if len(conn.buffer) > _MAX_HEADER_BYTES:
                raise ProtocolError("the API server's answer headers are too long")
            try:
                chunk = conn.recv(deadline)
            except ConnectionResetError:
                if retry_on_eof and not conn.buffer:
                    raise _RetryOnFreshConnection() from None
                raise
            if not chunk:
                if retry_on_eof and not conn.buffer:
                    raise _RetryOnFreshConnection()
                raise ProtocolError("the API server closed the connection before answering")
            conn.buffer += chunk
        head, conn.buffer = conn.buffer[:end], conn.buffer[end + 4 :]
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    @staticmethod
    def _read_exactly(conn: _Connection, length: int, deadline: float | None) -> bytes:
        chunks = [conn.buffer]
        have = len(conn.buffer)
        while have < length:
            chunk = conn.recv(deadline)
            if not chunk:
                raise ProtocolError(f"the answer ended after {have} of {length} bytes")
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        conn.buffer = data[length:]
        return data[:length]

    def _read_chunked(self, conn: _Connection, deadline: float | None) -> bytes:
        body: list[bytes] = []
        while True:
            while (end := conn.buffer.find(b"\r\n")) < 0:
                chunk = conn.recv(deadline)
                if not chunk:
                    raise ProtocolError("the answer ended inside a chunk header")
                conn.buffer += chunk
            size_text = conn.buffer[:end].split(b";", 1)[0].strip()
            conn.buffer = conn.buffer[end + 2 :]
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                # Trailers (none from the API server), then the empty line.
                while (end := conn.buffer.find(b"\r\n")) != 0:
                    if end > 0:
                        conn.buffer = conn.buffer[end + 2 :]
                        continue
                    chunk = conn.recv(deadline)
                    if not chunk:
                        raise ProtocolError("the answer ended before the last chunk's end")
                    conn.buffer += chunk
                conn.buffer = conn.buffer[2:]
                return b"".join(body)
            body.append(self._read_exactly(conn, size, deadline))
            crlf = self._read_exactly(conn, 2, deadline)
            if crlf != b"\r\n":
                raise ProtocolError("a chunk does not end in CRLF")

    @staticmethod
    def _read_to_close(conn: _Connection, deadline: float | None) -> bytes:
        chunks = [conn.buffer]
        conn.buffer = b""
        while chunk := conn.recv(deadline):
            chunks.append(chunk)
        return b"".join(chunks)


class _RetryOnFreshConnection(Exception):
    """A kept-alive connection ended (or was reset) before any byte of the answer to a GET."""


def _ca_data(data: Any) -> str | bytes | None:
    if data is None or isinstance(data, str | bytes):
        return data
    return str(data)


__all__ = ["PIPELINE_LIMIT", "FastTransport", "ProtocolError", "Request", "Response"]
