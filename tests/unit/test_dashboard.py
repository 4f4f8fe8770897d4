"""The dashboard's WSGI app without a cluster: pages, refusals, charts (the browser test on
the demo stack is tests/integration/test_dashboard_browser.py)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome, MetricVerdict
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    STATE_ANNOTATION,
)
from rollout.controller.state import PauseCause, RolloutPhase, RolloutState
from rollout.dashboard.app import DashboardApp
from rollout.dashboard.pages import threshold_lines
from rollout.dashboard.source import DashboardSource, EventView, RolloutView, weight_from_event
from rollout.dashboard.svg import Chart, Series, render
from rollout.gateway.errors import NotFoundError
from rollout.gateway.models import RouteSnapshot, RuleWeights

STATE = RolloutState(
    policy_name="chat",
    policy_hash="h",
    stable_backend="v1",
    canary_backend="v2",
    phase=RolloutPhase.PROGRESSING,
    step_index=1,
    stable_weight=75,
    canary_weight=25,
    reason="analysis passed at step 1 of 3 (10%): canary now at step 2 of 3 (25%)",
    started_at=datetime(2026, 1, 1, tzinfo=UTC),
    last_analysis_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC),
    last_analysis=AnalysisVerdict(
        outcome=CheckOutcome.PASS,
        reason="",
        metrics=(
            MetricVerdict(
                metric="ttft-p95",
                outcome=CheckOutcome.PASS,
                canary=0.3,
                stable=0.25,
                threshold="canary/stable <= 1.5",
                reason="ok",
                unit="s",
            ),
        ),
    ),
)


class FakeGateway:
    def __init__(self) -> None:
        self.annotations = {STATE_ANNOTATION: STATE.to_annotation()}
        self.writes: list[dict[str, str | None]] = []

    def _snapshot(self) -> RouteSnapshot:
        return RouteSnapshot(
            namespace="llm",
            name="chat",
            api_version="aigateway.envoyproxy.io/v1alpha1",
            annotations=dict(self.annotations),
            rules=[RuleWeights(weights={"v1": 75, "v2": 25})],
        )

    def list_route_snapshots(self, namespace: str | None = None) -> list[RouteSnapshot]:
        return [self._snapshot()]

    def get_route_snapshot(self, namespace: str | None, name: str) -> RouteSnapshot:
        if (namespace, name) != ("llm", "chat"):
            raise NotFoundError(f"aigatewayroute {namespace}/{name} not found")
        return self._snapshot()

    def set_route_annotations(
        self, namespace: str | None, name: str, changes: dict[str, str | None]
    ) -> None:
        self.writes.append(changes)


class Source(DashboardSource):
    def events(self, view: RolloutView) -> list[EventView]:
        return [EventView(1767225600.0, "Normal", "RolloutStarted", "chat: started (10%)", 1)]


def call(
    app: DashboardApp, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[str, str]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "wsgi.input": io.BytesIO(),
    }
    for key, value in (headers or {}).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h: status.append(s)))
    return status[0], body.decode()


def make(allow: bool = False, refuse: str | None = None) -> tuple[DashboardApp, FakeGateway]:
    gateway = FakeGateway()
    source = Source(gateway, clock=lambda: 1767225700.0)  # type: ignore[arg-type]
    return DashboardApp(source, allow_actions=allow, refuse_action=lambda: refuse), gateway


def test_the_list_and_the_rollout_page_show_the_state() -> None:
    app, _ = make()
    status, body = call(app, "GET", "/")
    assert status == "200 OK" and 'data-route="llm/chat"' in body and "Progressing" in body
    status, body = call(app, "GET", "/rollouts/llm/chat")
    assert status == "200 OK" and 'id="weight-chart"' in body and "ttft-p95" in body
    assert "data-action" not in body and "--allow-actions" in body


def test_an_unknown_rollout_or_page_is_a_404_page() -> None:
    app, _ = make()
    status, body = call(app, "GET", "/rollouts/llm/nope")
    assert status == "404 Not Found" and "No rollout on aigatewayroute llm/nope" in body
    status, body = call(app, "GET", "/favicon.ico")
    assert status == "404 Not Found" and "Traceback" not in body


def test_actions_are_refused_without_the_flag_and_set_annotations_with_it() -> None:
    app, gateway = make(allow=False)
    status, body = call(app, "POST", "/api/rollouts/llm/chat/abort", {"X-Rollout-Action": "1"})
    assert status == "403 Forbidden" and "--allow-actions" in json.loads(body)["message"]
    assert gateway.writes == []
    app, gateway = make(allow=True)
    status, _ = call(app, "POST", "/api/rollouts/llm/chat/abort")  # no header: cross-site
    assert status == "400 Bad Request" and gateway.writes == []
    status, body = call(app, "POST", "/api/rollouts/llm/chat/abort", {"X-Rollout-Action": "1"})
    assert status == "200 OK" and gateway.writes == [{ABORT_ANNOTATION: "true"}]
    status, body = call(app, "POST", "/api/rollouts/llm/chat/approve", {"X-Rollout-Action": "1"})
    assert status == "409 Conflict" and "not waiting for approval" in body
    status, _ = call(app, "POST", "/api/rollouts/llm/chat/explode", {"X-Rollout-Action": "1"})
    assert status == "404 Not Found"
    waiting = STATE.model_copy(
        update={"phase": RolloutPhase.PAUSED, "pause_cause": PauseCause.AWAITING_APPROVAL}
    )
    gateway.annotations[STATE_ANNOTATION] = waiting.to_annotation()
    status, _ = call(app, "POST", "/api/rollouts/llm/chat/approve", {"X-Rollout-Action": "1"})
    assert status == "200 OK" and gateway.writes[-1] == {APPROVE_ANNOTATION: "step 2"}


def test_an_action_on_a_replica_that_is_not_the_leader_is_refused_and_says_so() -> None:
    app, gateway = make(allow=True, refuse="this controller replica is not the leader")
    status, body = call(app, "POST", "/api/rollouts/llm/chat/pause", {"X-Rollout-Action": "1"})
    assert status == "503 Service Unavailable" and "not the leader" in body
    assert gateway.writes == []


def test_a_broken_api_is_an_error_page_not_a_traceback() -> None:
    app, gateway = make()

    def broken(namespace: str | None = None) -> list[RouteSnapshot]:
        raise RuntimeError("boom")

    gateway.list_route_snapshots = broken  # type: ignore[method-assign]
    status, body = call(app, "GET", "/")
    assert status.startswith("500") and "RuntimeError" in body and "Traceback" not in body


def test_weights_from_events_and_threshold_lines() -> None:
    event = EventView(1.0, "Normal", "StepAdvanced", "x: now at step 2 of 3 (25%) [a (1%)]", 1)
    assert weight_from_event(event) == 25.0
    assert weight_from_event(EventView(1.0, "Warning", "RolledBack", "m", 1)) == 0.0
    assert weight_from_event(EventView(1.0, "Normal", "AnalysisInconclusive", "(5%)", 1)) is None
    lines = threshold_lines("canary <= 0.05, canary/stable <= 1.5", [(1.0, 2.0)], 0.0, 9.0)
    assert [line.points for line in lines] == [[(0.0, 0.05), (9.0, 0.05)], [(1.0, 3.0)]]


def test_the_svg_carries_every_point() -> None:
    svg = render(Chart("w", [Series("canary", [(0.0, 10.0), (5.0, 25.0)], step=True)]), 0, 10)
    assert svg.count('class="pt"') == 2 and 'data-v="25"' in svg
