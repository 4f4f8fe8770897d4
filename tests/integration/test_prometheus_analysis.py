"""The Prometheus adapter against a real Prometheus scraping the gateway's GenAI metrics.

One Prometheus (1s scrapes) serves the module. Traffic is recorded in two phases: a seed before
the first scrape, so that every series exists with a first sample, then the bulk: Prometheus
2.42's increase() does not count the value a series is born with, only what follows.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests as http
from prometheus_client import CollectorRegistry, Histogram, start_http_server

from rollout.analysis import (
    AnalysisRequest,
    CheckOutcome,
    Measurement,
    Measurements,
    PrometheusMetricsProvider,
    QueryEvent,
    evaluate_measurements,
    evaluate_metric,
)
from rollout.analysis.judge import Histogram as BucketHistogram
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.policy import AnalysisSpec, Pricing
from rollout.simulator.metrics import (
    COMMON_LABELS,
    DURATION_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    GenAIMetricsExporter,
    RequestRecord,
)

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
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))  # the query
                self.do_GET()

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
@pytest.mark.parametrize("post", [False, True], ids=["GET", "POST"])
def test_http_failures_are_errors_with_the_server_text(
    reply: Reply, words: list[str], post: bool
) -> None:
    """Alike whether a query goes by GET or (long, here forced by post_above=0) by POST."""
    spec = analysis(BUILTIN_METRICS[:1])
    with (
        FakeServer(reply) as server,
        PrometheusMetricsProvider(
            server.url, retries=1, **({"post_above": 0} if post else {})
        ) as provider,
    ):
        measured = provider.measure([request("a", spec=spec)])
        all_errors(measured, *words)
        assert provider.queries_issued == 2  # requests + error-rate: each answered
        assert provider.queries_posted == (2 if post else 0)
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


# ---------------------------------------------------------------------------------------------
# LLM checks: token usage by type, cost, cache hits, judges' histograms, per-tenant, windows
#
# The simulator exports input and output tokens only and no tenant label; the gateway exports
# every token type and, with controller.metricsRequestHeaderAttributes, a tenant label. This
# exporter does what the gateway does, with the gateway's names and buckets.

TENANT = "tenant"
LLM_STABLE, LLM_CANARY = "llm-v1", "llm-v2"
TWIN = "llm-twin"  # behaves exactly like the stable
LATE = "late-v2"  # gets more traffic during a test (the effective window)
HOSTILE = 'evil"} or vector(1) #'  # a tenant name is data too

PRICES = {"input": 3.0, "cachedInput": 0.3, "cacheCreationInput": 3.75, "output": 15.0}
# Tokens per successful request. input includes cached and cache-creation input, output
# includes reasoning, as the gateway counts them.
STABLE_TOKENS = {
    "input": 1000,
    "cached_input": 600,
    "cache_creation_input": 100,
    "output": 200,
    "reasoning": 50,
}
CANARY_TOKENS = {
    "input": 1000,
    "cached_input": 100,  # a cold prompt cache
    "cache_creation_input": 400,
    "output": 400,  # answers twice as long
    "reasoning": 150,
}
STABLE_TTFT = tuple(0.2 + 0.25 * (i + 0.5) / 10 for i in range(10))  # 0.21 .. 0.44 s
CANARY_TTFT = tuple(1.6 * value for value in STABLE_TTFT)


@dataclass(frozen=True)
class Traffic:
    model: str
    tenant: str  # "": the label's value is empty, so Prometheus stores no tenant label
    successes: int
    errors: int
    tokens: Mapping[str, int]
    ttft: Sequence[float]


# After the first scrape. Canary: acme and HOSTILE fail 40% of their requests, globex none:
# 16 errors in 350 requests (4.6%) in aggregate, under a 5% threshold.
LLM_BULK = [
    Traffic(LLM_STABLE, "globex", 300, 0, STABLE_TOKENS, STABLE_TTFT),
    Traffic(LLM_STABLE, "acme", 60, 0, STABLE_TOKENS, STABLE_TTFT),
    Traffic(LLM_STABLE, HOSTILE, 60, 0, STABLE_TOKENS, STABLE_TTFT),
    Traffic(LLM_STABLE, "", 30, 0, STABLE_TOKENS, STABLE_TTFT),
    Traffic(LLM_CANARY, "globex", 300, 0, CANARY_TOKENS, CANARY_TTFT),
    Traffic(LLM_CANARY, "acme", 12, 8, CANARY_TOKENS, CANARY_TTFT),
    Traffic(LLM_CANARY, HOSTILE, 12, 8, CANARY_TOKENS, CANARY_TTFT),
    Traffic(LLM_CANARY, "", 10, 0, CANARY_TOKENS, CANARY_TTFT),
    Traffic(TWIN, "globex", 200, 0, STABLE_TOKENS, STABLE_TTFT),
    Traffic(LATE, "globex", 50, 0, CANARY_TOKENS, CANARY_TTFT),
]
LATE_BURST = Traffic(LATE, "globex", 30, 0, CANARY_TOKENS, CANARY_TTFT)


class LLMGatewayExporter:
    """The gateway's histograms with every token type and a tenant label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = [*COMMON_LABELS, TENANT]
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "duration",
            [*labels, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "ttft",
            labels,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "tokens",
            [*labels, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.port = 0
        self._server: Any = None

    def start(self) -> None:
        self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def record(
        self, traffic: Traffic, successes: int | None = None, errors: int | None = None
    ) -> None:
        common = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openai",
            "gen_ai_original_model": "llm",
            "gen_ai_request_model": traffic.model,
            "gen_ai_response_model": traffic.model,
            TENANT: traffic.tenant,
        }
        for i in range(traffic.successes if successes is None else successes):
            self.duration.labels(**common, error_type="").observe(1.0)
            self.ttft.labels(**common).observe(traffic.ttft[i % len(traffic.ttft)])
            for token_type, count in traffic.tokens.items():
                self.tokens.labels(**common, gen_ai_token_type=token_type).observe(count)
        for _ in range(traffic.errors if errors is None else errors):
            # failed attempts record no token usage
            self.duration.labels(**common, error_type="_OTHER").observe(0.5)


@dataclass
class LLMEnv:
    exporter: LLMGatewayExporter
    prometheus: LocalPrometheus
    provider: PrometheusMetricsProvider


LLM_METRICS: list[dict[str, Any]] = [
    {"kind": "error-rate", "max": 0.05},
    {"kind": "cost-per-request", "maxRatio": 1.5},
    {"kind": "tokens-per-request", "tokenType": "output", "maxRatio": 1.5},
    {"kind": "tokens-per-request", "tokenType": "reasoning", "maxRatio": 5},
    {"kind": "tokens-per-request", "tokenType": "input", "maxRatio": 1.1},
    {"kind": "tokens-per-request", "tokenType": "cached_input", "min": 0},
    {"kind": "cache-hit-ratio", "minDifference": -0.2},
    {"kind": "ttft", "percentile": "p95", "maxRatio": 5},
    {"kind": "ttft", "name": "ttft-judge", "judge": {"confidence": 0.99, "maxShift": 0.1}},
]


def llm_request(
    key: str,
    canary: str = LLM_CANARY,
    metrics: Sequence[Mapping[str, Any]] = LLM_METRICS,
    per_tenant: Mapping[str, Any] | None = None,
    effective_window: float | None = None,
) -> AnalysisRequest:
    analysis: dict[str, Any] = {"window": WINDOW, "minRequests": 20, "metrics": list(metrics)}
    if per_tenant is not None:
        analysis["perTenant"] = dict(per_tenant)
    return AnalysisRequest(
        key=key,
        analysis=AnalysisSpec.model_validate(analysis),
        stable={MODEL: LLM_STABLE},
        canary={MODEL: canary},
        route="chat",
        namespace="llm",
        stable_pricing=Pricing.model_validate(PRICES),
        canary_pricing=Pricing.model_validate(PRICES),
        effective_window=None if effective_window is None else timedelta(seconds=effective_window),
    )


def scrapes_so_far(prometheus: LocalPrometheus) -> int:
    answer = http.get(
        f"{prometheus.url}/api/v1/query", params={"query": "count_over_time(up[1h])"}, timeout=5
    ).json()
    return int(float(answer["data"]["result"][0]["value"][1]))


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMEnv]:
    exporter = LLMGatewayExporter()
    exporter.start()
    # Every series exists before the first scrape, with half the bulk that follows: increase()
    # extrapolates a series by how far back it would have reached zero, so only series with
    # one seed-to-bulk proportion are extrapolated alike, and their ratios come out exact.
    for traffic in LLM_BULK:
        exporter.record(traffic, successes=traffic.successes // 2, errors=traffic.errors // 2)
    try:
        with LocalPrometheus(targets=[exporter.target], scrape_interval="1s") as prometheus:
            prometheus.wait_for_scrapes(samples=1)
            for traffic in LLM_BULK:
                exporter.record(traffic)
            with PrometheusMetricsProvider(prometheus.url, timeout=5) as provider:

                def bulk_visible() -> bool:
                    measured = provider.measure([llm_request("probe", metrics=LLM_METRICS[:1])])
                    count = measured["probe"]["error-rate"].canary_requests
                    return count is not None and count >= 350

                wait_for(bulk_visible, "the LLM traffic in Prometheus")
                prometheus.wait_for_scrapes(samples=6)
                yield LLMEnv(exporter, prometheus, provider)
    finally:
        exporter.stop()


def test_cost_tokens_and_cache_hits_from_the_token_usage_by_type(llm: LLMEnv) -> None:
    before = llm.provider.queries_issued
    measured = llm.provider.measure([llm_request("a"), llm_request("b", canary=TWIN)])
    # every token check of both rollouts: tokens + successful requests; ttft p95 and buckets
    assert llm.provider.queries_issued - before == 6
    no_errors(measured)
    a = measured["a"]

    def usd(tokens: Mapping[str, int]) -> float:
        uncached = tokens["input"] - tokens["cached_input"] - tokens["cache_creation_input"]
        return (
            uncached * PRICES["input"]
            + tokens["cached_input"] * PRICES["cachedInput"]
            + tokens["cache_creation_input"] * PRICES["cacheCreationInput"]
            + tokens["output"] * PRICES["output"]  # reasoning is inside output
        ) / 1e6

    # token sums and successful requests come from the same scrapes: the extrapolation of
    # increase() cancels out of every per-request figure
    canary, stable = values(a["cost-per-request"])
    assert canary == pytest.approx(usd(CANARY_TOKENS), rel=1e-6)  # 0.00903 USD
    assert stable == pytest.approx(usd(STABLE_TOKENS), rel=1e-6)  # 0.004455 USD
    assert values(a["tokens-per-request-output"]) == pytest.approx((400, 200), rel=1e-6)
    assert values(a["tokens-per-request-reasoning"]) == pytest.approx((150, 50), rel=1e-6)
    assert values(a["tokens-per-request-input"]) == pytest.approx((1000, 1000), rel=1e-6)
    assert values(a["tokens-per-request-cached_input"]) == pytest.approx((100, 600), rel=1e-6)
    assert values(a["cache-hit-ratio"]) == pytest.approx((0.1, 0.6), rel=1e-6)
    # the twin costs what stable costs
    assert values(measured["b"]["cost-per-request"]) == pytest.approx((stable, stable), rel=1e-6)

    spec = llm_request("a").analysis
    verdict = evaluate_measurements(spec, a)
    by_name = {m.metric: m for m in verdict.metrics}
    assert by_name["cost-per-request"].outcome is CheckOutcome.FAIL  # 2.03x > maxRatio 1.5
    assert by_name["cost-per-request"].unit == "USD/request"
    assert by_name["tokens-per-request-output"].outcome is CheckOutcome.FAIL
    assert by_name["cache-hit-ratio"].outcome is CheckOutcome.FAIL  # 0.1 - 0.6 < -0.2
    assert by_name["tokens-per-request-input"].outcome is CheckOutcome.PASS


def test_the_judge_reads_histograms_that_prometheus_would_quantile_alike(llm: LLMEnv) -> None:
    measured = llm.provider.measure([llm_request("slow"), llm_request("twin", canary=TWIN)])
    no_errors(measured)
    for key in ("slow", "twin"):
        judged = measured[key]["ttft-judge"]
        assert judged.canary_buckets is not None and judged.stable_buckets is not None
        assert judged.canary_buckets[-1][0] == math.inf
        # our bucket handling and quantile agree with Prometheus's histogram_quantile
        p95 = measured[key]["ttft-p95"]
        assert BucketHistogram.from_buckets(judged.canary_buckets).quantile(0.95) == pytest.approx(
            p95.canary, rel=1e-9
        )
        assert BucketHistogram.from_buckets(judged.stable_buckets).quantile(0.95) == pytest.approx(
            p95.stable, rel=1e-9
        )
    check = next(c for c in llm_request("x").analysis.metrics if c.name == "ttft-judge")
    slow = evaluate_metric(check, measured["slow"]["ttft-judge"], 20)
    assert slow.outcome is CheckOutcome.FAIL, slow.reason
    assert slow.judge is not None and slow.judge.relative_shift is not None
    assert slow.judge.relative_shift > 0.3
    twin = evaluate_metric(check, measured["twin"]["ttft-judge"], 20)
    assert twin.outcome is CheckOutcome.PASS, twin.reason
    assert twin.judge is not None and twin.judge.relative_shift == pytest.approx(0, abs=0.02)


def test_per_tenant_queries_judge_each_tenant_against_the_same_tenant(llm: LLMEnv) -> None:
    metrics = [
        LLM_METRICS[0],  # error-rate max 0.05
        {"kind": "tokens-per-request", "tokenType": "output", "maxRatio": 3},
    ]
    per_tenant = {"label": TENANT, "minRequests": 15}
    before = llm.provider.queries_issued
    measured = llm.provider.measure(
        [
            llm_request("t1", metrics=metrics, per_tenant=per_tenant),
            llm_request("t2", TWIN, metrics, per_tenant),
        ]
    )
    # aggregate: requests, error-rate, tokens, successes; the same four by tenant
    assert llm.provider.queries_issued - before == 8
    no_errors(measured)
    errors = measured["t1"]["error-rate"]
    assert errors.tenants_error is None and errors.tenants is not None
    tenants = {t.tenant: t for t in errors.tenants}
    assert set(tenants) == {"acme", "globex", HOSTILE, ""}
    assert tenants["acme"].canary == pytest.approx(0.4, rel=1e-6)
    assert tenants[HOSTILE].canary == pytest.approx(0.4, rel=1e-6)
    assert (tenants["globex"].canary, tenants["globex"].stable) == (0.0, 0.0)
    assert errors.canary == pytest.approx(16 / 350, rel=1e-6)
    tokens = {t.tenant: t for t in measured["t1"]["tokens-per-request-output"].tenants or ()}
    assert (tokens["acme"].canary, tokens["acme"].stable) == pytest.approx((400, 200), rel=1e-6)

    spec = llm_request("t1", metrics=metrics, per_tenant=per_tenant).analysis
    verdict = evaluate_measurements(spec, measured["t1"])
    by_name = {m.metric: m for m in verdict.metrics}
    assert by_name["error-rate"].outcome is CheckOutcome.PASS  # 4.6% overall
    tenant_verdict = by_name["per-tenant"]
    assert tenant_verdict.outcome is CheckOutcome.FAIL and verdict.outcome is CheckOutcome.FAIL
    assert {t.tenant for t in tenant_verdict.tenants} == {"acme", HOSTILE}
    assert '"acme"' in tenant_verdict.reason
    assert json.dumps(HOSTILE) in tenant_verdict.reason  # quoted as data
    assert tenant_verdict.reason.startswith("2 of 3 tenant(s) failed")  # "" is not a tenant
    twin = evaluate_measurements(spec, measured["t2"])
    assert twin.outcome is CheckOutcome.PASS, twin.reason


def test_an_effective_window_leaves_out_the_traffic_before_it(llm: LLMEnv) -> None:
    metrics = LLM_METRICS[:1]

    def late_requests(effective_window: float | None = None) -> float:
        measured = llm.provider.measure(
            [llm_request("late", LATE, metrics, effective_window=effective_window)]
        )
        count = measured["late"]["error-rate"].canary_requests
        assert count is not None
        return count

    assert 50 <= late_requests() <= 50 * 1.6
    written = time.monotonic()  # "the weights were written"
    llm.exporter.record(LATE_BURST)
    wait_for(lambda: late_requests() >= 80, "the late burst in Prometheus")
    # a few scrapes more, so that the short window holds several samples, not two (whose
    # increase() would be extrapolated to twice the range they span)
    llm.prometheus.wait_for_scrapes(samples=scrapes_so_far(llm.prometheus) + 3)
    # a window from just before the burst: its 30 requests (extrapolated), not the 50 before
    since = time.monotonic() - written + 1.5
    recent = late_requests(effective_window=since)
    assert 30 <= recent <= 30 * 1.6
    assert late_requests(effective_window=3600) == pytest.approx(late_requests(), rel=0.1)
