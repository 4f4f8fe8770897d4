"""Steps with hold and approve, the approve annotation, and gradual rollback (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rollout.analysis import AnalysisVerdict, CheckOutcome
from rollout.controller import Decision, EventReason, Observation, PauseCause, RolloutPhase
from rollout.controller.annotations import APPROVE_ANNOTATION, approved_step
from rollout.controller.state import RolloutState, decide, rollback_step_due
from rollout.policy import API_VERSION, RolloutPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASS, FAIL = CheckOutcome.PASS, CheckOutcome.FAIL


def policy(steps: list[Any], on_failure: Any = "rollback") -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "v1", "modelNameOverride": "m1"},
                "canary": {"backend": "v2", "modelNameOverride": "m2"},
                "steps": steps,
                "analysis": {
                    "interval": "30s",
                    "failureLimit": 1,
                    "metrics": [{"kind": "error-rate", "max": 0.05}],
                },
                "onFailure": on_failure,
            },
        }
    )


class Route:
    def __init__(self, rollout: RolloutPolicy) -> None:
        self.policy = rollout
        self.weights = (100, 0)
        self.state: RolloutState | None = None
        self.now = T0
        self.annotations: dict[str, str] = {}

    def tick(self, outcome: CheckOutcome | None = None, seconds: float = 30) -> Decision:
        self.now += timedelta(seconds=seconds)
        observation = Observation.from_route(
            self.annotations, stable_weight=self.weights[0], canary_weight=self.weights[1]
        )
        verdict = (
            None
            if outcome is None
            else AnalysisVerdict(outcome=outcome, metrics=(), reason=f"{outcome.value} here")
        )
        decision = decide(self.state, observation, verdict, self.policy, self.now)
        if decision.set_weights is not None:
            self.weights = (decision.set_weights.stable, decision.set_weights.canary)
        self.state = decision.state
        return decision


def reasons(decision: Decision) -> list[EventReason]:
    return [e.reason for e in decision.events]


def test_plain_steps_keep_their_fingerprint_and_objects_are_read() -> None:
    plain = policy([10, 50])
    assert plain.spec.weights == (10, 50, 100)
    assert plain.model_dump(mode="json")["spec"]["steps"] == [10, 50, 100]
    gated = policy([10, {"weight": 25, "hold": "10m"}, {"weight": 50, "approve": True}])
    assert gated.spec.weights == (10, 25, 50, 100)
    assert gated.spec.steps[1].hold == timedelta(minutes=10)
    assert gated.spec.steps[2].approve
    assert gated.fingerprint() != policy([10, 25, 50]).fingerprint()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, {"weight": 100, "approve": True}], "the 100% step is never analysed"),
        ([5, 0.5], "strictly increasing"),
        ([10, {"weight": 25, "hold": "soon"}], "duration"),
        ([10, {"weight": 25, "approve": "yes please"}], "valid boolean"),
    ],
)
def test_bad_steps_are_refused(steps: list[Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        policy(steps)
    assert message in str(info.value)


def test_a_held_step_stays_until_its_hold_has_passed_even_when_checks_pass() -> None:
    route = Route(policy([{"weight": 10, "hold": "2m"}, 50]))
    route.tick()  # 10%
    held = route.tick(PASS)
    assert held.set_weights is None and reasons(held) == [EventReason.STEP_HELD]
    assert route.tick(PASS).events == ()  # said once
    failed = route.tick(FAIL)  # the checks keep running and can still fail it
    assert failed.state.phase is RolloutPhase.ROLLED_BACK


def test_the_hold_ends_and_the_rollout_advances() -> None:
    route = Route(policy([{"weight": 10, "hold": "1m"}, 50]))
    route.tick()
    route.tick(PASS)
    advanced = route.tick(PASS, seconds=40)
    assert advanced.set_weights is not None and advanced.set_weights.canary == 50


def test_an_approval_step_waits_paused_and_goes_on_when_approved() -> None:
    route = Route(policy([10, {"weight": 50, "approve": True}]))
    route.tick()
    route.tick(PASS)  # 50%
    waiting = route.tick(PASS)
    assert waiting.state.phase is RolloutPhase.PAUSED
    assert waiting.state.pause_cause is PauseCause.AWAITING_APPROVAL
    assert waiting.state.reason.startswith("waiting for approval")
    assert reasons(waiting) == [EventReason.WAITING_FOR_APPROVAL]
    assert route.tick(PASS).set_weights is None  # still waiting
    route.annotations[APPROVE_ANNOTATION] = "1"  # another step: not this one
    assert route.tick().state.phase is RolloutPhase.PAUSED
    route.annotations[APPROVE_ANNOTATION] = "50%"
    approved = route.tick()
    assert reasons(approved)[0] is EventReason.APPROVED
    assert approved.state.phase is RolloutPhase.SUCCEEDED and route.weights == (0, 100)


def test_an_approval_naming_no_step_is_ignored_with_an_event_once() -> None:
    route = Route(policy([10, {"weight": 50, "approve": True}]))
    route.tick()
    route.annotations[APPROVE_ANNOTATION] = "7"
    ignored = route.tick()
    assert reasons(ignored) == [EventReason.APPROVAL_IGNORED]
    assert "names no step" in ignored.events[0].message
    assert route.tick().events == ()


def test_approve_annotation_values() -> None:
    weights = (2, 5, 25, 50, 100)
    assert approved_step("step 2", weights) == 1
    assert approved_step("25%", weights) == 2
    assert approved_step("25", weights) == 2  # no step 25: the weight
    assert approved_step("4", weights) == 3
    assert "ambiguous" in str(approved_step("2", weights))  # step 2 is 5%, 2% is step 1
    assert approved_step(None, weights) is None
    assert "no step has the weight" in str(approved_step("7%", weights))


def test_gradual_rollback_steps_down_then_ends_rolled_back() -> None:
    route = Route(policy([25, 50], on_failure={"rollback": {"steps": [10], "interval": "20s"}}))
    assert route.policy.spec.gradual_rollback is not None
    assert route.policy.spec.gradual_rollback.steps == (10, 0)
    route.tick()
    route.tick(PASS)  # 50%
    first = route.tick(FAIL)
    assert first.state.phase is RolloutPhase.ROLLING_BACK and route.weights == (90, 10)
    assert reasons(first) == [EventReason.ROLLBACK_STEPPED]
    assert rollback_step_due(first.state, route.policy) == route.now + timedelta(seconds=20)
    assert route.tick(seconds=5).set_weights is None  # not yet
    last = route.tick(seconds=20)
    assert last.state.phase is RolloutPhase.ROLLED_BACK and route.weights == (100, 0)


def test_abort_is_immediate_during_a_gradual_rollback() -> None:
    route = Route(policy([50], on_failure={"rollback": {"steps": [30, 10, 0]}}))
    route.tick()
    route.tick(FAIL)
    assert route.weights == (70, 30)
    route.annotations["rollout.model-registry.io/abort"] = "true"
    assert route.tick(seconds=1).state.phase is RolloutPhase.ABORTED and route.weights == (100, 0)


def test_gradual_rollback_steps_must_descend() -> None:
    with pytest.raises(ValueError) as info:
        policy([50], on_failure={"rollback": {"steps": [10, 20]}})
    assert "strictly decreasing" in str(info.value)
    with pytest.raises(ValueError) as info:
        policy([50], on_failure="ignore")
    assert "'rollback' or 'pause'" in str(info.value)


def test_sub_percent_steps_are_written_on_a_larger_total() -> None:
    route = Route(policy([0.1, 0.5, 1, 5, 25, 50]))
    assert route.policy.spec.weight_total == 10_000
    started = route.tick()
    assert started.set_weights is not None
    assert (started.set_weights.stable, started.set_weights.canary) == (9990, 10)
    assert started.state.canary_percent == 0.1 and "(0.1%)" in started.state.reason
    route.tick(PASS)
    assert route.weights == (9950, 50)
    for _ in range(5):
        last = route.tick(PASS)
    assert last.state.phase is RolloutPhase.SUCCEEDED and route.weights == (0, 10_000)
    # Whole-percent policies keep weights in percent, as before.
    assert policy([10, 50]).spec.weight_total == 100
