"""Webhook gates in the state machine: pre-rollout, before-step and before-promotion (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rollout.analysis import AnalysisVerdict, CheckOutcome
from rollout.controller import EventReason, Observation, PauseCause, RolloutPhase
from rollout.controller.state import Decision, GateAnswer, RolloutState, decide
from rollout.policy import API_VERSION, RolloutPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PASS = AnalysisVerdict(outcome=CheckOutcome.PASS, metrics=(), reason="ok")


def policy(*gates: dict[str, Any]) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "v1", "modelNameOverride": "m1"},
                "canary": {"backend": "v2", "modelNameOverride": "m2"},
                "steps": [10, 50],
                "analysis": {
                    "interval": "30s",
                    "failureLimit": 2,
                    "errorLimit": 2,
                    "metrics": [{"kind": "error-rate", "max": 0.05}],
                },
                "gates": list(gates),
            },
        }
    )


def gate(when: str, name: str = "evals") -> dict[str, Any]:
    return {"name": name, "url": "http://evals.ml.svc/run", "when": when, "timeout": "5m"}


class Route:
    def __init__(self, rollout: RolloutPolicy) -> None:
        self.policy, self.weights, self.now = rollout, (100, 0), T0
        self.state: RolloutState | None = None

    def tick(
        self, verdict: AnalysisVerdict | None = None, *answers: GateAnswer, seconds: float = 1
    ) -> Decision:
        self.now += timedelta(seconds=seconds)
        observation = Observation(
            stable_weight=self.weights[0], canary_weight=self.weights[1], gate_answers=answers
        )
        decision = decide(self.state, observation, verdict, self.policy, self.now)
        if decision.set_weights is not None:
            self.weights = (decision.set_weights.stable, decision.set_weights.canary)
        self.state = decision.state
        return decision


def reasons(decision: Decision) -> list[EventReason]:
    return [e.reason for e in decision.events]


def test_a_pre_rollout_gate_runs_before_any_traffic_reaches_the_canary() -> None:
    route = Route(policy(gate("pre-rollout")))
    first = route.tick()
    assert [r.key for r in first.gate_runs] == ["evals@0"] and first.set_weights is None
    assert first.state.phase is RolloutPhase.PENDING and "waiting for the pre-rollout" in (
        first.state.reason
    )
    assert route.tick().gate_runs == ()  # called once, no answer yet: wait
    started = route.tick(None, GateAnswer(key="evals@0", outcome="Passed", message="HTTP 200"))
    assert reasons(started) == [EventReason.GATE_PASSED, EventReason.ROLLOUT_STARTED]
    assert route.weights == (90, 10)
    assert "evals@0" in started.state.gates_passed


def test_a_failing_gate_counts_as_a_failed_check_and_is_called_again() -> None:
    route = Route(policy(gate("pre-rollout")))
    route.tick()
    failed = route.tick(
        None, GateAnswer(key="evals@0", outcome="Failed", message="HTTP 422: 3 bad")
    )
    assert reasons(failed) == [EventReason.GATE_FAILED]
    assert "HTTP 422: 3 bad" in failed.events[0].message and route.weights == (100, 0)
    assert route.tick().gate_runs == ()  # not before an interval
    again = route.tick(seconds=30)
    assert [r.key for r in again.gate_runs] == ["evals@0"]
    ended = route.tick(None, GateAnswer(key="evals@0", outcome="Failed", message="HTTP 500"))
    assert ended.state.phase is RolloutPhase.ROLLED_BACK and route.weights == (100, 0)
    assert ended.set_weights is None  # no weight was ever written: none to take back


def test_an_erroring_gate_holds_and_never_rolls_back() -> None:
    route = Route(policy(gate("pre-rollout")))
    route.tick()
    held = route.tick(None, GateAnswer(key="evals@0", outcome="Error", message="timed out"))
    assert reasons(held) == [EventReason.GATE_ERROR] and held.state.phase is RolloutPhase.PENDING
    route.tick(seconds=30)
    paused = route.tick(None, GateAnswer(key="evals@0", outcome="Error", message="timed out"))
    assert paused.state.phase is RolloutPhase.PAUSED
    assert paused.state.pause_cause is PauseCause.PROVIDER_ERRORS


def test_before_step_and_before_promotion_gates_guard_each_advance() -> None:
    route = Route(policy(gate("before-step", "canary-evals"), gate("before-promotion", "golden")))
    route.tick()  # 10%, no pre-rollout gate
    waiting = route.tick(PASS, seconds=30)
    assert [r.key for r in waiting.gate_runs] == ["canary-evals@1"] and route.weights == (90, 10)
    advanced = route.tick(None, GateAnswer(key="canary-evals@1", outcome="Passed"))
    assert route.weights == (50, 50) and EventReason.STEP_ADVANCED in reasons(advanced)
    promoting = route.tick(PASS, seconds=30)
    assert [r.key for r in promoting.gate_runs] == ["golden@2"]
    done = route.tick(None, GateAnswer(key="golden@2", outcome="Passed"))
    assert done.state.phase is RolloutPhase.SUCCEEDED and route.weights == (0, 100)
