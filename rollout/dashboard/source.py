"""What the dashboard shows, read from what the controller already writes: each route's state
annotation, the Events on it, and (when given) Prometheus ranges of the controller's own
gauges. No database: a small in-memory history of the states this process has sampled fills
the charts between Prometheus points (or alone, without Prometheus); Events mark transitions
and, for a weight chart that reaches back before the dashboard started, carry the weight of
each step they announce.
"""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from kubernetes import client as k8s
from pydantic import ValidationError

from rollout import kubeapi
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    control_changes,
)
from rollout.controller.state import RolloutState
from rollout.gateway.errors import AIGatewayError, NotFoundError
from rollout.gateway.kube import KubeAIGatewayClient
from rollout.gateway.models import RouteSnapshot
from rollout.policy.schema import RolloutPolicy

log = structlog.get_logger("rollout.dashboard")

HISTORY_SAMPLES = 2000  # per rollout: ~1 hour at one sample every 2s


@dataclass(frozen=True)
class RolloutView:
    namespace: str
    route: str
    state: RolloutState | None
    problem: str | None = None  # an unreadable state annotation
    live_weights: dict[str, int] | None = None  # stable/canary weights on the route now
    controls: tuple[str, ...] = ()  # manual control annotations set on the route

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.route


@dataclass(frozen=True)
class EventView:
    time: float  # unix time of the last occurrence
    type: str
    reason: str
    message: str
    count: int


@dataclass(frozen=True)
class MetricSample:
    time: float
    canary: float | None
    stable: float | None
    threshold: str
    unit: str
    outcome: str


@dataclass
class _History:
    weights: deque[tuple[float, float]]
    metrics: dict[str, deque[MetricSample]]
    last_analysis_at: datetime | None = None


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


_PERCENT = re.compile(r"\((\d{1,3})%\)")
_FINAL_WEIGHT = {"RolloutSucceeded": 100.0, "Promoted": 100.0, "RolledBack": 0.0, "Aborted": 0.0}
_STEP_REASONS = frozenset({"RolloutStarted", "StepAdvanced", "Resumed", "PolicyChanged"})


def weight_from_event(event: EventView) -> float | None:
    """The canary weight a transition Event announces ("... now at step 2 of 4 (25%)")."""
    if event.reason in _FINAL_WEIGHT:
        return _FINAL_WEIGHT[event.reason]
    if event.reason in _STEP_REASONS:
        found = _PERCENT.findall(event.message.split(" [", 1)[0])
        if found:
            return float(found[-1])
    return None


