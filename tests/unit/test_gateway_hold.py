"""The state machine listens to the AI Gateway: no traffic moves on a route it does not accept,
and a step is analysed only once the generated HTTPRoute carries its weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rollout.analysis import AnalysisVerdict, CheckOutcome
from rollout.controller import (
    ABORT_ANNOTATION,
    Decision,
    EventReason,
    GatewayObservation,
    Observation,
    RolloutPhase,
    RolloutState,
    analysis_due,
    decide,
)
from rollout.policy import API_VERSION, RolloutPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MISSING = "failed to get AIServiceBackend chat-v2.llm: not found"


def policy() -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "chat-v1", "modelNameOverride": "m1"},
                "canary": {"backend": "chat-v2", "modelNameOverride": "m2"},
                "steps": [10, 50],
                "analysis": {
                    "interval": "30s",
                    "metrics": [{"kind": "error-rate", "max": 0.05}],
                },
            },
        }
    )


@dataclass
class Gateway:
    """What the fake AI Gateway says: its acceptance, and the weights its HTTPRoute carries."""

    reconciled: bool = True
    accepted: bool = True
    message: str | None = None
    applies: bool = True  # copies our weights into the HTTPRoute
    applied: tuple[int, int] | None = (100, 0)


@dataclass
class Route:
    gateway: Gateway = field(default_factory=Gateway)
    stable: int = 100
    canary: int = 0
    state: RolloutState | None = None
    now: datetime = T0
    annotations: dict[str, str] = field(default_factory=dict)

    def tick(self, outcome: CheckOutcome | None = None, seconds: float = 30) -> Decision:
        self.now += timedelta(seconds=seconds)
        gw = self.gateway
        observation = Observation.from_route(
            self.annotations,
            stable_weight=self.stable,
            canary_weight=self.canary,
            gateway=GatewayObservation(
                reconciled=gw.reconciled,
                accepted=gw.accepted,
                message=gw.message,
                verification_timeout=timedelta(seconds=20),
                applied_weights=gw.applied,
                applied_detail=None if gw.applied is None else f"shows {gw.applied}",
            ),
        )
        verdict = (
            None
            if outcome is None
            else AnalysisVerdict(outcome=outcome, metrics=(), reason=f"{outcome.value} here")
        )
        decision = decide(self.state, observation, verdict, policy(), self.now)
        if decision.set_weights is not None:
            self.stable, self.canary = decision.set_weights.stable, decision.set_weights.canary
        if gw.applies and gw.accepted:
            gw.applied = (self.stable, self.canary)
        self.state = decision.state
        return decision


def reasons(decision: Decision) -> list[EventReason]:
    return [e.reason for e in decision.events]


def test_a_route_the_gateway_never_reconciled_holds_the_start_with_its_own_reason() -> None:
    route = Route(Gateway(reconciled=False, accepted=False))
    first = route.tick()
    assert first.set_weights is None and first.state.phase is RolloutPhase.PENDING
    assert reasons(first) == [EventReason.ROUTE_NOT_RECONCILED]
    assert "is it running" in first.events[0].message
    assert route.tick().events == ()  # said once, not every tick
    route.gateway = Gateway()
    started = route.tick()
    assert reasons(started) == [EventReason.GATEWAY_READY, EventReason.ROLLOUT_STARTED]
    assert started.set_weights is not None and started.set_weights.canary == 10


def test_a_rejected_route_holds_quoting_the_gateway_and_resumes_when_accepted() -> None:
    route = Route()
    route.tick()  # started at 10%
    route.tick()  # the HTTPRoute is seen carrying 90/10: verified
    assert route.state is not None and not route.state.awaiting_verification
    route.gateway.accepted, route.gateway.message = False, MISSING
    held = route.tick(CheckOutcome.PASS)
    assert held.set_weights is None  # no weight moves on a route the gateway does not accept
    assert reasons(held) == [EventReason.ROUTE_NOT_ACCEPTED]
    assert MISSING in held.events[0].message and MISSING in held.state.reason
    assert held.state.phase is RolloutPhase.PROGRESSING
    assert not analysis_due(held.state, policy(), route.now + timedelta(hours=1))
    route.gateway.accepted, route.gateway.message = True, None
    ready = route.tick(CheckOutcome.PASS)
    assert reasons(ready) == [EventReason.GATEWAY_READY] and ready.set_weights is None
    # The step's window starts again: its analysis is one interval after the hold ended.
    assert ready.state.step_started_at == route.now
    assert not analysis_due(ready.state, policy(), route.now + timedelta(seconds=29))
    advanced = route.tick(CheckOutcome.PASS)
    assert advanced.set_weights is not None and advanced.set_weights.canary == 50


def test_weights_are_verified_on_the_generated_route_before_the_step_is_analysed() -> None:
    route = Route(Gateway(applies=False))
    started = route.tick()
    assert started.state.awaiting_verification
    assert not analysis_due(started.state, policy(), route.now + timedelta(minutes=5))
    waiting = route.tick(CheckOutcome.PASS, seconds=10)  # within the 20 s timeout
    assert waiting.set_weights is None and waiting.events == ()
    held = route.tick(CheckOutcome.PASS, seconds=15)  # past it
    assert reasons(held) == [EventReason.WEIGHTS_NOT_APPLIED]
    assert "stable 90 / canary 10" in held.state.hold_reason  # type: ignore[operator]
    assert "shows (100, 0)" in held.events[0].message
    route.gateway.applies = True
    route.gateway.applied = (90, 10)
    ready = route.tick(CheckOutcome.PASS)
    assert reasons(ready) == [EventReason.GATEWAY_READY]
    assert not ready.state.awaiting_verification and ready.state.weights_verified_at == route.now
    assert route.tick(CheckOutcome.PASS).set_weights is not None


def test_abort_still_returns_traffic_to_stable_on_a_rejected_route() -> None:
    route = Route()
    route.tick()
    route.gateway.accepted, route.gateway.message = False, MISSING
    route.tick()
    route.annotations[ABORT_ANNOTATION] = "true"
    aborted = route.tick()
    assert aborted.state.phase is RolloutPhase.ABORTED
    assert aborted.set_weights is not None and aborted.set_weights.canary == 0


def test_without_gateway_checks_nothing_is_held_or_awaited() -> None:
    state, now, live = None, T0, (100, 0)
    for _ in range(2):
        now += timedelta(seconds=30)
        observation = Observation(stable_weight=live[0], canary_weight=live[1])
        decision = decide(state, observation, None, policy(), now)
        state = decision.state
        live = (state.stable_weight, state.canary_weight)
    assert state is not None and not state.awaiting_verification and state.hold_reason is None
    assert analysis_due(state, policy(), now + timedelta(seconds=30))


def test_drift_is_seen_while_weights_await_verification() -> None:
    route = Route(Gateway(applies=False))
    route.tick()  # 90/10 written, the HTTPRoute does not show it yet
    route.stable, route.canary = 60, 40  # a person writes other weights meanwhile
    drifted = route.tick(seconds=1)
    assert reasons(drifted) == [EventReason.WEIGHTS_DRIFTED]
    assert drifted.state.phase is RolloutPhase.PAUSED
