"""The fast /metrics text says, byte for byte, what prometheus_client's generate_latest says,
and the app around it answers as make_wsgi_app does."""

from __future__ import annotations

import gzip
import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, make_wsgi_app
from prometheus_client.openmetrics import exposition as openmetrics

from rollout.controller.metrics_text import (
    Escapes,
    FamilyTemplates,
    TextFamily,
    _plain_scrape,
    metrics_app,
    render_text,
)
from rollout.controller.observability import ControllerMetrics, MetricsServer, _GaugeSeries
from rollout.controller.state import RolloutPhase

# Text that UTF-8 can encode (generate_latest refuses lone surrogates as well).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
# Label values the text format escapes, braces and percent signs (format strings), the
# placeholder a template is made from, and any other text.
labels = st.text(
    alphabet=st.one_of(st.sampled_from('\\"\n{}%\x000'), st.characters(exclude_categories=("Cs",))),
    max_size=6,
)
values = st.one_of(
    st.floats(),  # NaN, +-inf, -0.0, subnormal and huge
    st.integers(-(10**20), 10**20).map(float),
    st.sampled_from([0.0, -0.0, 1.0, 1e6, 1234567.0, 1e-7, 0.1, 100.0, 1e22]),
)
rollouts = st.tuples(labels, labels, labels)


@st.composite
def populated(draw: st.DrawFn) -> ControllerMetrics:
    """ControllerMetrics with random series, and in the same registry a Counter, one more
    series family (odd help text, labels out of order) and a Histogram, interleaved."""
    metrics = ControllerMetrics()
    registry = metrics.registry
    extra_counter = Counter("extra_events", "Extra\\events\nhere", ["b", "a"], registry=registry)
    extra_gauge = _GaugeSeries("extra_series", draw(text), ("zeta", "a", "route"), registry)
    extra_histogram = Histogram("extra_seconds", "h", ["a"], registry=registry)
    gauges = [
        metrics.canary_weight,
        metrics.step,
        metrics.metric_value,
        metrics.metric_stable_value,
        metrics.metric_threshold,
        metrics.judge_p_value,
        metrics.judge_shift,
        extra_gauge,
    ]
    known = draw(st.lists(rollouts, min_size=1, max_size=6))
    for _ in range(draw(st.integers(0, 40))):
        rollout = draw(st.sampled_from(known))
        action = draw(st.integers(0, 6))
        if action == 0:
            metrics.phase.set(rollout, draw(st.sampled_from(RolloutPhase)))
        elif action in (1, 2):
            gauge = draw(st.sampled_from(gauges))
            extra = draw(st.tuples(*[labels] * (len(gauge.labelnames) - 3)))
            gauge.set((*rollout, *extra), draw(values))
        elif action == 3:
            metrics.child(metrics.checks, *rollout, draw(labels)).inc(draw(st.floats(0, 1e9)))
            extra_counter.labels(draw(labels), draw(labels)).inc()
        elif action == 4:
            extra_histogram.labels(draw(labels)).observe(draw(st.floats(0, 100)))
            metrics.analysis_duration.observe(draw(st.floats(0, 100)))
        elif action == 5:
            metrics.remove_rollout(*rollout)
        else:
            metrics.is_leader.set(draw(values))
            metrics.policy_errors.set(draw(values))
    return metrics


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(populated())
def test_the_fast_text_is_generate_latest_byte_for_byte(metrics: ControllerMetrics) -> None:
    assert render_text(metrics.registry) == generate_latest(metrics.registry)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.tuples(labels, labels, labels), values), max_size=5), text)
def test_a_family_of_any_help_and_labels_writes_what_prometheus_client_writes(
    series: list[tuple[tuple[str, str, str], float]], documentation: str
) -> None:
    templates = FamilyTemplates("some_gauge", documentation, ("z", "rollout", "a_b"))
    reference = GaugeMetricFamily("some_gauge", documentation, labels=("z", "rollout", "a_b"))
    for labels_, value in series:
        reference.add_metric(labels_, value)
    registry = CollectorRegistry()
    registry.register(_Collected(reference))
    assert templates.series(series, Escapes()) == generate_latest(registry).decode()


class _Collected:
    def __init__(self, family: GaugeMetricFamily) -> None:
        self.family = family

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield self.family


def sample_metrics() -> ControllerMetrics:
    metrics = ControllerMetrics()
    for i, phase in enumerate(RolloutPhase):
        rollout = (f"r{i}", "ns", f'route "{i}"\n')
        metrics.phase.set(rollout, phase)
        metrics.canary_weight.set(rollout, i * 10)
        metrics.metric_value.set((*rollout, "ttft-p95"), 1.5 / (i + 1))
        metrics.child(metrics.checks, *rollout, "Pass").inc()
    metrics.is_leader.set(1)
    return metrics


def test_a_fast_scrape_makes_no_samples() -> None:
    """The point of TextFamily: samples (a dict and a namedtuple per series) only when asked."""
    metrics = sample_metrics()

    def refuse(_family: GaugeMetricFamily) -> None:
        raise AssertionError("samples made by the fast path")

    templates = FamilyTemplates("refusing", "r", ("a",))
    metrics.registry.register(_Collected(TextFamily(templates, refuse, lambda _e: "")))
    render_text(metrics.registry)
    with pytest.raises(AssertionError, match="samples made"):
        generate_latest(metrics.registry)


def test_the_samples_are_there_for_whoever_asks() -> None:
    metrics = sample_metrics()
    weight = {"rollout": "r2", "namespace": "ns", "route": 'route "2"\n'}
    assert metrics.registry.get_sample_value("rollout_canary_weight", weight) == 20.0
    phase = {**weight, "phase": RolloutPhase.PAUSED.value}
    assert metrics.registry.get_sample_value("rollout_phase", phase) == 1.0


