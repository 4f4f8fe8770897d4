"""Gate calls off the tick: a small pool runs them, their answers wait here for the next tick.

A gate may take minutes (an eval suite); a tick must not. The state machine asks for a call
(RunGate), the reconciler hands it here, and when the answer comes `on_answer(rollout)` asks
the scheduler for a prompt tick, whose Observation carries it (GateAnswer). An answer is
handed out until a tick that saw it has been written (`consumed`). In memory only: after a
restart a gate the rollout still waits for is called again (passed ones are in the state).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog

from rollout.controller.gates import GateOutcome, GateResult
from rollout.controller.ports import GateRunner
from rollout.controller.state import GateAnswer
from rollout.policy.schema import GateSpec

log = structlog.get_logger("rollout.gates")


class GateTracker:
    def __init__(
        self,
        runner: GateRunner,
        *,
        on_answer: Callable[[str], None] | None = None,
        workers: int = 4,
    ) -> None:
        self._runner = runner
        self.on_answer = on_answer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gate")
        self._lock = threading.Lock()
        self._in_flight: set[tuple[str, str]] = set()
        self._answers: dict[str, dict[str, GateAnswer]] = {}

    def submit(self, rollout: str, gate: GateSpec, key: str, payload: Mapping[str, object]) -> None:
        """Call the gate unless a call for (rollout, key) is running or answered."""
        with self._lock:
            if (rollout, key) in self._in_flight or key in self._answers.get(rollout, {}):
                return
            self._in_flight.add((rollout, key))
        self._pool.submit(self._call, rollout, gate, key, dict(payload))

    def _call(self, rollout: str, gate: GateSpec, key: str, payload: dict[str, object]) -> None:
        try:
            result = self._runner.run(gate, payload)
        except Exception as exc:  # the port never raises; a bug must hold, not vanish
            result = GateResult(gate.name, GateOutcome.ERROR, f"gate call failed: {exc!r}")
        answer = GateAnswer(key=key, outcome=result.outcome.value, message=result.message)
        with self._lock:
            self._in_flight.discard((rollout, key))
            self._answers.setdefault(rollout, {})[key] = answer
        if self.on_answer is not None:
            try:
                self.on_answer(rollout)
            except Exception as exc:  # advice only: the next scheduled tick reads it anyway
                log.warning("gate_answer_reaction_failed", rollout=rollout, error=str(exc))

    def answers(self, rollout: str) -> tuple[GateAnswer, ...]:
        # Every tick of every rollout asks, and almost none has an answer waiting: that case
        # is read without the lock (a dict lookup and a length are atomic), which ten tick
        # workers otherwise queue on. An answer stored just after is not lost: its on_answer
        # asks for a prompt tick, which finds it.
        if not self._answers.get(rollout):
            return ()
        with self._lock:
            return tuple(self._answers.get(rollout, {}).values())

    def consumed(self, rollout: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        with self._lock:
            answered = self._answers.get(rollout, {})
            for key in keys:
                answered.pop(key, None)

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
