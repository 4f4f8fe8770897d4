"""FastTransport against a scripted HTTP server on a local socket: every way the API server
(or something in front of it) can frame, end or break an answer."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from kubernetes import client as k8s

from rollout.kubehttp import PIPELINE_LIMIT, FastTransport, ProtocolError, Request, Response

# A handler gets the accepted socket and the raw request bytes read so far; it answers and
# returns True to keep serving that connection.
Handler = Callable[[socket.socket, bytes], bool]


def _read_request(conn: socket.socket, buffer: bytearray) -> bytes:
    """The next request on `conn` (b"" once it closes); `buffer` holds what came after it."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < end + length:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        buffer += chunk
    request = bytes(buffer[: end + length])
    del buffer[: end + length]
    return request


@contextmanager
def server(
    handler: Handler, behind: list[int] | None = None
) -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A server on 127.0.0.1; yields its URL, the requests it got, and per-connection counts.
    With `behind`, it appends, per request read, how many bytes had come after it already
    (more than zero: the client sent the next request without waiting for this answer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests: list[bytes] = []
    per_connection: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        served = 0
        per_connection.append(0)
        index = len(per_connection) - 1
        buffer = bytearray()
        with conn:
            while not stop.is_set():
                request = _read_request(conn, buffer)
                if not request:
                    return
                requests.append(request)
                if behind is not None:
                    behind.append(len(buffer))
                served += 1
                per_connection[index] = served
                if not handler(conn, request):
                    return

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", requests, per_connection
    finally:
        stop.set()
        listener.close()
        thread.join(2)


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_keeps_one_connection_for_many_requests_and_sends_what_it_was_given() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(answer(b'{"ok": true}'))
        return True

    with server(handler) as (url, requests, per_connection):
        transport = FastTransport(url + "/prefix/", ssl_context=None)
        for i in range(5):
            got = transport.request(
                "PATCH",
                f"/apis/x/{i}",
                query={"fieldManager": "rollout controller", "b": "1"},
                headers={"Content-Type": "application/json-patch+json"},
                body=b'[{"op":"test"}]',
            )
            assert (got.status, got.body) == (200, b'{"ok": true}')
            assert got.headers["content-type"] == "application/json"
        assert transport.connections_made == 1 and per_connection == [5]
        head, _, body = requests[0].partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "PATCH /prefix/apis/x/0?fieldManager=rollout+controller&b=1 HTTP/1.1"
        assert f"Host: {url.removeprefix('http://')}" in lines
        assert "Content-Type: application/json-patch+json" in lines
        assert "Content-Length: 15" in lines
        assert body == b'[{"op":"test"}]'


def test_reads_chunked_answers_with_extensions_and_trailers() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4;ext=1\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n'
        )
        return True

    with server(handler) as (url, _, per_connection):
        transport = FastTransport(url, ssl_context=None)
        for _ in range(2):
            got = transport.request("POST", "/e", body=b"{}")
            assert (got.status, got.reason, got.body) == (201, "Created", b'{"a": 1}')
        assert per_connection == [2]


def test_an_answer_delimited_by_close_is_read_to_the_end_and_not_reused() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000)
        return False

    with server(handler) as (url, _, _):
        transport = FastTransport(url, ssl_context=None)
        assert transport.request("GET", "/a").body == b"x" * 100_000
        assert transport.request("GET", "/a").body == b"x" * 100_000
        assert transport.connections_made == 2


def test_connection_close_and_interim_answers() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"{}", extra="Connection: close\r\n")
        )
        return False

    with server(handler) as (url, _, _):
        transport = FastTransport(url, ssl_context=None)
        assert transport.request("GET", "/a").status == 200
        assert transport.request("GET", "/a").status == 200
        assert transport.connections_made == 2


def test_no_content_has_no_body_and_the_connection_stays() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    with server(handler) as (url, _, per_connection):
        transport = FastTransport(url, ssl_context=None)
        assert transport.request("DELETE", "/a").body == b""
        assert transport.request("DELETE", "/a").body == b""
        assert per_connection == [2]


