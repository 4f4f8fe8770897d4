"""parse_route_snapshot's plain reader (for well-formed routes) gives exactly what the
path-tracking reader gives, and hands anything else to it (same result, same error)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.gateway.errors import MalformedObjectError
from rollout.gateway.manifests import parse_route_snapshot
from rollout.gateway.manifests.snapshot import _fast_route_snapshot, _tracked_route_snapshot
from tests.unit.test_route_snapshot import MULTI_RULE, ref, route_object

STATUS = {
    "conditions": [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "ok",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]
}

COHORT_RULE = {
    "name": "llama-v2-cohort",
    "matches": [
        {
            "headers": [
                {"name": "x-ai-eg-model", "value": "llama"},
                {"name": "x-session", "type": "RegularExpression", "value": "^[0-9a-f].*"},
            ]
        }
    ],
    "backendRefs": [ref("llama-v2", 1)],
}

FIXTURES = [
    MULTI_RULE,
    {**MULTI_RULE, "status": STATUS},
    route_object([{"name": "empty"}, {"name": "llama", "backendRefs": [ref("a", 100)]}]),
    route_object([COHORT_RULE, {"backendRefs": [ref("llama-v1", 90), ref("llama-v2", 10)]}]),
    {**route_object([{"backendRefs": [ref("a", 1_000_000)]}]), "status": {}},
]


def _outcome(parse: Any, obj: Any) -> tuple[str, Any]:
    try:
        return "ok", parse(obj)
    except MalformedObjectError as exc:
        return type(exc).__name__, (str(exc), exc.path)


@pytest.mark.parametrize("obj", FIXTURES)
def test_well_formed_routes_take_the_plain_reader_and_read_the_same(obj: dict[str, Any]) -> None:
    assert _fast_route_snapshot(obj) == _tracked_route_snapshot(obj)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "True", "Accepted", "Exact", "x", "aigateway.envoyproxy.io/v1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["name"]), inner),
    max_leaves=5,
)


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    obj = copy.deepcopy(draw(st.sampled_from(FIXTURES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(obj) if p]
        path = draw(st.sampled_from(paths))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_JSON)
    return obj


@settings(max_examples=400, deadline=None)
@given(_mutated())
def test_any_object_reads_as_the_tracking_reader_reads_it(obj: dict[str, Any]) -> None:
    assert _outcome(parse_route_snapshot, obj) == _outcome(_tracked_route_snapshot, obj)


def test_a_str_subclass_or_a_bool_weight_goes_to_the_tracking_reader() -> None:
    class Name(str):
        pass

    obj = route_object([{"backendRefs": [ref(Name("a"), 1)]}])
    assert parse_route_snapshot(obj) == _tracked_route_snapshot(obj)
    obj = route_object([{"backendRefs": [ref("a", True)]}])  # type: ignore[arg-type]
    with pytest.raises(MalformedObjectError, match=r"spec\.rules\[0\]\.backendRefs\[0\]\.weight"):
        parse_route_snapshot(obj)
