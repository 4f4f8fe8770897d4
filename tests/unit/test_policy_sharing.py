"""Equal sections of loaded policies are one shared frozen object, and sharing changes
nothing a policy says (its values, the fields set, its fingerprint, its errors)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from rollout.policy import loading
from rollout.policy.loading import parse_policy_text
from rollout.policy.schema import SHARED_MODELS, AnalysisSpec, RolloutPolicy, _input_key
from tests.unit.policy_docs import policy_doc

ROOT = Path(__file__).resolve().parents[2]


WINDOWED = "{interval: 1m, window: 2m, metrics: [{kind: error-rate, max: 0.05}]}"


def doc(name: str, analysis: str = WINDOWED) -> str:
    return policy_doc(name, steps="[10, {weight: 50, hold: 5m}]", analysis=analysis)


def fields_set_tree(model: BaseModel) -> Any:
    """Each model's fields set, recursively (what exclude_unset dumps depend on)."""
    out: dict[str, Any] = {"": sorted(model.model_fields_set)}
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, tuple) else (value,)
        out[name] = [fields_set_tree(v) for v in values if isinstance(v, BaseModel)]
    return out


def texts() -> list[str]:
    files = [
        *sorted((ROOT / "policies").glob("*.yaml")),
        ROOT / "tests/unit/data/demo-before-llm-checks.yaml",
    ]
    return [f.read_text() for f in files] + ["".join(doc(f"p{i}") for i in range(3))]


@pytest.mark.parametrize("text", texts())
def test_a_shared_load_says_what_a_plain_validation_says(text: str) -> None:
    shared, errors = parse_policy_text(text, Path("x.yaml"))
    assert shared and not errors
    raw = [d for d in yaml.safe_load_all(text) if d]
    plain = [RolloutPolicy.model_validate(d) for d in raw]
    assert shared == plain
    for a, b in zip(shared, plain, strict=True):
        assert a.model_dump(mode="json") == b.model_dump(mode="json")
        assert a.model_dump(mode="json", exclude_unset=True) == b.model_dump(
            mode="json", exclude_unset=True
        )
        assert fields_set_tree(a) == fields_set_tree(b)
        assert a.fingerprint() == b.fingerprint()


def test_equal_sections_are_one_object_and_different_ones_are_not() -> None:
    other = "{interval: 1m, window: 3m, metrics: [{kind: error-rate, max: 0.05}]}"
    policies, errors = parse_policy_text(doc("a") + doc("b") + doc("c", other), Path("x.yaml"))
    assert not errors
    a, b, c = (p.spec for p in policies)
    assert a.analysis is b.analysis
    assert a.analysis is not c.analysis
    assert a.analysis.metrics[0] is c.analysis.metrics[0]  # the same check inside
    assert a.steps[1] is b.steps[1]
    assert a.steps[-1] is c.steps[-1]  # the 100% step appended
    assert a.route is not b.route and a.stable is not b.stable


def test_without_the_context_nothing_is_shared() -> None:
    raw = {"interval": "1m", "metrics": [{"kind": "error-rate", "max": 0.05}]}
    assert AnalysisSpec.model_validate(raw) is not AnalysisSpec.model_validate(raw)
    shared: dict[object, Any] = {}
    one = AnalysisSpec.model_validate(raw, context={SHARED_MODELS: shared})
    assert AnalysisSpec.model_validate(raw, context={SHARED_MODELS: shared}) is one


def test_inputs_of_other_types_are_kept_apart() -> None:
    assert _input_key(1) != _input_key(1.0) != _input_key(True)
    assert _input_key(0.0) != _input_key(-0.0)
    assert _input_key({"a": 1, "b": 2}) != _input_key({"b": 2, "a": 1})
    assert _input_key([1]) != _input_key((1,))
    assert _input_key({"a": object()}) is None


def test_an_invalid_section_is_reported_every_time_even_after_a_valid_twin() -> None:
    good = "{interval: 1m, window: 2m, minRequests: 1, metrics: [{kind: error-rate, max: 0.05}]}"
    bad = "{interval: 1m, window: 2m, minRequests: 1.0, metrics: [{kind: error-rate, max: 0.05}]}"
    for _ in range(2):
        policies, errors = parse_policy_text(doc("a", good) + doc("b", bad), Path("x.yaml"))
        assert [p.name for p in policies] == ["a"]
        assert [e.field_path for e in errors] == ["spec.analysis.minRequests"]


def test_a_section_no_policy_holds_is_forgotten() -> None:
    analysis = "{interval: 7m, window: 7m, metrics: [{kind: error-rate, max: 0.07}]}"
    policies, _ = parse_policy_text(doc("a", analysis), Path("x.yaml"))
    held = len(loading._shared)
    del policies
    gc.collect()
    assert len(loading._shared) < held