def test_a_get_on_a_connection_the_server_closed_is_sent_again_on_a_new_one() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(answer(b"{}"))
        return False  # closes after every answer, without saying so

    with server(handler) as (url, requests, _):
        transport = FastTransport(url, ssl_context=None)
        for _ in range(3):
            assert transport.request("GET", "/a").status == 200
        assert len(requests) == 3  # each GET reached the server exactly once


def answers_once_then_closes() -> Handler:
    """Answers the first request; reads the second, then closes without an answer."""
    served = {"n": 0}

    def handler(conn: socket.socket, request: bytes) -> bool:
        served["n"] += 1
        if served["n"] == 1:
            conn.sendall(answer(b"{}"))
            return True
        return False

    return handler


def test_a_write_whose_answer_never_came_is_not_sent_again() -> None:
    with server(answers_once_then_closes()) as (url, requests, _):
        transport = FastTransport(url, ssl_context=None)
        transport.request("POST", "/a", body=b"{}")
        with pytest.raises(ProtocolError, match="closed the connection before answering"):
            transport.request("POST", "/a", body=b"{}")
        assert len(requests) == 2  # the second POST was not repeated


def _echo_path(conn: socket.socket, request: bytes) -> bool:
    conn.sendall(answer(request.split(b" ", 2)[1]))
    return True


def test_a_pipeline_writes_every_request_before_reading_and_answers_in_order() -> None:
    behind: list[int] = []
    with server(_echo_path, behind) as (url, _, per_connection):
        transport = FastTransport(url, ssl_context=None)
        paths = [f"/e/{i}" for i in range(5)]
        got = transport.pipeline([Request("POST", path, body=b"{}") for path in paths])
        assert [(r.status, r.body) for r in got if isinstance(r, Response)] == [
            (200, path.encode()) for path in paths
        ]
        assert per_connection == [5] and transport.connections_made == 1
        assert behind[0] > 0  # the others were on the wire before the first answer
        transport.request("POST", "/one", body=b"{}")
        assert behind[-1] == 0  # one request at a time: nothing behind it
        assert per_connection == [6]


def test_a_pipeline_longer_than_one_write_keeps_its_order_and_connection() -> None:
    with server(_echo_path) as (url, _, per_connection):
        transport = FastTransport(url, ssl_context=None)
        count = PIPELINE_LIMIT * 2 + 3
        got = transport.pipeline([Request("PATCH", f"/e/{i}", body=b"{}") for i in range(count)])
        assert [r.body for r in got if isinstance(r, Response)] == [
            f"/e/{i}".encode() for i in range(count)
        ]
        assert per_connection == [count]


def test_the_requests_behind_a_connection_close_go_again_on_a_new_connection() -> None:
    served = {"n": 0}

    def handler(conn: socket.socket, request: bytes) -> bool:
        served["n"] += 1
        path = request.split(b" ", 2)[1]
        if served["n"] == 2:
            conn.sendall(answer(path, extra="Connection: close\r\n"))
            return False  # reads nothing more on this connection
        conn.sendall(answer(path))
        return True

    with server(handler) as (url, requests, per_connection):
        transport = FastTransport(url, ssl_context=None)
        got = transport.pipeline([Request("POST", f"/e/{i}", body=b"{}") for i in range(4)])
        assert [r.body for r in got if isinstance(r, Response)] == [
            b"/e/0",
            b"/e/1",
            b"/e/2",
            b"/e/3",
        ]
        assert per_connection == [2, 2] and len(requests) == 4  # each reached it once


