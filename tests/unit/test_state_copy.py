"""state._copy is pydantic's model_copy(update=...) without its generic steps: same result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rollout.analysis.verdicts import CheckOutcome
from rollout.controller.state import (
    CheckCounters,
    PauseCause,
    RolloutPhase,
    RolloutState,
    WeightSplit,
    _copy,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def base() -> RolloutState:
    return RolloutState(
        policy_name="p",
        policy_hash="h",
        stable_backend="a",
        canary_backend="b",
        phase=RolloutPhase.PROGRESSING,
        step_index=1,
        stable_weight=90,
        canary_weight=10,
    )


def same(copied: Any, expected: Any) -> None:
    assert type(copied) is type(expected)
    assert copied.__dict__ == expected.__dict__
    assert list(copied.__dict__) == list(expected.__dict__)
    assert copied.__pydantic_fields_set__ == expected.__pydantic_fields_set__
    assert copied.__pydantic_extra__ == expected.__pydantic_extra__
    assert copied.__pydantic_private__ == expected.__pydantic_private__
    assert copied == expected
    assert copied.model_dump_json() == expected.model_dump_json()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"step_index": 2, "reason": "r"},
        {"phase": RolloutPhase.PAUSED, "pause_cause": PauseCause.MANUAL, "pause_reason": "x"},
        {"written_weights": WeightSplit(stable=50, canary=50), "weights_written_at": NOW},
        {"counters": CheckCounters(failures=2), "last_analysis_at": NOW, "gates_passed": ("g@1",)},
    ],
)
def test_copy_is_model_copy(changes: dict[str, Any]) -> None:
    for state in (base(), RolloutState.from_annotation(base().to_annotation())):
        copied = _copy(state, changes)
        same(copied, state.model_copy(update=changes))
        assert copied is not state
        assert state == base()  # the original is untouched
        assert copied.__pydantic_fields_set__ is not state.__pydantic_fields_set__


def test_a_state_with_unknown_keys_read_back_copies_alike() -> None:
    text = base().to_annotation()[:-1] + ', "from_a_newer_controller": 1}'
    state = RolloutState.from_annotation(text)
    same(_copy(state, {"step_index": 0}), state.model_copy(update={"step_index": 0}))


@pytest.mark.parametrize("outcome", list(CheckOutcome))
def test_counters_after_is_model_copy(outcome: CheckOutcome) -> None:
    counters = CheckCounters(failures=1, consecutive_errors=2, passed_total=3)
    after = counters.after(outcome)
    assert type(after) is CheckCounters
    assert after.model_dump() == {
        **counters.model_dump(),
        **{
            CheckOutcome.PASS: {
                "passed_total": 4,
                "consecutive_inconclusive": 0,
                "consecutive_errors": 0,
            },
            CheckOutcome.FAIL: {
                "failures": 2,
                "failed_total": 1,
                "consecutive_inconclusive": 0,
                "consecutive_errors": 0,
            },
            CheckOutcome.INCONCLUSIVE: {
                "consecutive_inconclusive": 1,
                "inconclusive_total": 1,
                "consecutive_errors": 0,
            },
            CheckOutcome.ERROR: {"consecutive_errors": 3, "errors_total": 1},
        }[outcome],
    }