def test_the_fast_path_is_taken_for_a_plain_scrape_only() -> None:
    """Fails if prometheus_client's content negotiation changes: then a plain scrape would
    silently go the slow way (choose_encoder no longer giving generate_latest)."""
    get = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
    assert _plain_scrape(get)
    assert _plain_scrape({**get, "HTTP_ACCEPT": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"})
    assert _plain_scrape({**get, "HTTP_ACCEPT_ENCODING": "gzip"})
    assert not _plain_scrape({**get, "HTTP_ACCEPT": "application/openmetrics-text"})
    assert not _plain_scrape({**get, "HTTP_ACCEPT": "text/plain; version=1.0.0"})
    assert not _plain_scrape({**get, "QUERY_STRING": "name[]=rollout_phase"})
    assert not _plain_scrape({**get, "REQUEST_METHOD": "HEAD"})
    assert not _plain_scrape({**get, "PATH_INFO": "/favicon.ico"})


def call(app: Callable[..., Any], **environ: str) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "", **environ}
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"HTTP_ACCEPT_ENCODING": "gzip, deflate"},
        {"HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0"},
        {"HTTP_ACCEPT": "application/openmetrics-text", "HTTP_ACCEPT_ENCODING": "gzip"},
        {"HTTP_ACCEPT": "text/plain; version=1.0.0; escaping=allow-utf-8"},
        {"QUERY_STRING": "name[]=rollout_canary_weight&name[]=rollout_checks_total"},
        {"REQUEST_METHOD": "HEAD"},
        {"REQUEST_METHOD": "OPTIONS"},
        {"REQUEST_METHOD": "POST"},
        {"PATH_INFO": "/favicon.ico"},
        {"PATH_INFO": "/anything"},
    ],
)
def test_the_app_answers_as_make_wsgi_app_does(environ: dict[str, str]) -> None:
    metrics = sample_metrics()
    status, headers, body = call(metrics_app(metrics.registry), **environ)
    want_status, want_headers, want_body = call(make_wsgi_app(metrics.registry), **environ)
    assert (status, headers) == (want_status, want_headers)
    if headers.get("Content-Encoding") == "gzip":  # gzip stamps the time: compare the text
        body, want_body = gzip.decompress(body), gzip.decompress(want_body)
    assert body == want_body


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ControllerMetrics, Callable[..., http.client.HTTPResponse]]]:
    metrics = sample_metrics()
    server = MetricsServer(metrics, lambda: True, "127.0.0.1", 0)
    server.start()

    def get(path: str = "/metrics", **headers: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        connection.close()
        return response

    try:
        yield metrics, get
    finally:
        server.stop()


def test_a_scrape_of_the_server_is_generate_latest(
    served: tuple[ControllerMetrics, Callable[..., http.client.HTTPResponse]],
) -> None:
    metrics, get = served
    response = get()
    assert response.status == 200
    assert response.getheader("Content-Type") == CONTENT_TYPE_PLAIN_0_0_4
    assert response.getheader("Content-Encoding") is None
    assert response.body == generate_latest(metrics.registry)  # type: ignore[attr-defined]


def test_a_gzip_scrape_is_generate_latest_gzipped(
    served: tuple[ControllerMetrics, Callable[..., http.client.HTTPResponse]],
) -> None:
    metrics, get = served
    response = get(**{"Accept-Encoding": "gzip"})
    assert response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Content-Type") == CONTENT_TYPE_PLAIN_0_0_4
    body = gzip.decompress(response.body)  # type: ignore[attr-defined]
    assert body == generate_latest(metrics.registry)


def test_an_openmetrics_scrape_gets_prometheus_clients_openmetrics(
    served: tuple[ControllerMetrics, Callable[..., http.client.HTTPResponse]],
) -> None:
    metrics, get = served
    response = get(Accept="application/openmetrics-text; version=1.0.0")
    assert response.getheader("Content-Type", "").startswith("application/openmetrics-text")
    body = response.body  # type: ignore[attr-defined]
    assert body == openmetrics.generate_latest(metrics.registry, version="1.0.0")
    assert body.endswith(b"# EOF\n") and b"rollout_phase{" in body


def test_a_name_filter_still_filters(
    served: tuple[ControllerMetrics, Callable[..., http.client.HTTPResponse]],
) -> None:
    metrics, get = served
    response = get("/metrics?name[]=rollout_canary_weight")
    body = response.body.decode()  # type: ignore[attr-defined]
    samples = [line for line in body.splitlines() if not line.startswith("#")]
    assert len(samples) == len(RolloutPhase)
    assert all(line.startswith("rollout_canary_weight{") for line in samples)
    restricted = metrics.registry.restricted_registry(["rollout_canary_weight"])
    assert body.encode() == generate_latest(restricted)


def test_renders_while_ticks_set_and_remove_series() -> None:
    metrics = ControllerMetrics()
    Gauge("other", "o", registry=metrics.registry)
    stop = threading.Event()

    def tick() -> None:
        i = 0
        while not stop.is_set():
            rollout = (f"r{i % 50}", "ns", "route")
            metrics.phase.set(rollout, RolloutPhase.PAUSED)
            metrics.canary_weight.set(rollout, i)
            if i % 7 == 0:
                metrics.remove_rollout(*rollout)
            i += 1

    workers = [threading.Thread(target=tick) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(50):
            text = render_text(metrics.registry).decode()
            assert text.startswith("# HELP rollout_phase ")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert render_text(metrics.registry) == generate_latest(metrics.registry)
