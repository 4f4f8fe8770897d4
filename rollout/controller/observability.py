"""The controller's own Prometheus metrics and its /metrics + /healthz endpoint.

Every gauge carries the rollout (policy) and route, and metric gauges carry their threshold
and unit beside the value (`rollout_metric_threshold_info{metric, threshold, unit}`): an alert
can then say "ttft-p95 1.9 s > 1.5" or "cost-per-request 0.004 USD/request" without reading the
policy. A judge's p-value and estimated shift have gauges of their own; the per-tenant verdict's
value is its number of failing tenants (unit "tenants"); tenant names are not labels (their
number is unbounded), they are in the Events and logs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from socketserver import ThreadingMixIn
from typing import TypeVar, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome
from rollout.controller.metrics_text import (
    Escapes,
    FamilyTemplates,
    TextFamily,
    metrics_app,
    placeholder,
)
from rollout.controller.state import RolloutPhase, RolloutState

_ROLLOUT = ("rollout", "namespace", "route")

_Counted = TypeVar("_Counted", bound=Counter)
_Rollout = tuple[str, str, str]


class _LabelledGauge:
    """A collector exporting one labelled gauge family (a custom collector, registered in
    `registry` like the Gauge it replaces); subclasses hold the values and add the series.
    It collects a TextFamily: /metrics writes it from the templates, not sample by sample."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._templates = FamilyTemplates(name, documentation, self.labelnames)
        self._lock = threading.Lock()
        registry.register(self)

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError


class _GaugeSeries(_LabelledGauge):
    """A labelled gauge of the rollouts, held as one float per series: what `Gauge` exports,
    without a child object (two locks and a value object, ~0.6 kB) per series, which at
    10,000 rollouts was tens of MiB. Series come out in the order they were first set, as a
    Gauge's children do. Thread-safe."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self._values: dict[tuple[str, ...], float] = {}
        super().__init__(name, documentation, labelnames, registry)

    def set(self, labels: tuple[str, ...], value: float) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
        value = float(value)
        with self._lock:
            self._values[labels] = value

    def get(self, labels: tuple[str, ...]) -> float | None:
        return self._values.get(labels)

    def remove(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._values.pop(labels, None)

    def remove_rollout(self, rollout: _Rollout) -> None:
        with self._lock:
            for labels in [k for k in self._values if k[:3] == rollout]:
                del self._values[labels]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            values = list(self._values.items())

        def add_samples(family: GaugeMetricFamily) -> None:
            for labels, value in values:
                family.add_metric(labels, value)

        yield TextFamily(self._templates, add_samples, partial(self._templates.series, values))


class _Value:
    """An unlabelled gauge that ticks set from several tick workers at once: one float,
    replaced whole (atomic under the GIL), so setting it takes no lock. Exports what a
    prometheus_client Gauge without labels does."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._value = 0.0
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self._value)


