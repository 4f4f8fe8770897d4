"""Observations and decisions made without validation are the ones validation makes; values
of other types still go through validation (and its errors)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from rollout.controller.state import (
    Decision,
    EmitEvent,
    EventReason,
    GateAnswer,
    GatewayObservation,
    Observation,
    RolloutState,
    SetWeights,
    WeightSplit,
    _decision,
)
from rollout.frozen import new_without_validation


def same(fast: BaseModel, validated: BaseModel) -> None:
    assert type(fast) is type(validated)
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    assert repr(fast) == repr(validated)
    assert fast.model_dump() == validated.model_dump()
    assert list(fast.__dict__) == list(validated.__dict__)


ANNOTATIONS: list[dict[str, str]] = [
    {},
    {"rollout.model-registry.io/pause": "true", "rollout.model-registry.io/state": "{}"},
    {"rollout.model-registry.io/pause": "false", "rollout.model-registry.io/abort": ""},
    {"rollout.model-registry.io/resume": " t1 ", "rollout.model-registry.io/approve": "step-1"},
    {"rollout.model-registry.io/promote": "yes"},
]


@pytest.mark.parametrize("annotations", ANNOTATIONS)
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"gateway": GatewayObservation(accepted=True, reconciled=True)},
        {"gate_answers": (GateAnswer(key="g@0", outcome="Passed"),)},
    ],
)
def test_an_observation_from_a_route_is_the_validated_one(
    annotations: dict[str, str], extra: dict[str, Any]
) -> None:
    fast = Observation.from_route(annotations, stable_weight=90, canary_weight=10, **extra)
    validated = Observation.model_validate(fast.model_dump())
    same(fast, validated)
    assert fast.__dict__["stable_weight"] == 90


def test_values_of_other_types_are_validated_as_before() -> None:
    with pytest.raises(ValidationError):
        Observation.from_route({}, stable_weight=-1, canary_weight=0)
    with pytest.raises(ValidationError):
        Observation.from_route(
            {"rollout.model-registry.io/approve": 3}, stable_weight=1, canary_weight=0
        )  # type: ignore[dict-item]
    coerced = Observation.from_route({}, stable_weight=True, canary_weight=0)
    assert coerced.stable_weight == 1 and type(coerced.stable_weight) is int


def test_a_decision_is_the_validated_one() -> None:
    state = RolloutState(policy_name="p", policy_hash="h", stable_backend="a", canary_backend="b")
    actions = (
        SetWeights.of(WeightSplit.for_canary(10, 100)),
        EmitEvent(reason=EventReason.ROLLOUT_STARTED, message="m"),
    )
    for changed in (True, False):
        same(
            _decision(state, actions, changed),
            Decision(state=state, actions=actions, changed=changed),
        )
    assert _decision(state, (), False).actions == ()


def test_building_without_validation_wants_every_field_in_order() -> None:
    with pytest.raises(ValueError, match="every field"):
        new_without_validation(GateAnswer, {"key": "k"})
    with pytest.raises(ValueError, match="every field"):
        new_without_validation(GateAnswer, {"message": "", "key": "k", "outcome": "Passed"})
    answer = new_without_validation(GateAnswer, {"key": "k", "outcome": "Passed", "message": ""})
    same(answer, GateAnswer(key="k", outcome="Passed", message=""))
    with pytest.raises(ValidationError):  # frozen like any other
        answer.key = "x"  # type: ignore[misc]
