"""HTTP adapters for webhook gates (`GateRunner`) and `kind: webhook` checks
(`WebhookMetricSource`), over the standard library's http.client.

Every call is bounded:
- in time: the gate's (or check's) timeout covers resolving the host name, connect, send,
  and reading the whole answer; a watchdog shuts the socket at the deadline, so an endpoint
  that trickles bytes cannot stretch it, and a resolver that does not answer is given up on
  at the deadline too (its lookup finishes in a daemon thread of its own, and is dropped);
- in size: at most `max_response_bytes` of the answer are read (64 KiB by default);
- in scheme: http and https only (https verifies the certificate with the system's CAs);
  redirects are not followed, environment proxies are not used.

The bearer token is read from its environment variable or file at each call (a rotated
secret is used at once). It is never logged and never part of a result: messages name where
the token comes from, and URLs are shown without their query string.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from rollout.analysis.verdicts import Measurement
from rollout.controller.gates import (
    GateOutcome,
    GateResult,
    answer_message,
    error_result,
    result_from_response,
)
from rollout.policy.jsonpath import JsonPathError, parse_json_path
from rollout.policy.schema import (
    WEBHOOK_SCHEMES,
    GateSpec,
    MetricCheck,
    MetricKind,
    WebhookAuth,
)
from rollout.secret_source import SecretSource

log = structlog.get_logger("rollout.gates")

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "envoy-ai-rollout"
_CHUNK = 8192


class CallError(Exception):
    """A call that got no answer; the message is safe to show (no token, no query string)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    truncated: bool  # the answer was longer than the limit; `body` is its start
    seconds: float