class DashboardSource:
    """Reads rollouts, Events and history; sets the manual control annotations."""

    def __init__(
        self,
        gateway: KubeAIGatewayClient,
        *,
        prometheus_url: str | None = None,
        namespaces: list[str] | None = None,
        policies: Callable[[], Mapping[str, RolloutPolicy]] | None = None,
        clock: Callable[[], float] | None = None,
        prometheus_timeout: float = 3.0,
    ) -> None:
        self.gateway = gateway
        self.prometheus_url = (prometheus_url or "").rstrip("/") or None
        self.namespaces = namespaces
        self._policies = policies
        self._clock = clock or (lambda: datetime.now(UTC).timestamp())
        self._prometheus_timeout = prometheus_timeout
        self._lock = threading.Lock()
        self._history: dict[tuple[str, str], _History] = {}

    @property
    def api(self) -> k8s.ApiClient:
        return self.gateway.api_client

    def now(self) -> float:
        return self._clock()

    # ---- rollouts ------------------------------------------------------------------------
    def rollouts(self) -> list[RolloutView]:
        """Every route with a rollout state, in the watched namespaces (None: all)."""
        snapshots: list[RouteSnapshot] = []
        namespaces: list[str | None] = [*self.namespaces] if self.namespaces else [None]
        for namespace in namespaces:
            snapshots.extend(self.gateway.list_route_snapshots(namespace))
        views = [self._view(s) for s in snapshots]
        shown = [v for v in views if v.state is not None or v.problem is not None]
        return sorted(shown, key=lambda v: v.key)

    def rollout(self, namespace: str, route: str) -> RolloutView | None:
        """The route's rollout, or None when there is no such route or no rollout on it."""
        if self.namespaces is not None and namespace not in self.namespaces:
            return None
        try:
            snapshot = self.gateway.get_route_snapshot(namespace, route)
        except NotFoundError:
            return None
        view = self._view(snapshot)
        return view if view.state is not None or view.problem is not None else None

    def _view(self, snapshot: RouteSnapshot) -> RolloutView:
        controls = tuple(
            key.rsplit("/", 1)[1]
            for key in (PAUSE_ANNOTATION, ABORT_ANNOTATION, PROMOTE_ANNOTATION)
            if key in snapshot.annotations
        )
        try:
            state = RolloutState.from_route_annotations(snapshot.annotations)
        except ValidationError as exc:
            return RolloutView(
                snapshot.namespace,
                snapshot.name,
                None,
                problem=f"unreadable state annotation: {exc.errors()[0]['msg']}",
                controls=controls,
            )
        weights = None
        if state is not None:
            for rule in snapshot.rules:
                if state.stable_backend in rule.weights and state.canary_backend in rule.weights:
                    weights = {
                        state.stable_backend: rule.weights[state.stable_backend],
                        state.canary_backend: rule.weights[state.canary_backend],
                    }
                    break
        view = RolloutView(snapshot.namespace, snapshot.name, state, None, weights, controls)
        if state is not None:
            self._remember(view.key, state)
        return view

    def policy(self, name: str) -> RolloutPolicy | None:
        return None if self._policies is None else self._policies().get(name)

    @property
    def knows_policies(self) -> bool:
        return self._policies is not None

    # ---- history -------------------------------------------------------------------------
    def _remember(self, key: tuple[str, str], state: RolloutState) -> None:
        now = self.now()
        with self._lock:
            history = self._history.get(key)
            if history is None:
                history = self._history[key] = _History(deque(maxlen=HISTORY_SAMPLES), {})
            history.weights.append((now, state.canary_percent))
            verdict = state.last_analysis
            if (
                verdict is not None
                and state.last_analysis_at is not None
                and state.last_analysis_at != history.last_analysis_at
            ):
                history.last_analysis_at = state.last_analysis_at
                at = state.last_analysis_at.timestamp()
                for m in verdict.metrics:
                    history.metrics.setdefault(m.metric, deque(maxlen=HISTORY_SAMPLES)).append(
                        MetricSample(at, m.canary, m.stable, m.threshold, m.unit, m.outcome.value)
                    )

    def sample_all(self) -> None:
        """Read every rollout once (the sampler thread), so history grows while no one looks."""
        try:
            self.rollouts()
        except AIGatewayError as exc:
            log.warning("dashboard_sample_failed", error=str(exc))

    def weight_history(
        self, view: RolloutView, events: list[EventView], since: float
    ) -> list[tuple[float, float]]:
        """Canary weight over time: Prometheus and our samples, and before them the weights
        the Events' transitions announced (Event times are whole seconds, so they are not
        mixed with finer samples: a truncated time would put a step before the sample that
        still showed the weight before it)."""
        selector = self._selector(view)
        points = list(self._range(f"max(rollout_canary_weight{{{selector}}})", since).get("", []))
        with self._lock:
            history = self._history.get(view.key)
            if history is not None:
                points.extend(p for p in history.weights if p[0] >= since)
        covered_from = min((t for t, _ in points), default=math.inf)
        points.extend(
            (event.time, weight)
            for event in events
            if event.time < covered_from and (weight := weight_from_event(event)) is not None
        )
        return sorted(set(points))

    def metric_history(
        self, view: RolloutView, since: float
    ) -> dict[str, tuple[list[MetricSample], list[tuple[float, float]], list[tuple[float, float]]]]:
        """Per check: our samples (with thresholds), and Prometheus' canary and stable ranges."""
        with self._lock:
            history = self._history.get(view.key)
            samples = {
                name: [s for s in values if s.time >= since]
                for name, values in (history.metrics.items() if history else [])
            }
        selector = self._selector(view)
        canary = self._range(f"max by (metric) (rollout_metric_value{{{selector}}})", since)
        stable = self._range(f"max by (metric) (rollout_metric_stable_value{{{selector}}})", since)
        names = sorted(set(samples) | set(canary) | set(stable))
        if view.state is not None and view.state.last_analysis is not None:
            order = [m.metric for m in view.state.last_analysis.metrics]
            names.sort(key=lambda n: order.index(n) if n in order else len(order))
        return {
            name: (samples.get(name, []), canary.get(name, []), stable.get(name, []))
            for name in names
        }

    @staticmethod
    def _selector(view: RolloutView) -> str:
        def quoted(value: str) -> str:
            return json.dumps(value)

        return f"namespace={quoted(view.namespace)}, route={quoted(view.route)}"

    def _range(self, query: str, since: float) -> dict[str, list[tuple[float, float]]]:
        """A Prometheus range query, by the `metric` label ("" when absent); {} without
        Prometheus or when it does not answer (the page says which sources it used)."""
        if self.prometheus_url is None:
            return {}
        end = self.now()
        start = max(since, end - 6 * 3600)
        step = max(1.0, (end - start) / 400)
        params = urllib.parse.urlencode(
            {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        )
        try:
            with urllib.request.urlopen(
                f"{self.prometheus_url}/api/v1/query_range?{params}",
                timeout=self._prometheus_timeout,
            ) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            log.warning("dashboard_prometheus_unavailable", error=str(exc))
            return {}
        result: dict[str, list[tuple[float, float]]] = {}
        for series in body.get("data", {}).get("result", []):
            name = series.get("metric", {}).get("metric", "")
            values = [(float(t), float(v)) for t, v in series.get("values", [])]
            result[name] = [(t, v) for t, v in values if not math.isnan(v)]
        return result

    # ---- Events --------------------------------------------------------------------------
    def events(self, view: RolloutView) -> list[EventView]:
        try:
            listed: dict[str, Any] = kubeapi.request(
                self.api,
                "GET",
                f"/api/v1/namespaces/{urllib.parse.quote(view.namespace, safe='')}/events",
                query={
                    "fieldSelector": f"involvedObject.name={view.route},"
                    "involvedObject.kind=AIGatewayRoute"
                },
                timeout=5,
            )
        except kubeapi.ApiException as exc:
            log.warning("dashboard_events_unreadable", status=exc.status, reason=exc.reason)
            return []
        events = []
        for item in listed.get("items", []):
            when = (
                _parse_time(item.get("lastTimestamp"))
                or _parse_time(item.get("eventTime"))
                or _parse_time(item.get("metadata", {}).get("creationTimestamp"))
            )
            events.append(
                EventView(
                    time=when or 0.0,
                    type=item.get("type", ""),
                    reason=item.get("reason", ""),
                    message=item.get("message", ""),
                    count=int(item.get("count") or 1),
                )
            )
        return sorted(events, key=lambda e: e.time)

    # ---- actions -------------------------------------------------------------------------
    def act(self, namespace: str, route: str, action: str, step: str | None = None) -> str:
        """Set the control annotations `rollout ACTION ROUTE -n NAMESPACE` sets; what was done."""
        changes = control_changes(action, step=step)
        self.gateway.set_route_annotations(namespace, route, changes)
        shown = ", ".join(
            f"{key}={value}" if value is not None else f"{key} removed"
            for key, value in changes.items()
        )
        return f"aigatewayroute {namespace}/{route}: {action} ({shown})"