def test_a_pipeline_broken_midway_is_an_error_for_the_rest_and_not_sent_again() -> None:
    with server(answers_once_then_closes()) as (url, requests, _):
        transport = FastTransport(url, ssl_context=None)
        got = transport.pipeline([Request("POST", f"/e/{i}", body=b"{}") for i in range(3)])
        assert isinstance(got[0], Response) and got[0].status == 200
        # (the end of the stream: a ProtocolError; a reset would be another OSError)
        assert all(isinstance(r, OSError) for r in got[1:]), got
        assert len(requests) == 2 and transport.connections_made == 1  # nothing repeated


def test_a_slow_server_times_out() -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        threading.Event().wait(2)
        return False

    with server(handler) as (url, _, _):
        transport = FastTransport(url, ssl_context=None)
        with pytest.raises(TimeoutError):
            transport.request("GET", "/a", timeout=0.3)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "ended after 3 of 10 bytes"),
    ],
)
def test_answers_that_are_not_http_are_protocol_errors(reply: bytes, message: str) -> None:
    def handler(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(reply)
        return False

    with server(handler) as (url, _, _):
        with pytest.raises(ProtocolError, match=message) as caught:
            FastTransport(url, ssl_context=None).request("GET", "/a", timeout=5)
        assert isinstance(caught.value, OSError)  # what adapters map to "unavailable"


def test_nothing_listening_is_an_os_error() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(OSError):
        FastTransport(f"http://127.0.0.1:{port}", ssl_context=None).request("GET", "/", timeout=2)


def test_a_pipeline_timeout_bounds_each_answer_from_the_one_before() -> None:
    served = {"n": 0}

    def handler(conn: socket.socket, request: bytes) -> bool:
        served["n"] += 1
        time.sleep(0.25 if served["n"] <= 4 else 3.0)  # the fifth never comes in time
        conn.sendall(answer(b"{}"))
        return True

    with server(handler) as (url, _, _):
        transport = FastTransport(url, ssl_context=None)
        started = time.monotonic()
        got = transport.pipeline([Request("POST", "/e", body=b"{}")] * 6, timeout=0.6)
        took = time.monotonic() - started
        # Four answers 0.25 s apart (1 s in all, more than the timeout), then none in time.
        assert [isinstance(r, Response) for r in got] == [True] * 4 + [False] * 2, got
        assert all(isinstance(r, TimeoutError) for r in got[4:]), got
        assert 1.5 < took < 2.5, took


def test_a_pipeline_to_nothing_listening_is_an_os_error_per_request() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    transport = FastTransport(f"http://127.0.0.1:{port}", ssl_context=None)
    got = transport.pipeline([Request("POST", "/a", body=b"{}")] * 3, timeout=2.0)
    assert len(got) == 3 and all(isinstance(r, ConnectionRefusedError) for r in got)


def test_which_configurations_it_takes() -> None:
    plain = k8s.Configuration(host="https://10.0.0.1:6443")
    assert FastTransport.supports(plain)
    proxied = k8s.Configuration(host="https://10.0.0.1:6443")
    proxied.proxy = "http://proxy:3128"
    retried = k8s.Configuration(host="https://10.0.0.1:6443")
    retried.retries = 3
    named = k8s.Configuration(host="https://10.0.0.1:6443")
    named.assert_hostname = "api.example"  # type: ignore[assignment]
    for other in (proxied, retried, named):
        assert not FastTransport.supports(other)


def test_tls_settings_come_from_the_configuration(tmp_path: object) -> None:
    configuration = k8s.Configuration(host="https://api.example:6443/base")
    configuration.verify_ssl = False
    transport = FastTransport.from_configuration(configuration)
    assert (transport.hostname, transport.port, transport.base_path) == (
        "api.example",
        6443,
        "/base",
    )
    assert transport._ssl is not None and transport._ssl.verify_mode == ssl.CERT_NONE
    configuration.verify_ssl = True
    configuration.assert_hostname = False
    configuration.tls_server_name = "kubernetes.default"
    transport = FastTransport.from_configuration(configuration)
    assert transport._ssl is not None and not transport._ssl.check_hostname
    assert transport._server_hostname == "kubernetes.default"
