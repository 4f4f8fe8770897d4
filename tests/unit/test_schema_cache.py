"""The derived values cached on frozen policy models equal the ones computed afresh."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.policy.schema import (
    _THRESHOLD_KEYS,
    _THRESHOLD_NAMES,
    WEIGHT_TOTAL_FINE,
    MetricCheck,
    RolloutSpec,
)

CHECKS: list[dict[str, Any]] = [
    {"kind": "error-rate", "max": 0.05},
    {"kind": "error-rate", "maxDifference": 0.02, "max": 0.1},
    {"kind": "ttft", "percentile": "p95", "maxRatio": 1.5},
    {"kind": "ttft", "percentile": "p50", "max": 2, "min": 0.01, "maxRatio": 1.2},
    {"kind": "request-duration", "percentile": "p99", "max": 30},
    {"kind": "request-duration", "judge": {}},
    {"kind": "time-per-output-token", "percentile": "p95", "maxRatio": 1.2, "judge": {}},
    {"kind": "output-tokens-per-second", "minRatio": 0.8, "minDifference": -5},
    {"kind": "cache-hit-ratio", "min": 0.2},
    {"kind": "tokens-per-request", "tokenType": "output", "maxRatio": 1.3},
    {"query": "sum(rate(x{ {{selector}} }[{{window}}]))", "max": 1},
]


def computed_thresholds(check: MetricCheck) -> dict[str, float]:
    named = dict(zip(_THRESHOLD_KEYS, (getattr(check, n) for n in _THRESHOLD_NAMES), strict=True))
    return {key: value for key, value in named.items() if value is not None}


@pytest.mark.parametrize("raw", CHECKS, ids=lambda raw: str(raw))
def test_cached_check_values_equal_the_computed_ones(raw: dict[str, Any]) -> None:
    check = MetricCheck.model_validate(raw)
    for _ in range(2):  # computed, then cached
        thresholds = check.thresholds()
        assert thresholds == computed_thresholds(check)
        assert list(thresholds) == list(computed_thresholds(check))  # YAML order
        assert check.has_thresholds is bool(thresholds)
        relative = {k: v for k, v in thresholds.items() if k not in {"min", "max"}}
        assert check.relative_thresholds() == relative
        assert check.needs_stable is bool(relative)
        tenant = check.for_tenant()
        if check.kind.value == "error-rate":
            assert tenant is check
        else:
            expected = {k: v for k, v in thresholds.items() if k not in {"min", "max"}}
            assert tenant.thresholds() == expected
            assert tenant.min_value is None and tenant.max_value is None


def test_thresholds_returns_a_new_dict_each_call() -> None:
    check = MetricCheck.model_validate(CHECKS[1])
    check.thresholds()["max"] = 99.0
    assert check.thresholds() == {"max": 0.1, "maxDifference": 0.02}


def test_threshold_description_cached_with_and_without_judge() -> None:
    check = MetricCheck.model_validate(CHECKS[6])
    assert check.threshold_description(judge=False) == "canary/stable <= 1.2"
    assert check.threshold_description().startswith("canary/stable <= 1.2, ")
    assert check.judge is not None
    assert check.threshold_description() == f"canary/stable <= 1.2, {check.judge.description()}"
    judged_alone = MetricCheck.model_validate(CHECKS[5])
    assert judged_alone.threshold_description(judge=False) == ""


def test_model_copy_drops_cached_values() -> None:
    check = MetricCheck.model_validate(CHECKS[3])
    assert check.thresholds()["max"] == 2
    assert check.threshold_description().startswith("canary >= 0.01, canary <= 2")
    copied = check.model_copy(update={"max_value": None, "min_value": None})
    assert copied.thresholds() == {"maxRatio": 1.2}
    assert copied.threshold_description() == "canary/stable <= 1.2"
    assert check.thresholds() == {"min": 0.01, "max": 2.0, "maxRatio": 1.2}
    # equality and hashing stay on the fields alone
    fresh = MetricCheck.model_validate(CHECKS[3])
    assert fresh == check and hash(fresh) == hash(check)
    assert check.model_dump() == fresh.model_dump()


def spec(steps: list[Any]) -> RolloutSpec:
    raw: dict[str, Any] = {
        "route": {"namespace": "ns", "name": "r"},
        "stable": {"backend": "a", "modelNameOverride": "m-a"},
        "canary": {"backend": "b", "modelNameOverride": "m-b"},
        "steps": steps,
        "analysis": {"interval": "30s", "metrics": [{"kind": "error-rate", "max": 0.05}]},
    }
    return RolloutSpec.model_validate(raw)


def test_cached_spec_weights() -> None:
    coarse = spec([10, {"weight": 50, "hold": "1m"}])
    for _ in range(2):
        assert coarse.weights == (10, 50, 100)
        assert coarse.weight_total == 100
        assert coarse.phases == (10, 50, 100)
    fine = spec([0.5, 20])
    assert fine.weights == (0.5, 20, 100)
    assert fine.weight_total == WEIGHT_TOTAL_FINE
    edited = coarse.model_copy(update={"steps": fine.steps})
    assert edited.weights == (0.5, 20, 100)
    assert edited.weight_total == WEIGHT_TOTAL_FINE