def shown_url(url: str) -> str:
    """The URL without its query string, fragment or credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


def read_secret(source: SecretSource, environ: Mapping[str, str] | None = None) -> str:
    """The secret, read now. CallError naming the source (never the value) when unusable."""
    if source.env is not None:
        value = (os.environ if environ is None else environ).get(source.env, "").strip()
        if not value:
            raise CallError(f"bearer token: environment variable {source.env} is not set")
    else:
        assert source.file is not None
        try:
            value = Path(source.file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc)
            raise CallError(f"bearer token: cannot read {source.file}: {detail}") from None
        if not value:
            raise CallError(f"bearer token: {source.file} is empty")
    if any(ch in value for ch in "\r\n\x00"):
        raise CallError(f"bearer token from {source.describe()} contains a line break")
    return value


def call(
    url: str,
    *,
    method: str,
    timeout: timedelta,
    body: bytes | None = None,
    auth: WebhookAuth | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    environ: Mapping[str, str] | None = None,
) -> Answer:
    """One bounded HTTP call (see the module doc). Raises CallError for no answer."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in WEBHOOK_SCHEMES:
        raise CallError(f"only http and https URLs are called, not {scheme or 'no scheme'!r}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number
        raise CallError(f"bad URL {shown_url(url)}: {exc}") from None
    if not host:
        raise CallError("bad URL: no host")
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if auth is not None:
        headers["Authorization"] = f"Bearer {read_secret(auth.bearer_token_from, environ)}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    seconds = timeout.total_seconds()
    where = f"{method} {shown_url(url)}"

    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(
            host, port, timeout=seconds, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=seconds)
    started = time.monotonic()
    deadline = started + seconds
    # http.client's own connect resolves the name with the system's limits (a resolver that
    # does not answer can take several times 5 s): resolve within the deadline, then connect
    # to what it found. TLS still checks the certificate against the host name.
    connection._create_connection = (  # type: ignore[attr-defined]
        lambda address, timeout, source_address=None: _connect(
            address, deadline, source_address, where, _seconds(seconds)
        )
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(seconds, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        data = bytearray()
        truncated = False
        while True:
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            data += chunk
            if len(data) > max_response_bytes:
                del data[max_response_bytes:]
                truncated = True
                break
        if expired.is_set():
            raise TimeoutError
        return Answer(response.status, bytes(data), truncated, time.monotonic() - started)
    except TimeoutError:
        raise CallError(f"{where}: no answer within {_seconds(seconds)}") from None
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise CallError(f"{where}: no answer within {_seconds(seconds)}") from None
        raise CallError(f"{where}: {_describe(exc)}") from None
    finally:
        watchdog.cancel()
        connection.close()


_AddressInfo = list[tuple[Any, Any, int, str, Any]]


def _resolve(host: str, port: int, deadline: float) -> _AddressInfo | None:
    """getaddrinfo's answer, or None when it does not come before `deadline` (the lookup
    goes on in a daemon thread; its answer is dropped). Raises what getaddrinfo raises."""
    found: list[_AddressInfo] = []
    failed: list[BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="webhook-resolve", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        return None
    if failed:
        raise failed[0]
    return found[0]


def _connect(
    address: tuple[str, int],
    deadline: float,
    source_address: tuple[str, int] | None,
    where: str,
    limit: str,
) -> socket.socket:
    """socket.create_connection within `deadline`, the name resolved within it too: each
    address found is tried in turn, as create_connection does."""
    host, port = address
    addresses = _resolve(host, port, deadline)
    if addresses is None:
        raise CallError(f"{where}: no answer within {limit} (resolving {host!r})")
    last: OSError | None = None
    for family, type_, proto, _, sockaddr in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(remaining)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last if last is not None else OSError(f"no address found for {host!r}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return f"{type(exc).__name__}: {exc}"[:200]


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"


class HttpGateRunner:
    """`GateRunner` over HTTP: POSTs the payload as JSON, reads the status and the message."""

    def __init__(
        self,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._environ = environ

    def run(self, gate: GateSpec, payload: Mapping[str, object]) -> GateResult:
        started = time.monotonic()
        fields = {"gate": gate.name, "when": gate.when.value, "url": shown_url(gate.url)}
        try:
            answer = call(
                gate.url,
                method=gate.method,
                timeout=gate.timeout,
                body=json.dumps(payload).encode(),
                auth=gate.auth,
                max_response_bytes=self._max_response_bytes,
                environ=self._environ,
            )
        except CallError as exc:
            result = error_result(gate.name, str(exc), seconds=time.monotonic() - started)
        except Exception as exc:  # a bug here must hold the rollout, not crash the tick
            result = error_result(
                gate.name, f"gate call failed: {type(exc).__name__}", seconds=None
            )
        else:
            result = result_from_response(
                gate.name, answer.status, answer.body, seconds=answer.seconds
            )
        level = "info" if result.outcome is GateOutcome.PASSED else "warning"
        getattr(log, level)(
            "gate_called",
            **fields,
            outcome=result.outcome.value,
            status=result.status,
            seconds=None if result.seconds is None else round(result.seconds, 3),
            message=result.message,
        )
        return result


class HttpWebhookMetricSource:
    """`WebhookMetricSource` over HTTP: GET (or POST the payload), read the JSON answer, take
    the number at the check's jsonPath as the canary value.

    Anything but a 2xx answer with a finite number at the path is a provider error
    (`Measurement.error`, the check is ERROR: the rollout holds): the endpoint, not the
    canary, is what went wrong.
    """

    def __init__(
        self,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._environ = environ

    def fetch(self, check: MetricCheck, payload: Mapping[str, object]) -> Measurement:
        try:
            value = self._value(check, payload)
        except CallError as exc:
            error = str(exc)
        except Exception as exc:  # a bug here must hold the rollout, not crash the tick
            error = f"webhook call failed: {type(exc).__name__}"
        else:
            return Measurement(metric=check.name, canary=value)
        log.warning("webhook_metric_error", metric=check.name, error=error)
        return Measurement(metric=check.name, error=error)

    def _value(self, check: MetricCheck, payload: Mapping[str, object]) -> float:
        if check.kind is not MetricKind.WEBHOOK or check.url is None or check.timeout is None:
            raise CallError(f"metric {check.name} is not a webhook check")
        method = (check.method or "GET").upper()
        where = f"{method} {shown_url(check.url)}"
        answer = call(
            check.url,
            method=method,
            timeout=check.timeout,
            body=json.dumps(payload).encode() if method == "POST" else None,
            auth=check.auth,
            max_response_bytes=self._max_response_bytes,
            environ=self._environ,
        )
        if not 200 <= answer.status < 300:
            said = answer_message(answer.body)
            raise CallError(
                f"{where} answered HTTP {answer.status}" + (f": {said}" if said else "")
            )
        if answer.truncated:
            raise CallError(f"{where}: the answer is larger than {self._max_response_bytes} bytes")
        return decode_value(check, answer.body, where)


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def decode_value(check: MetricCheck, body: bytes, where: str = "the answer") -> float:
    """The number at the check's jsonPath in a JSON body. CallError says what is wrong."""
    path = parse_json_path(check.json_path or "$")
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:
        shown = answer_message(body)[:80]
        if not shown:
            raise CallError(f"{where}: the answer is empty, expected JSON") from None
        raise CallError(f"{where}: the answer is not JSON ({exc}): {shown!r}") from None
    try:
        return path.evaluate(document)
    except JsonPathError as exc:
        raise CallError(f"{where}: jsonPath {path.text}: {exc}") from None
