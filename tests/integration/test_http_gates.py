"""The HTTP gate runner and webhook metric source against real HTTP servers on 127.0.0.1.

No Kubernetes: each test starts an http.server on a free port whose handler answers as the
test wants (pass, fail, hang, bad JSON) and records what it received.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from rollout.controller.gates import GateOutcome, gate_payload
from rollout.controller.runtime.http_gates import HttpGateRunner, HttpWebhookMetricSource
from rollout.policy.schema import API_VERSION, GateSpec, MetricCheck, RolloutPolicy

TOKEN = "tok-3f9a1c-never-logged"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


# An answer: (status, body bytes) or "hang" (wait until released, then close).
Answer = tuple[int, bytes] | str


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Server]]:
    servers: list[tuple[ThreadingHTTPServer, Server]] = []

    def start(answer: Answer) -> Server:
        record = Server(url="")

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record.received.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                if answer == "hang":
                    record.release.wait(30)
                    return
                assert not isinstance(answer, str)
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        record.url = f"http://127.0.0.1:{server.server_address[1]}"
        servers.append((server, record))
        return record

    yield start
    for server, record in servers:
        record.release.set()
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def policy_with(gate: dict[str, Any]) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat-canary"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "chat-v1", "modelNameOverride": "llama-v1"},
                "canary": {"backend": "chat-v2", "modelNameOverride": "llama-v2"},
                "steps": [10, 50],
                "analysis": {"metrics": [{"kind": "error-rate", "max": 0.05}]},
                "gates": [gate],
            },
        }
    )


def gate_at(url: str, **extra: Any) -> tuple[GateSpec, dict[str, object]]:
    policy = policy_with(
        {"name": "evals", "url": url, "when": "pre-rollout", "timeout": "5s", **extra}
    )
    (gate,) = policy.spec.gates
    return gate, gate_payload(policy, gate, step_index=0, stable_weight=100, canary_weight=0)


def webhook_check(url: str, **extra: Any) -> MetricCheck:
    return MetricCheck.model_validate(
        {"kind": "webhook", "name": "judge", "url": url, "jsonPath": "$.score", "min": 0.8} | extra
    )


# ---------------------------------------------------------------------------------------------
# Gates


def test_a_2xx_gate_passes_and_receives_the_payload(serve: Callable[[Answer], Server]) -> None:
    server = serve((200, b'{"message": "50/50 evals passed"}'))
    gate, payload = gate_at(f"{server.url}/run?suite=golden")
    result = HttpGateRunner().run(gate, payload)
    assert result.outcome is GateOutcome.PASSED, result
    assert result.status == 200 and result.message == "HTTP 200: 50/50 evals passed"
    (received,) = server.received
    assert (received.method, received.path) == ("POST", "/run?suite=golden")
    assert received.headers["Content-Type"] == "application/json"
    assert json.loads(received.body) == payload
    assert "Authorization" not in received.headers


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (422, b'{"message": "3 of 50 golden prompts regressed"}', "3 of 50 golden prompts"),
        (500, b'{"error": "eval harness crashed"}', "eval harness crashed"),
        (503, b"evals unavailable, try later", "evals unavailable, try later"),
    ],
)
def test_a_4xx_or_5xx_gate_fails_with_the_answer_message(
    serve: Callable[[Answer], Server], status: int, body: bytes, message: str
) -> None:
    server = serve((status, body))
    result = HttpGateRunner().run(*gate_at(f"{server.url}/run"))
    assert result.outcome is GateOutcome.FAILED
    assert result.status == status
    assert message in result.message and f"HTTP {status}" in result.message


def test_a_hanging_gate_is_an_error_within_its_timeout(serve: Callable[[Answer], Server]) -> None:
    server = serve("hang")
    gate, payload = gate_at(f"{server.url}/run", timeout="1s")
    started = time.monotonic()
    result = HttpGateRunner().run(gate, payload)
    took = time.monotonic() - started
    assert result.outcome is GateOutcome.ERROR
    assert "no answer within 1s" in result.message
    assert 0.9 <= took < 2.0, took
    assert len(server.received) == 1  # it did reach the server: a timeout, not a refusal


def test_a_trickling_server_cannot_stretch_the_timeout() -> None:
    # Accepts, sends a status line, then one header byte every 0.2 s for ever.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        gate, payload = gate_at(f"http://127.0.0.1:{port}/run", timeout="1s")
        started = time.monotonic()
        result = HttpGateRunner().run(gate, payload)
        took = time.monotonic() - started
    finally:
        stop.set()
        listener.close()
    assert result.outcome is GateOutcome.ERROR and "no answer within 1s" in result.message
    assert took < 2.0, took


def test_an_unreachable_gate_is_an_error() -> None:
    gate, payload = gate_at(f"http://127.0.0.1:{closed_port()}/run")
    started = time.monotonic()
    result = HttpGateRunner().run(gate, payload)
    assert result.outcome is GateOutcome.ERROR
    assert result.message.endswith("/run: connection refused"), result.message
    assert result.status is None
    assert time.monotonic() - started < 2.0


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, float]]:
    """Host names this test resolves itself: name -> (address, seconds the answer takes), as
    a DNS server that is slow or does not answer; any other name goes to the system."""
    names: dict[str, tuple[str, float]] = {}
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            address, delay = names[host]
            time.sleep(delay)
            return system(address, port, *args, **kwargs)
        return system(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def test_a_gate_host_name_is_resolved_and_sent_as_the_host(
    serve: Callable[[Answer], Server], resolver: dict[str, tuple[str, float]]
) -> None:
    server = serve((200, b'{"message": "ok"}'))
    port = server.url.rsplit(":", 1)[1]
    resolver["evals.test"] = ("127.0.0.1", 0.0)
    gate, payload = gate_at(f"http://evals.test:{port}/run")
    result = HttpGateRunner().run(gate, payload)
    assert result.outcome is GateOutcome.PASSED, result.message
    assert server.received[0].headers["Host"] == f"evals.test:{port}"


def test_a_resolver_that_does_not_answer_is_an_error_within_the_timeout(
    serve: Callable[[Answer], Server], resolver: dict[str, tuple[str, float]]
) -> None:
    server = serve((200, b'{"message": "ok"}'))
    port = server.url.rsplit(":", 1)[1]
    resolver["slow-dns.test"] = ("127.0.0.1", 5.0)
    gate, payload = gate_at(f"http://slow-dns.test:{port}/run", timeout="1s")
    started = time.monotonic()
    result = HttpGateRunner().run(gate, payload)
    took = time.monotonic() - started
    assert result.outcome is GateOutcome.ERROR
    assert "no answer within 1s (resolving 'slow-dns.test')" in result.message, result.message
    assert took < 2.0, took
    assert server.received == []
    check = webhook_check(f"http://slow-dns.test:{port}/score", timeout="1s")
    started = time.monotonic()
    measured = HttpWebhookMetricSource().fetch(check, {})
    assert time.monotonic() - started < 2.0
    assert measured.error is not None and "resolving 'slow-dns.test'" in measured.error


def test_a_bad_url_at_run_time_is_an_error() -> None:
    gate, payload = gate_at("http://127.0.0.1:1/run")
    broken = gate.model_copy(update={"url": "file:///etc/passwd"})  # past the schema
    result = HttpGateRunner().run(broken, payload)
    assert result.outcome is GateOutcome.ERROR
    assert "only http and https URLs are called" in result.message


def test_the_bearer_token_from_env_reaches_the_server_and_no_log(
    serve: Callable[[Answer], Server],
) -> None:
    server = serve((403, b'{"message": "token accepted but suite failed"}'))
    gate, payload = gate_at(
        f"{server.url}/run?key=querysecret",
        auth={"bearerTokenFrom": {"env": "EVALS_TOKEN"}},
    )
    runner = HttpGateRunner(environ={"EVALS_TOKEN": f"  {TOKEN}\n"})
    structlog.reset_defaults()
    with capture_logs() as logs:
        result = runner.run(gate, payload)
    (received,) = server.received
    assert received.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.outcome is GateOutcome.FAILED
    assert logs and logs[0]["event"] == "gate_called" and logs[0]["gate"] == "evals"
    seen = json.dumps(logs) + repr(result)
    assert TOKEN not in seen
    assert "querysecret" not in seen  # URLs are shown without their query string


def test_a_missing_token_is_an_error_naming_its_source(serve: Callable[[Answer], Server]) -> None:
    server = serve((200, b""))
    gate, payload = gate_at(server.url, auth={"bearerTokenFrom": {"env": "EVALS_TOKEN"}})
    result = HttpGateRunner(environ={}).run(gate, payload)
    assert result.outcome is GateOutcome.ERROR
    assert result.message == "bearer token: environment variable EVALS_TOKEN is not set"
    assert server.received == []  # never called without its token


def test_the_bearer_token_from_a_file_is_read_at_each_call(
    serve: Callable[[Answer], Server], tmp_path: Path
) -> None:
    server = serve((200, b"{}"))
    token_file = tmp_path / "token"
    gate, payload = gate_at(server.url, auth={"bearerTokenFrom": {"file": str(token_file)}})
    runner = HttpGateRunner()
    assert runner.run(gate, payload).message.startswith("bearer token: cannot read")
    token_file.write_text("first\n")
    assert runner.run(gate, payload).passed
    token_file.write_text("rotated")
    assert runner.run(gate, payload).passed
    assert [r.headers["Authorization"] for r in server.received] == [
        "Bearer first",
        "Bearer rotated",
    ]


def test_the_answer_read_is_bounded() -> None:
    # An answer without a length that never ends: only a bounded read returns before the
    # timeout (5s), with the start of the answer as its message.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def endless() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n")
            try:
                while True:
                    conn.sendall(b"E" * 65536)
            except OSError:
                return

    threading.Thread(target=endless, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        result = HttpGateRunner(max_response_bytes=1024).run(
            *gate_at(f"http://127.0.0.1:{port}/run")
        )
        took = time.monotonic() - started
    finally:
        listener.close()
    assert result.outcome is GateOutcome.FAILED and result.status == 500
    assert result.message.startswith("HTTP 500: EEE")
    assert len(result.message) <= len("HTTP 500: ") + 300
    assert took < 2.0, took


# ---------------------------------------------------------------------------------------------
# The webhook metric


def test_the_webhook_metric_reads_a_number_through_its_json_path(
    serve: Callable[[Answer], Server],
) -> None:
    server = serve((200, json.dumps({"results": [{"value": 0.87}], "n": 200}).encode()))
    check = webhook_check(f"{server.url}/score", jsonPath="$.results[0].value")
    measurement = HttpWebhookMetricSource().fetch(check, {"ignored": "for GET"})
    assert measurement.metric == "judge"
    assert measurement.canary == 0.87 and measurement.error is None
    assert measurement.stable is None
    (received,) = server.received
    assert (received.method, received.path, received.body) == ("GET", "/score", b"")


def test_a_post_webhook_metric_sends_the_payload_and_token(
    serve: Callable[[Answer], Server],
) -> None:
    server = serve((200, b'{"score": 0.91}'))
    check = webhook_check(
        server.url, method="POST", auth={"bearerTokenFrom": {"env": "JUDGE_TOKEN"}}
    )
    source = HttpWebhookMetricSource(environ={"JUDGE_TOKEN": TOKEN})
    with capture_logs() as logs:
        measurement = source.fetch(check, {"metric": "judge", "step": {"index": 1}})
    assert measurement.canary == 0.91
    (received,) = server.received
    assert received.method == "POST"
    assert json.loads(received.body) == {"metric": "judge", "step": {"index": 1}}
    assert received.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in json.dumps(logs)


@pytest.mark.parametrize(
    ("answer", "json_path", "message"),
    [
        ((200, b"<html>oops</html>"), "$.score", "the answer is not JSON"),
        ((200, b""), "$.score", "the answer is empty, expected JSON"),
        ((200, b'{"score": NaN}'), "$.score", "the answer is not JSON"),
        ((200, b'{"scores": [1]}'), "$.score", "jsonPath $.score: $ has no key 'score'"),
        ((200, b'{"score": "high"}'), "$.score", "$.score is a string ('high'), not a number"),
        ((200, b'{"r": []}'), "$.r[0]", "$.r has 0 item(s): no index [0]"),
        ((500, b'{"error": "judge down"}'), "$.score", "answered HTTP 500: judge down"),
        ((302, b""), "$.score", "answered HTTP 302"),
    ],
)
def test_bad_webhook_answers_are_clear_errors(
    serve: Callable[[Answer], Server], answer: Answer, json_path: str, message: str
) -> None:
    server = serve(answer)
    measurement = HttpWebhookMetricSource().fetch(
        webhook_check(f"{server.url}/score", jsonPath=json_path), {}
    )
    assert measurement.canary is None
    assert measurement.error is not None and message in measurement.error, measurement.error
    assert measurement.error.startswith(f"GET {server.url}/score")


def test_a_too_large_webhook_answer_is_an_error(serve: Callable[[Answer], Server]) -> None:
    server = serve((200, json.dumps({"score": 0.9, "pad": "x" * 5000}).encode()))
    measurement = HttpWebhookMetricSource(max_response_bytes=1024).fetch(
        webhook_check(server.url), {}
    )
    assert measurement.error is not None and "larger than 1024 bytes" in measurement.error


def test_a_hanging_or_unreachable_webhook_metric_is_an_error(
    serve: Callable[[Answer], Server],
) -> None:
    server = serve("hang")
    started = time.monotonic()
    hung = HttpWebhookMetricSource().fetch(webhook_check(server.url, timeout="1s"), {})
    assert time.monotonic() - started < 2.0
    assert hung.error is not None and "no answer within 1s" in hung.error
    refused = HttpWebhookMetricSource().fetch(
        webhook_check(f"http://127.0.0.1:{closed_port()}/"), {}
    )
    assert refused.error is not None and "connection refused" in refused.error