class _PhaseSeries(_LabelledGauge):
    """`rollout_phase`: per rollout one series per phase, 1 for its current phase and 0 for
    the others (what a Gauge set for every phase exports), held as the current phase alone."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._phases: dict[_Rollout, RolloutPhase] = {}
        super().__init__(
            "rollout_phase",
            "1 for the rollout's current phase, else 0",
            (*_ROLLOUT, "phase"),
            registry,
        )
        # A rollout's lines differ only by its labels and its phase: per phase, the lines of
        # a rollout in it with its rollout, namespace and route as {0}, {1}, {2}.
        rollout = [placeholder(i) for i in range(len(_ROLLOUT))]
        self._lines = {
            current: self._templates.lines(
                [
                    ((*rollout, phase.value), 1.0 if phase is current else 0.0)
                    for phase in RolloutPhase
                ],
                len(rollout),
            )
            for current in RolloutPhase
        }

    def set(self, rollout: _Rollout, phase: RolloutPhase) -> None:
        with self._lock:
            self._phases[rollout] = phase

    def get(self, rollout: _Rollout) -> RolloutPhase | None:
        return self._phases.get(rollout)

    def remove_rollout(self, rollout: _Rollout) -> None:
        with self._lock:
            self._phases.pop(rollout, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            phases = list(self._phases.items())

        def add_samples(family: GaugeMetricFamily) -> None:
            every = tuple(RolloutPhase)
            for rollout, current in phases:
                for phase in every:
                    family.add_metric((*rollout, phase.value), 1.0 if phase is current else 0.0)

        def text(escapes: Escapes) -> str:
            lines = self._lines
            escaped = escapes.__getitem__
            return self._templates.header + "".join(
                [lines[current].format(*map(escaped, rollout)) for rollout, current in phases]
            )

        yield TextFamily(self._templates, add_samples, text)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The per-rollout gauges (several per rollout and metric check) are plain values; the
        # counters and the controller-wide metrics are prometheus_client's own.
        self.phase = _PhaseSeries(r)
        self.canary_weight = _GaugeSeries(
            "rollout_canary_weight", "Canary weight (percent) written", _ROLLOUT, r
        )
        self.step = _GaugeSeries("rollout_step_index", "Index of the current step", _ROLLOUT, r)
        self.metric_value = _GaugeSeries(
            "rollout_metric_value", "Last measured canary value", [*_ROLLOUT, "metric"], r
        )
        self.metric_stable_value = _GaugeSeries(
            "rollout_metric_stable_value", "Last measured stable value", [*_ROLLOUT, "metric"], r
        )
        self.metric_threshold = _GaugeSeries(
            "rollout_metric_threshold_info",
            "The metric's pass condition and the unit of its values (value 1)",
            [*_ROLLOUT, "metric", "threshold", "unit"],
            r,
        )
        self.judge_p_value = _GaugeSeries(
            "rollout_metric_judge_p_value",
            "The judge's one-sided p-value that the canary is slower (last check)",
            [*_ROLLOUT, "metric"],
            r,
        )
        self.judge_shift = _GaugeSeries(
            "rollout_metric_judge_shift_ratio",
            "The judge's estimated slowdown of the canary, relative (0.2 = 20% slower)",
            [*_ROLLOUT, "metric"],
            r,
        )
        self._gauges = (
            self.canary_weight,
            self.step,
            self.metric_value,
            self.metric_stable_value,
            self.metric_threshold,
            self.judge_p_value,
            self.judge_shift,
        )
        self.checks = Counter(
            "rollout_checks", "Metric checks by outcome", [*_ROLLOUT, "outcome"], registry=r
        )
        self.analysis_duration = Histogram(
            "rollout_analysis_duration_seconds", "Time to measure one batch of rollouts", registry=r
        )
        self.prometheus_queries = Counter(
            "rollout_prometheus_queries", "Queries sent to Prometheus", registry=r
        )
        self.api_writes = Counter(
            "rollout_api_writes", "Writes to the Kubernetes API", [*_ROLLOUT, "kind"], registry=r
        )
        self.reconcile_errors = Counter(
            "rollout_reconcile_errors",
            "Ticks that failed before deciding",
            [*_ROLLOUT, "error"],
            registry=r,
        )
        self.policy_errors = Gauge(
            "rollout_policy_errors", "Errors in the policy files now", registry=r
        )
        self._thresholds: dict[tuple[str, ...], tuple[str, str]] = {}
        # Set on every tick (from every tick worker): without a Gauge's lock.
        self.is_leader = _Value("rollout_leader", "1 while this replica is the leader", r)
        # The labelled counter children already made, by (metric, label values): `.labels()`
        # validates, locks and hashes on every call; a tick at thousands of rollouts does dict
        # lookups instead. The children are the ones the metrics hold, so /metrics is
        # unchanged; a removed series is dropped here too.
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}

    def child(self, metric: _Counted, *values: str) -> _Counted:
        """`metric.labels(*values)`, made once (use this, not `.labels()`, for per-rollout
        series: remove_rollout forgets what it made)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return cast(_Counted, found)

    def remove_rollout(self, policy: str, namespace: str, route: str) -> None:
        """Drop every series of the rollout (a deleted policy), and the children cached."""
        labels = (policy, namespace, route)
        for metric, values in list(self._children):
            if values[:3] == labels:
                self._children.pop((metric, values), None)
                metric.remove(*values)
        self.phase.remove_rollout(labels)
        for gauge in self._gauges:
            gauge.remove_rollout(labels)
        self._thresholds = {k: v for k, v in self._thresholds.items() if k[:3] != labels}

    def observe_state(self, namespace: str, route: str, state: RolloutState) -> None:
        labels = (state.policy_name, namespace, route)
        self.phase.set(labels, state.phase)
        self.canary_weight.set(labels, state.canary_percent)
        self.step.set(labels, state.step_index)

    def count_write(self, policy: str, namespace: str, route: str, kind: str) -> None:
        self.child(self.api_writes, policy, namespace, route, kind).inc()

    def count_reconcile_error(self, policy: str, namespace: str, route: str, error: str) -> None:
        self.child(self.reconcile_errors, policy, namespace, route, error).inc()

    def observe_verdict(
        self, policy: str, namespace: str, route: str, verdict: AnalysisVerdict
    ) -> None:
        labels = (policy, namespace, route)
        for metric in verdict.metrics:
            name = metric.metric
            series = (*labels, name)
            self.child(self.checks, *labels, metric.outcome.value).inc()
            for gauge, value in (
                (self.metric_value, metric.canary),
                (self.metric_stable_value, metric.stable),
            ):
                gauge.set(series, math.nan if value is None else value)
            # One series per metric: a policy edit replaces the threshold label, not adds one.
            described = (metric.threshold, metric.unit)
            previous = self._thresholds.get(series)
            if previous is not None and previous != described:
                self.metric_threshold.remove((*series, *previous))
            self._thresholds[series] = described
            self.metric_threshold.set((*series, *described), 1)
            if metric.judge is not None:
                for gauge, value in (
                    (self.judge_p_value, metric.judge.p_value),
                    (self.judge_shift, metric.judge.relative_shift),
                ):
                    gauge.set(series, math.nan if value is None else value)

    def count_outcomes(self, verdict: AnalysisVerdict) -> dict[CheckOutcome, int]:
        counts = dict.fromkeys(CheckOutcome, 0)
        for metric in verdict.metrics:
            counts[metric.outcome] += 1
        return counts


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would drown the decision log


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 while `healthy()` is true), and
    other WSGI apps mounted under a path prefix (the dashboard; then requests are threaded,
    so that a slow page never delays a scrape)."""

    def __init__(
        self,
        metrics: ControllerMetrics,
        healthy: Callable[[], bool],
        host: str,
        port: int,
        mounts: Mapping[str, Callable[..., Iterable[bytes]]] | None = None,
    ) -> None:
        # make_wsgi_app's answers, a plain scrape written ~10x faster (metrics_text.py).
        scrape = metrics_app(metrics.registry)
        mounted = {prefix.rstrip("/"): app for prefix, app in (mounts or {}).items()}

        def app(
            environ: dict[str, object], start_response: Callable[..., object]
        ) -> Iterable[bytes]:
            path = str(environ.get("PATH_INFO", ""))
            for prefix, inner in mounted.items():
                if path == prefix or path.startswith(prefix + "/"):
                    environ["SCRIPT_NAME"] = prefix
                    environ["PATH_INFO"] = path[len(prefix) :]
                    return inner(environ, start_response)
            if environ.get("PATH_INFO") == "/healthz":
                ok = healthy()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                return [b"ok\n" if ok else b"unhealthy\n"]
            return scrape(environ, start_response)

        self._server: WSGIServer = make_server(
            host,
            port,
            app,
            server_class=_ThreadingWSGIServer if mounted else WSGIServer,
            handler_class=_QuietHandler,
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="metrics-server"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # shutdown() waits for serve_forever() to return: called on a server that was never
        # started (a failure between build and start) it would wait forever.
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
