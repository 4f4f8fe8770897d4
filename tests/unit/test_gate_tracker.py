"""The gate tracker: calls off the tick, answers kept until a tick that used them is written."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from rollout.controller.gate_tracker import GateTracker
from rollout.controller.gates import GateOutcome, GateResult
from rollout.policy.schema import GateSpec

GATE = GateSpec.model_validate(
    {"name": "evals", "url": "https://evals.example/run", "when": "before-step", "timeout": "5m"}
)


class Runner:
    def __init__(self) -> None:
        self.calls: list[Mapping[str, object]] = []

    def run(self, gate: GateSpec, payload: Mapping[str, object]) -> GateResult:
        self.calls.append(payload)
        return GateResult(gate.name, GateOutcome.PASSED, "all evals passed")


def test_an_answer_is_handed_out_until_it_is_consumed() -> None:
    answered = threading.Event()
    runner = Runner()
    tracker = GateTracker(runner, on_answer=lambda rollout: answered.set())
    try:
        assert tracker.answers("chat") == ()  # nothing asked yet
        tracker.submit("chat", GATE, "evals@1", {"step": 1})
        assert answered.wait(5)
        (answer,) = tracker.answers("chat")
        assert (answer.key, answer.outcome) == ("evals@1", "Passed")
        assert tracker.answers("other") == ()
        tracker.consumed("chat", [])  # a tick that used no answer spends none
        assert tracker.answers("chat") == (answer,)
        tracker.submit("chat", GATE, "evals@1", {"step": 1})  # answered: not called again
        assert len(runner.calls) == 1
        tracker.consumed("chat", ["evals@1"])
        assert tracker.answers("chat") == ()
    finally:
        tracker.stop()
