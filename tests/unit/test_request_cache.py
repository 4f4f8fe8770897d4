"""AnalysisRequest.for_policy builds a policy's request once and copies it per window: the
result is the request validated afresh."""

from __future__ import annotations

import gc
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from rollout.analysis import provider
from rollout.analysis.provider import AnalysisRequest
from rollout.policy import RolloutPolicy


def policy(name: str = "llm") -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": "rollout.model-registry.io/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": name},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "v1", "modelNameOverride": "m-v1"},
                "canary": {"backend": "v2", "modelNameOverride": "m-v2"},
                "steps": [10],
                "analysis": {"metrics": [{"kind": "error-rate", "max": 0.05}]},
            },
        }
    )


def validated(p: RolloutPolicy, **overrides: Any) -> AnalysisRequest:
    spec = p.spec
    fields: dict[str, Any] = {
        "key": p.name,
        "analysis": spec.analysis,
        "stable": spec.stable.selector,
        "canary": spec.canary.selector,
        "route": spec.route.name,
        "namespace": spec.route.namespace,
        "stable_pricing": spec.stable.pricing,
        "canary_pricing": spec.canary.pricing,
        "effective_window": None,
    }
    return AnalysisRequest(**{**fields, **overrides})


@pytest.mark.parametrize("window", [None, timedelta(seconds=1), timedelta(seconds=42.5)])
def test_for_policy_is_the_validated_request(window: timedelta | None) -> None:
    p = policy()
    for _ in range(2):  # built, then from the cache
        made = AnalysisRequest.for_policy(p, effective_window=window)
        expected = validated(p, effective_window=window)
        assert made == expected
        assert made.__dict__ == expected.__dict__
        assert made.model_fields_set == expected.model_fields_set
        assert made.model_dump_json() == expected.model_dump_json()
        assert made.window == expected.window


def test_windows_do_not_leak_between_copies() -> None:
    p = policy()
    short = AnalysisRequest.for_policy(p, effective_window=timedelta(seconds=5))
    assert AnalysisRequest.for_policy(p).effective_window is None
    assert short.effective_window == timedelta(seconds=5)
    assert AnalysisRequest.for_policy(p) is AnalysisRequest.for_policy(p)


def test_a_too_short_window_is_refused_as_before() -> None:
    with pytest.raises(ValidationError, match="shorter than"):
        AnalysisRequest.for_policy(policy(), effective_window=timedelta(milliseconds=500))


def test_another_key_is_validated_afresh() -> None:
    p = policy()
    assert AnalysisRequest.for_policy(p, key="other").key == "other"
    assert AnalysisRequest.for_policy(p).key == "llm"


def test_the_cache_lets_go_of_a_dropped_policy() -> None:
    p = policy("dropped")
    AnalysisRequest.for_policy(p)
    key = id(p)
    assert key in provider._requests
    del p
    gc.collect()
    assert key not in provider._requests
