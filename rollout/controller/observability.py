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
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import TypeVar, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome
from rollout.controller.state import RolloutPhase, RolloutState

_ROLLOUT = ("rollout", "namespace", "route")

_Labelled = TypeVar("_Labelled", Gauge, Counter)


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase = Gauge(
            "rollout_phase",
            "1 for the rollout's current phase, else 0",
            [*_ROLLOUT, "phase"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "rollout_canary_weight", "Canary weight (percent) written", _ROLLOUT, registry=r
        )
        self.step = Gauge("rollout_step_index", "Index of the current step", _ROLLOUT, registry=r)
        self.metric_value = Gauge(
            "rollout_metric_value", "Last measured canary value", [*_ROLLOUT, "metric"], registry=r
        )
        self.metric_stable_value = Gauge(
            "rollout_metric_stable_value",
            "Last measured stable value",
            [*_ROLLOUT, "metric"],
            registry=r,
        )
        self.metric_threshold = Gauge(
            "rollout_metric_threshold_info",
            "The metric's pass condition and the unit of its values (value 1)",
            [*_ROLLOUT, "metric", "threshold", "unit"],
            registry=r,
        )
        self.judge_p_value = Gauge(
            "rollout_metric_judge_p_value",
            "The judge's one-sided p-value that the canary is slower (last check)",
            [*_ROLLOUT, "metric"],
            registry=r,
        )
        self.judge_shift = Gauge(
            "rollout_metric_judge_shift_ratio",
            "The judge's estimated slowdown of the canary, relative (0.2 = 20% slower)",
            [*_ROLLOUT, "metric"],
            registry=r,
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
        self.is_leader = Gauge("rollout_leader", "1 while this replica is the leader", registry=r)
        # The labelled children already made, by (metric, label values): `.labels()` validates,
        # locks and hashes on every call, ~20 times per rollout and verdict; a tick at
        # thousands of rollouts does dict lookups instead. The children are the ones the
        # metrics hold, so /metrics is unchanged; a removed series is dropped here too.
        self._children: dict[tuple[Gauge | Counter, tuple[str, ...]], Gauge | Counter] = {}

    def child(self, metric: _Labelled, *values: str) -> _Labelled:
        """`metric.labels(*values)`, made once (use this, not `.labels()`, for per-rollout
        series: remove_rollout forgets what it made)."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return cast(_Labelled, found)

    def _remove(self, metric: Gauge | Counter, *values: str) -> None:
        self._children.pop((metric, values), None)
        metric.remove(*values)

    def remove_rollout(self, policy: str, namespace: str, route: str) -> None:
        """Drop every series of the rollout (a deleted policy), and the children cached."""
        labels = (policy, namespace, route)
        for metric, values in list(self._children):
            if values[:3] == labels:
                self._remove(metric, *values)
        self._thresholds = {k: v for k, v in self._thresholds.items() if k[:3] != labels}

    def observe_state(self, namespace: str, route: str, state: RolloutState) -> None:
        labels = (state.policy_name, namespace, route)
        child = self.child
        for phase in RolloutPhase:
            child(self.phase, *labels, phase.value).set(1 if phase is state.phase else 0)
        child(self.canary_weight, *labels).set(state.canary_percent)
        child(self.step, *labels).set(state.step_index)

    def count_write(self, policy: str, namespace: str, route: str, kind: str) -> None:
        self.child(self.api_writes, policy, namespace, route, kind).inc()

    def count_reconcile_error(self, policy: str, namespace: str, route: str, error: str) -> None:
        self.child(self.reconcile_errors, policy, namespace, route, error).inc()

    def observe_verdict(
        self, policy: str, namespace: str, route: str, verdict: AnalysisVerdict
    ) -> None:
        labels = (policy, namespace, route)
        child = self.child
        for metric in verdict.metrics:
            name = metric.metric
            child(self.checks, *labels, metric.outcome.value).inc()
            for gauge, value in (
                (self.metric_value, metric.canary),
                (self.metric_stable_value, metric.stable),
            ):
                child(gauge, *labels, name).set(math.nan if value is None else value)
            # One series per metric: a policy edit replaces the threshold label, not adds one.
            described = (metric.threshold, metric.unit)
            previous = self._thresholds.get((*labels, name))
            if previous is not None and previous != described:
                self._remove(self.metric_threshold, *labels, name, *previous)
            self._thresholds[(*labels, name)] = described
            child(self.metric_threshold, *labels, name, *described).set(1)
            if metric.judge is not None:
                for gauge, value in (
                    (self.judge_p_value, metric.judge.p_value),
                    (self.judge_shift, metric.judge.relative_shift),
                ):
                    child(gauge, *labels, name).set(math.nan if value is None else value)

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
        metrics_app = make_wsgi_app(metrics.registry)
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
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

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
