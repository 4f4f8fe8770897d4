"""The Prometheus adapter against a real Prometheus scraping the gateway's GenAI metrics.

One Prometheus (1s scrapes) serves the module. Traffic is recorded in two phases: a seed before
the first scrape, so that every series exists with a first sample, then the bulk: Prometheus
2.42's increase() does not count the value a series is born with, only what follows.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rollout.analysis import (
    AnalysisRequest,
    Measurement,
    Measurements,
    PrometheusMetricsProvider,
    QueryEvent,
)
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.policy import AnalysisSpec
from rollout.simulator.metrics import GenAIMetricsExporter, RequestRecord

MODEL = "gen_ai_request_model"
PROVIDER = "gen_ai_provider_name"
WINDOW = "5m"  # wide enough that the traffic stays inside it for the whole module

STABLE = "m-v1"
CANARY = "m-v2"
IDLE = "m-idle"  # traffic only before the first scrape: zero rates in the window
# Regex and PromQL metacharacters; a wrong escape makes it unmatchable or the query invalid.
ODD = 'llama.3"{x}|y\\z (beta)+'
ABSENT = "no-such-model"
INJECTION = '"} or vector(1) #'

BUILTIN_METRICS: list[dict[str, Any]] = [
    {"kind": "error-rate", "maxDifference": 0.05},
    {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2},
    {"kind": "time-per-output-token", "percentile": "p50", "maxRatio": 1.2},
    {"kind": "request-duration", "percentile": "p99", "maxRatio": 1.5},
    {"kind": "output-tokens-per-second", "minRatio": 0.8},
]


@dataclass(frozen=True)
class Profile:
    duration: float
    ttft: float
    tpot: float
    output_tokens: int


STABLE_PROFILE = Profile(duration=1.0, ttft=0.03, tpot=0.02, output_tokens=100)
CANARY_PROFILE = Profile(duration=2.0, ttft=0.3, tpot=0.12, output_tokens=100)
# Failed attempts far slower than any success: request-duration must leave them out.
ERROR_DURATION = 50.0

# (model, profile, successes, errors) before the first scrape, then after it. The seed has the
# same success/error proportion as the bulk so that increase() extrapolates both alike.
SEED = [
    (STABLE, STABLE_PROFILE, 3, 0),
    (CANARY, CANARY_PROFILE, 3, 1),
    (IDLE, STABLE_PROFILE, 3, 1),
    (ODD, STABLE_PROFILE, 2, 0),
]
BULK = [
    (STABLE, STABLE_PROFILE, 30, 0),
    (CANARY, CANARY_PROFILE, 30, 10),
    (ODD, STABLE_PROFILE, 20, 0),
]


def record(
    exporter: GenAIMetricsExporter, traffic: Sequence[tuple[str, Profile, int, int]]
) -> None:
    for model, profile, successes, errors in traffic:
        for _ in range(successes):
            exporter.record(
                RequestRecord(
                    request_model=model,
                    original_model="llama",
                    duration_seconds=profile.duration,
                    input_tokens=20,
                    output_tokens=profile.output_tokens,
                    time_to_first_token_seconds=profile.ttft,
                    time_per_output_token_seconds=profile.tpot,
                )
            )
        for _ in range(errors):
            exporter.record(
                RequestRecord(
                    request_model=model,
                    original_model="llama",
                    duration_seconds=ERROR_DURATION,
                    input_tokens=20,
                    output_tokens=0,
                    error=True,
                )
            )


def analysis(metrics: Sequence[Mapping[str, Any]] = BUILTIN_METRICS) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"window": WINDOW, "metrics": list(metrics)})


def request(
    key: str,
    stable: Mapping[str, str] | str = STABLE,
    canary: Mapping[str, str] | str = CANARY,
    spec: AnalysisSpec | None = None,
) -> AnalysisRequest:
    return AnalysisRequest(
        key=key,
        analysis=spec or analysis(),
        stable={MODEL: stable} if isinstance(stable, str) else dict(stable),
        canary={MODEL: canary} if isinstance(canary, str) else dict(canary),
        route="chat",
        namespace="llm",
    )


@dataclass
class Env:
    exporter: GenAIMetricsExporter
    prometheus: LocalPrometheus
    provider: PrometheusMetricsProvider
    events: list[QueryEvent]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    exporter = GenAIMetricsExporter()
    exporter.start()
    record(exporter, SEED)
    try:
        with LocalPrometheus(targets=[exporter.target], scrape_interval="1s") as prometheus:
            prometheus.wait_for_scrapes(samples=1)
            record(exporter, BULK)
            events: list[QueryEvent] = []
            with PrometheusMetricsProvider(
                prometheus.url, timeout=5, on_query=events.append
            ) as provider:

                def bulk_visible() -> bool:
                    counts = provider.measure([request("probe", ABSENT, CANARY)])
                    requests = counts["probe"]["error-rate"].canary_requests
                    return requests is not None and requests >= 40

                wait_for(bulk_visible, "the canary's traffic in Prometheus")
                # A few more scrapes after the bulk: increase() extrapolates less over a
                # longer sampled interval, so the request counts get close to the truth.
                prometheus.wait_for_scrapes(samples=6)
                events.clear()
                yield Env(exporter, prometheus, provider, events)
    finally:
        exporter.stop()


def measure(env: Env, requests: Sequence[AnalysisRequest]) -> tuple[Measurements, int]:
    """(measurements, queries sent for them)."""
    before = env.provider.queries_issued
    measured = env.provider.measure(requests)
    return measured, env.provider.queries_issued - before


def no_errors(measured: Measurements) -> None:
    errors = {
        (key, name): m.error for key, ms in measured.items() for name, m in ms.items() if m.error
    }
    assert not errors


def values(measurement: Measurement) -> tuple[float, float]:
    assert measurement.error is None, measurement.error
    assert measurement.canary is not None and measurement.stable is not None, measurement
    return measurement.canary, measurement.stable


# ---------------------------------------------------------------------------------------------
# Built-in metrics


def test_builtin_metrics_for_stable_and_canary(env: Env) -> None:
    measured, _ = measure(env, [request("r1")])
    no_errors(measured)
    r1 = measured["r1"]

    canary, stable = values(r1["error-rate"])
    assert stable == 0.0  # no error series at all for the stable: 0, not "no data"
    # Seed and bulk have the same error share, so the extrapolation cancels out.
    assert canary == pytest.approx(10 / 40, rel=0.05)

    # increase() extrapolates to the window's edges: somewhat above the 40 requests sent.
    assert r1["error-rate"].canary_requests is not None
    assert 40 <= r1["error-rate"].canary_requests <= 40 * 1.6
    assert {m.canary_requests for m in r1.values()} == {r1["error-rate"].canary_requests}

    # histogram_quantile interpolates inside the bucket that holds the percentile
    canary, stable = values(r1["ttft-p95"])
    assert 0.02 < stable <= 0.04 and 0.25 < canary <= 0.5
    canary, stable = values(r1["time-per-output-token-p50"])
    assert 0.01 < stable <= 0.025 and 0.1 < canary <= 0.15
    canary, stable = values(r1["request-duration-p99"])
    # a quarter of the canary's attempts failed after 50s: with them, p99 would be > 40s
    assert 0.64 < stable <= 1.28 and 1.28 < canary <= 2.56

    canary, stable = values(r1["output-tokens-per-second"])
    assert stable == pytest.approx(100.0, rel=0.01)
    assert canary == pytest.approx(50.0, rel=0.01)


def test_a_selector_matching_nothing_is_no_data_not_an_error(env: Env) -> None:
    measured, _ = measure(env, [request("r", STABLE, ABSENT), request("i", STABLE, INJECTION)])
    for key in ("r", "i"):
        for name, m in measured[key].items():
            assert m.error is None, (name, m.error)
            assert m.canary is None and m.canary_requests is None, (name, m)
            assert m.stable is not None, (name, m)


def test_no_traffic_in_the_window_is_nan_not_zero(env: Env) -> None:
    measured, _ = measure(env, [request("idle", STABLE, IDLE)])
    no_errors(measured)
    idle = measured["idle"]
    assert idle["error-rate"].canary_requests == 0.0
    for name in ("error-rate", "ttft-p95", "request-duration-p99", "output-tokens-per-second"):
        canary = idle[name].canary
        assert canary is not None and math.isnan(canary), (name, canary)


def test_label_values_with_metacharacters_select_exactly_their_series(env: Env) -> None:
    custom = {
        "name": "requests",
        "query": "sum(increase(gen_ai_server_request_duration_seconds_count{ {{selector}} }"
        "[{{window}}]))",
        "max": 1000,
    }
    spec = analysis([*BUILTIN_METRICS, custom])
    measured, _ = measure(env, [request("odd", STABLE, ODD, spec), request("r1", spec=spec)])
    no_errors(measured)
    odd = measured["odd"]
    assert odd["error-rate"].canary == 0.0
    assert odd["error-rate"].canary_requests is not None
    assert 20 <= odd["error-rate"].canary_requests <= 20 * 1.6
    assert odd["output-tokens-per-second"].canary == pytest.approx(100.0, rel=0.01)
    assert odd["requests"].canary == pytest.approx(odd["error-rate"].canary_requests, rel=0.1)


# ---------------------------------------------------------------------------------------------
# Batching


def test_one_query_per_metric_for_all_rollouts(env: Env) -> None:
    env.events.clear()
    rollouts = [
        request("r1", STABLE, CANARY),
        request("r2", CANARY, STABLE),
        request("r3", STABLE, IDLE),
        request("r4", STABLE, ABSENT),
        request("r5", STABLE, ODD),
    ]
    measured, sent = measure(env, rollouts)
    assert sent == len(BUILTIN_METRICS) + 1  # not 5x: one query per metric, plus the count
    assert sorted(event.purpose for event in env.events) == sorted(
        [
            "requests",
            "error-rate",
            "ttft-p95",
            "time-per-output-token-p50",
            "request-duration-p99",
            "output-tokens-per-second",
        ]
    )
    assert not any(event.failed for event in env.events)
    no_errors(measured)

    r1, r2 = measured["r1"], measured["r2"]
    for name in ("ttft-p95", "request-duration-p99", "output-tokens-per-second", "error-rate"):
        assert r1[name].canary == r2[name].stable, name
        assert r1[name].stable == r2[name].canary, name
    assert r2["error-rate"].canary == 0.0
    assert r2["error-rate"].canary_requests is not None
    assert 30 <= r2["error-rate"].canary_requests <= 30 * 1.6
    r3_ttft = measured["r3"]["ttft-p95"].canary
    assert r3_ttft is not None and math.isnan(r3_ttft)
    assert measured["r4"]["ttft-p95"].canary is None
    assert measured["r5"]["ttft-p95"].canary is not None
    for key in ("r3", "r4", "r5"):
        assert measured[key]["ttft-p95"].stable == r1["ttft-p95"].stable


def test_selectors_with_several_labels_measure_the_same_traffic(env: Env) -> None:
    two_labels = request(
        "two", {MODEL: STABLE, PROVIDER: "openai"}, {MODEL: CANARY, PROVIDER: "openai"}
    )
    wrong_provider = request(
        "aws", {MODEL: STABLE, PROVIDER: "aws"}, {MODEL: CANARY, PROVIDER: "openai"}
    )
    measured, sent = measure(env, [request("one"), two_labels, wrong_provider])
    # one group per label-name set: (model) and (model, provider)
    assert sent == 2 * (len(BUILTIN_METRICS) + 1)
    no_errors(measured)
    for name in ("error-rate", "ttft-p95", "output-tokens-per-second"):
        assert values(measured["two"][name]) == pytest.approx(values(measured["one"][name]))
    assert measured["aws"]["ttft-p95"].stable is None
    # another query, so float noise apart the same value
    assert measured["aws"]["ttft-p95"].canary == pytest.approx(measured["one"]["ttft-p95"].canary)


# ---------------------------------------------------------------------------------------------
# Custom PromQL


def test_custom_queries_with_template_variables(env: Env) -> None:
    speed = (
        'sum(rate(gen_ai_client_token_usage_sum{ {{selector}}, gen_ai_token_type="output" }'
        "[{{window}}])) / sum(rate(gen_ai_server_request_duration_seconds_sum"
        '{ {{selector}}, error_type="" }[{{window}}]))'
    )
    # route, namespace and variant only name a label here, but Prometheus must accept them
    tagged = (
        "sum(increase(gen_ai_server_request_duration_seconds_count{ {{selector}} }[{{window}}]))"
        ' * on() group_left() count(label_replace(vector(1), "at", '
        '"{{namespace}}/{{route}}/{{variant}}", "", ""))'
    )
    spec = analysis(
        [
            {"name": "speed", "query": speed, "minRatio": 0.8},
            {"name": "tagged", "query": tagged, "max": 1e6},
            {"kind": "output-tokens-per-second", "minRatio": 0.8},
        ]
    )
    env.events.clear()
    measured, sent = measure(env, [request("c1", spec=spec), request("c2", CANARY, STABLE, spec)])
    assert sent == 2 + 2 * 2 * 2  # batched: output-tokens-per-second + count; custom: 2x2x2
    assert {e.purpose for e in env.events} >= {"custom:speed", "custom:tagged"}
    no_errors(measured)
    c1 = measured["c1"]
    assert values(c1["speed"]) == pytest.approx(values(c1["output-tokens-per-second"]))
    assert values(c1["speed"]) == pytest.approx((50.0, 100.0), rel=0.01)
    assert values(measured["c2"]["speed"]) == pytest.approx((100.0, 50.0), rel=0.01)
    canary, _ = values(c1["tagged"])
    assert canary == pytest.approx(c1["speed"].canary_requests, rel=0.1)


def test_malformed_custom_query_is_an_error_with_prometheus_message(env: Env) -> None:
    broken = "sum(rate(gen_ai_server_request_duration_seconds_count{ {{selector}} }[{{window}}])"
    many_to_many = (
        "gen_ai_server_request_duration_seconds_count{ {{selector}} }"
        " / on(gen_ai_request_model) gen_ai_server_request_duration_seconds_count{ {{selector}} }"
    )
    several = "gen_ai_server_request_duration_seconds_count{ {{selector}} }"
    spec = analysis(
        [
            {"name": "broken", "query": broken, "max": 1},
            {"name": "unexecutable", "query": many_to_many, "max": 1},
            {"name": "several", "query": several, "max": 1},
            BUILTIN_METRICS[0],
        ]
    )
    measured, _ = measure(env, [request("bad", spec=spec)])
    bad = measured["bad"]

    assert bad["broken"].error is not None
    assert "canary query `sum(rate(" in bad["broken"].error
    assert "HTTP 400 (bad_data)" in bad["broken"].error
    assert "parse error" in bad["broken"].error

    assert bad["unexecutable"].error is not None
    assert "HTTP 422 (execution)" in bad["unexecutable"].error
    assert "many-to-many" in bad["unexecutable"].error

    # a query that runs but returns the canary's success and failure series separately
    assert bad["several"].error is not None
    assert "canary query" in bad["several"].error and "returned 2 series" in bad["several"].error

    # a broken check is its own problem: the other checks of the tick are measured
    assert bad["error-rate"].error is None
    assert bad["error-rate"].canary == pytest.approx(0.25, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Prometheus unavailable


def all_errors(measured: Measurements, *words: str) -> None:
    for key, metrics in measured.items():
        for name, m in metrics.items():
            assert m.error is not None, (key, name)
            for word in words:
                assert word in m.error, (key, name, m.error)
            assert m.canary is None and m.stable is None, (key, name)


def test_unreachable_prometheus_is_an_error_everywhere_and_quickly() -> None:
    spec = analysis([*BUILTIN_METRICS, {"name": "c", "query": "sum(up{ {{selector}} })", "max": 1}])
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusMetricsProvider(url, timeout=1) as provider:
        started = time.monotonic()
        measured = provider.measure([request("a", spec=spec), request("b", ODD, IDLE, spec)])
        elapsed = time.monotonic() - started
        assert set(measured) == {"a", "b"}
        assert all(len(m) == len(spec.metrics) for m in measured.values())
        all_errors(measured, f"Prometheus at {url} unreachable", "Connection refused")
        assert elapsed < 2.0
        # the first failure tells the tick enough: the other queries are not sent
        assert provider.queries_issued == 1
        assert not provider.is_online()


def test_prometheus_going_down_between_ticks() -> None:
    with LocalPrometheus(targets=[], scrape_interval="1s") as prometheus:
        provider = PrometheusMetricsProvider(prometheus.url, timeout=2)
        assert provider.is_online()
        first = provider.measure([request("a")])
        assert first["a"]["error-rate"] == Measurement(metric="error-rate")  # no data
    # the same provider (and its pooled keep-alive connection) after the server stopped
    started = time.monotonic()
    after = provider.measure([request("a")])
    assert time.monotonic() - started < 3.0
    all_errors(after, "unreachable")
    assert not provider.is_online()
    provider.close()


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay: float = 0.0


class FakeServer:
    """An HTTP server answering every request with one canned reply, counting them."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                time.sleep(outer.reply.delay)
                self.send_response(outer.reply.status)
                self.send_header("Content-Type", outer.reply.content_type)
                self.send_header("Content-Length", str(len(outer.reply.body)))
                self.end_headers()
                # a client that timed out has gone: nothing to tell it
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(outer.reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (
            Reply(
                503,
                b'{"status":"error","errorType":"timeout",'
                b'"error":"query timed out in expression evaluation"}',
            ),
            ["HTTP 503 (timeout): query timed out in expression evaluation"],
        ),
        (
            Reply(502, b"<html>Bad Gateway</html>", "text/html"),
            ["HTTP 502: <html>Bad Gateway</html>"],
        ),
        (Reply(200, b"<html>Grafana</html>", "text/html"), ["unexpected answer from"]),
        (Reply(200, b"{}", "application/json"), ["unexpected answer from"]),
    ],
)
def test_http_failures_are_errors_with_the_server_text(reply: Reply, words: list[str]) -> None:
    spec = analysis(BUILTIN_METRICS[:1])
    with FakeServer(reply) as server, PrometheusMetricsProvider(server.url, retries=1) as provider:
        measured = provider.measure([request("a", spec=spec)])
        all_errors(measured, *words)
        assert provider.queries_issued == 2  # requests + error-rate: each answered
        # 5xx from a proxy or an overloaded server is tried once more
        assert server.requests == (4 if reply.status >= 500 else 2)


def test_a_slow_answer_is_a_timeout_error() -> None:
    spec = analysis(BUILTIN_METRICS[:1])
    slow = Reply(200, b'{"status":"success","data":{"resultType":"vector","result":[]}}', delay=2)
    with FakeServer(slow) as server, PrometheusMetricsProvider(server.url, timeout=0.3) as provider:
        started = time.monotonic()
        measured = provider.measure([request("a", spec=spec)])
        elapsed = time.monotonic() - started
        all_errors(measured, "did not answer within 0.3s")
        assert server.requests == 2  # a timed-out query is not sent again
        assert elapsed < 1.5
