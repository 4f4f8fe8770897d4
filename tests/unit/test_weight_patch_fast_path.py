"""weight_patch_operations' plain writer (for well-formed routes) gives exactly the patch the
path-tracking writer gives, and hands anything else to it (same patch, same error)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.gateway.errors import InvalidError, MalformedObjectError
from rollout.gateway.manifests import _patch, weight_patch_operations, weights
from rollout.gateway.manifests.weights import (
    _Bail,
    _fast_weight_patch_operations,
    _tracked_weight_patch_operations,
)
from tests.unit.test_gateway_manifests import mangle, patchable_route, server_route

STATE = "rollout.model-registry.io/state"
STATE_TEXT = json.dumps({"phase": "canary", "step": 3, "history": list(range(60))})

# Names with '/' and '~' exercise the pointer escaping; shared across rules for ambiguity.
BACKEND_NAMES = ["v1", "v2", "v3", "a/b~c"]
RULE_NAMES = ["main", "other"]
ANNOTATION_KEYS = [STATE, "a.io/b", "plain", "x.io/~tilde", "bad key", "/empty-prefix", ""]


def _outcome(write: Callable[..., Any], obj: Any, w: Any, **kwargs: Any) -> tuple[Any, ...]:
    """The patch as bytes (and repr, which tells 1 from True), or the exception's type,
    message and attributes (path, kind, namespace, name, causes, ...)."""
    try:
        ops = write(obj, w, **kwargs)
    except Exception as exc:
        return ("raised", type(exc), str(exc), exc.args, _attributes(exc))
    return ("ok", json.dumps(ops), repr(ops))


def _attributes(exc: BaseException) -> dict[str, Any]:
    return {k: v for k, v in vars(exc).items() if not k.startswith("__")}


def _fast_outcome(obj: Any, w: Any, **kwargs: Any) -> tuple[Any, ...] | None:
    """The plain writer's patch, or None where it bails; it must raise nothing else."""
    try:
        ops = _fast_weight_patch_operations(
            obj,
            w,
            kwargs.get("rule"),
            kwargs.get("allow_all_zero", False),
            kwargs.get("annotations"),
            kwargs.get("expected_weights"),
        )
    except _Bail:
        return None
    return ("ok", json.dumps(ops), repr(ops))


def assert_same(obj: Any, w: Any, **kwargs: Any) -> tuple[Any, ...]:
    """The public function and the plain writer agree with the reference, and leave the
    inputs alone; returns the reference outcome."""
    before = repr((obj, w, kwargs))  # repr: a mapping proxy cannot be deep-copied
    expected = _outcome(_tracked_weight_patch_operations, obj, w, **kwargs)
    assert _outcome(weight_patch_operations, obj, w, **kwargs) == expected
    fast = _fast_outcome(obj, w, **kwargs)
    assert fast is None or fast == expected
    assert repr((obj, w, kwargs)) == before
    return expected


# --- generated routes and requests ----------------------------------------------------------

ABSENT = object()  # a field left out (as opposed to null)


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not ABSENT:
        target[key] = value


def mostly(usual: st.SearchStrategy[Any], *odd: Any) -> st.SearchStrategy[Any]:
    """`usual` 19 times in 20, else one of the `odd` values."""
    return st.integers(0, 19).flatmap(lambda n: st.sampled_from(odd) if n == 5 else usual)


ODD = (True, False, "5", 5.0, [], {}, -1)
weight_fields = mostly(
    st.sampled_from([ABSENT, None]) | st.integers(0, 3) | st.integers(0, 1_000_000), *ODD
)


@st.composite
def backend_refs(draw: st.DrawFn) -> Any:
    ref: dict[str, Any] = {}
    _put(ref, "name", draw(mostly(st.sampled_from(BACKEND_NAMES), ABSENT, None, 7)))
    _put(ref, "weight", draw(weight_fields))
    if draw(st.booleans()):
        ref["priority"] = 0
    return draw(mostly(st.just(ref), "v1", None, [ref]))


@st.composite
def rules(draw: st.DrawFn) -> Any:
    rule: dict[str, Any] = {"matches": [{"headers": [{"name": "x-ai-eg-model", "value": "m"}]}]}
    _put(rule, "name", draw(mostly(st.sampled_from([ABSENT, None, *RULE_NAMES]), 3, ["main"])))
    refs = draw(st.lists(backend_refs(), min_size=1, max_size=4))
    _put(rule, "backendRefs", draw(mostly(st.just(refs), ABSENT, None, {}, "x", [])))
    return draw(mostly(st.just(rule), *ODD))


annotation_maps = st.dictionaries(
    mostly(st.sampled_from(ANNOTATION_KEYS[:4]), *ANNOTATION_KEYS[4:], 1),
    mostly(st.sampled_from([STATE_TEXT, "1", ""]), 1, None, ["x"]),
    max_size=3,
)


@st.composite
def route_objects(draw: st.DrawFn) -> Any:
    obj: dict[str, Any] = {}
    api_versions = st.sampled_from(["aigateway.envoyproxy.io/v1beta1", ABSENT, None])
    _put(obj, "apiVersion", draw(mostly(api_versions, "v1", "x.io/v1", 1, ["v1"])))
    kinds = st.sampled_from(["AIGatewayRoute", ABSENT, None])
    _put(obj, "kind", draw(mostly(kinds, "HTTPRoute", 1, "")))
    meta: dict[str, Any] = {"name": "llama", "namespace": "models"}
    _put(meta, "resourceVersion", draw(mostly(st.just("4711"), ABSENT, None, 4711, "")))
    annotations = st.sampled_from([ABSENT, None]) | annotation_maps
    _put(meta, "annotations", draw(mostly(annotations, [], "x", {1: "a"}, {"a": 1})))
    _put(obj, "metadata", draw(mostly(st.just(meta), ABSENT, None, [], "x")))
    spec_rules = draw(st.lists(rules(), min_size=1, max_size=3))
    spec: dict[str, Any] = {"parentRefs": [{"name": "gw"}]}
    _put(spec, "rules", draw(mostly(st.just(spec_rules), ABSENT, None, {}, [])))
    _put(obj, "spec", draw(mostly(st.just(spec), ABSENT, None, [], "x")))
    return draw(mostly(st.just(obj), None, [], "x"))


def _backend_names(obj: Any) -> list[str]:
    """The backend names the route holds, as far as they can be found."""
    try:
        return [r["name"] for rule in obj["spec"]["rules"] for r in rule["backendRefs"]]
    except (KeyError, TypeError, IndexError):
        return []


@st.composite
def requests(draw: st.DrawFn) -> tuple[Any, Any, dict[str, Any]]:
    """A route and a request on it: mostly about backends it has, sometimes not."""
    obj = draw(route_objects())
    present = [n for n in _backend_names(obj) if isinstance(n, str)] or BACKEND_NAMES
    names = mostly(st.sampled_from(present), *BACKEND_NAMES, "unknown", 1)
    values = mostly(st.integers(0, 3) | st.integers(0, 1_000_000), 1_000_001, -1, True, "5", 5.0)
    w = draw(mostly(st.dictionaries(names, values, min_size=1, max_size=3), {}))
    kwargs = {
        "rule": draw(mostly(st.sampled_from([None, 0, 1, *RULE_NAMES]), 2, -1, True, "nope")),
        "allow_all_zero": draw(st.booleans()),
        "annotations": draw(st.none() | annotation_maps),
        "expected_weights": draw(
            st.none() | st.dictionaries(names, mostly(st.integers(0, 3), True, "x"), max_size=3)
        ),
    }
    return obj, w, kwargs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_the_plain_writer_matches_the_tracking_writer(
    request: tuple[Any, Any, dict[str, Any]],
) -> None:
    obj, w, kwargs = request
    assert_same(obj, w, **kwargs)


# --- well-formed routes: the plain writer does them itself ----------------------------------


@st.composite
def well_formed_requests(draw: st.DrawFn) -> tuple[Any, dict[str, int], dict[str, Any]]:
    """A well-formed route and a request on it that the writer accepts."""
    count = draw(st.integers(1, 3))
    spec_rules: list[dict[str, Any]] = []
    for i in range(count):
        names = draw(st.lists(st.sampled_from(BACKEND_NAMES), min_size=1, max_size=4, unique=True))
        refs = []
        for name in names:
            ref: dict[str, Any] = {"name": name}
            _put(ref, "weight", draw(st.sampled_from([ABSENT, None]) | st.integers(0, 100)))
            refs.append(ref)
        rule: dict[str, Any] = {"backendRefs": refs}
        _put(rule, "name", draw(st.sampled_from([ABSENT, None, f"rule-{i}"])))
        spec_rules.append(rule)
    index = draw(st.integers(0, count - 1))
    names = [r["name"] for r in spec_rules[index]["backendRefs"]]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    w = {name: draw(st.integers(1, 1_000_000)) for name in chosen}
    meta: dict[str, Any] = {"name": "llama", "namespace": "models", "resourceVersion": "7"}
    _put(meta, "annotations", draw(st.sampled_from([ABSENT, None, {}, {"a.io/b": "x"}])))
    obj = {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": meta,
        "spec": {"rules": spec_rules},
    }
    selectors: list[int | str | None] = [index]
    rule_name = spec_rules[index].get("name")
    if rule_name is not None:
        selectors.append(rule_name)
    holding = [
        i for i, r in enumerate(spec_rules) if set(w) <= {b["name"] for b in r["backendRefs"]}
    ]
    if holding == [index]:
        selectors.append(None)
    kwargs: dict[str, Any] = {
        "rule": draw(st.sampled_from(selectors)),
        "allow_all_zero": draw(st.booleans()),
        "annotations": draw(
            st.none() | st.dictionaries(st.sampled_from([STATE, "a.io/b", "x.y.io/t-1"]), st.text())
        ),
        "expected_weights": draw(
            st.none() | st.dictionaries(st.sampled_from(names), st.integers(0, 100))
        ),
    }
    return obj, w, kwargs


@settings(max_examples=100, deadline=None)
@given(well_formed_requests())
def test_the_plain_writer_writes_well_formed_routes(
    request: tuple[Any, dict[str, int], dict[str, Any]],
) -> None:
    obj, w, kwargs = request
    expected = assert_same(obj, w, **kwargs)
    assert expected[0] == "ok"
    assert _fast_outcome(obj, w, **kwargs) == expected  # it did not bail


def _tracker_refused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the path-tracking writer was called")


TYPICAL_REQUESTS: list[dict[str, Any]] = [
    {
        "annotations": {STATE: STATE_TEXT},
        "expected_weights": {"llama-v1": 90, "llama-v2": 10},
    },
    {"annotations": {STATE: STATE_TEXT}, "rule": 0},
    {"annotations": {STATE: STATE_TEXT, "x.io/a": "b"}, "expected_weights": {"llama-v1": 90}},
    {},
]


@pytest.mark.parametrize("kwargs", TYPICAL_REQUESTS)
@pytest.mark.parametrize("drop_annotations", [False, True])
def test_well_formed_routes_never_reach_the_tracking_writer(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], drop_annotations: bool
) -> None:
    obj = json.loads(json.dumps(server_route()))
    if drop_annotations:
        del obj["metadata"]["annotations"]
    w = {"llama-v1": 80, "llama-v2": 20}
    expected = _tracked_weight_patch_operations(obj, w, **kwargs)
    monkeypatch.setattr(weights, "_tracked_weight_patch_operations", _tracker_refused)
    assert json.dumps(weight_patch_operations(obj, w, **kwargs)) == json.dumps(expected)


def test_the_typical_patch() -> None:
    obj = server_route()
    del obj["metadata"]["annotations"]
    ops = weight_patch_operations(
        obj,
        {"llama-v2": 20, "fallback": 3},
        annotations={"a.io/b": "1"},
        expected_weights={"llama-v2": 10, "fallback": 1},
    )
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "4711"},
        {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "llama-v2"},
        {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 10},
        {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
        # No weight field: nothing to test, it is added.
        {"op": "test", "path": "/spec/rules/0/backendRefs/2/name", "value": "fallback"},
        {"op": "add", "path": "/spec/rules/0/backendRefs/2/weight", "value": 3},
        {"op": "add", "path": "/metadata/annotations", "value": {"a.io/b": "1"}},
    ]


def test_the_annotation_map_in_the_patch_is_a_copy() -> None:
    notes = {"a.io/b": "1"}
    obj = server_route()
    del obj["metadata"]["annotations"]
    ops = weight_patch_operations(obj, {"llama-v2": 20}, annotations=notes)
    assert ops[-1]["value"] == notes
    assert ops[-1]["value"] is not notes


# --- mangled and odd inputs: the tracking writer's answer, whatever it is -------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([None, 0, 1, "mistral"]))
def test_mangled_routes_get_the_tracking_writers_answer(data: st.DataObject, rule: Any) -> None:
    obj = mangle(data, patchable_route())
    assert_same(obj, {"llama-v2": 20}, rule=rule, annotations={STATE: "x"})
    assert_same(obj, {"mistral-v1": 20}, expected_weights={"mistral-v1": 50})


def _set(*path: Any, value: Any = ABSENT) -> Callable[[dict[str, Any]], Any]:
    """A change to a copy of patchable_route(): the field at `path` set, or deleted."""

    def change(obj: dict[str, Any]) -> Any:
        if not path:
            return value
        parent: Any = obj
        for key in path[:-1]:
            parent = parent[key]
        if value is ABSENT:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        return obj

    return change


REFS = ("spec", "rules", 0, "backendRefs")

MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not an object": _set(value=["x"]),
    "None": _set(value=None),
    "a mapping proxy": MappingProxyType,
    "wrong kind": _set("kind", value="HTTPRoute"),
    "kind not a string": _set("kind", value=5),
    "wrong group": _set("apiVersion", value="gateway.networking.k8s.io/v1"),
    "apiVersion not a string": _set("apiVersion", value=["v1"]),
    "no metadata": _set("metadata"),
    "null metadata": _set("metadata", value=None),
    "metadata a list": _set("metadata", value=[]),
    "metadata a proxy": lambda o: {**o, "metadata": MappingProxyType(o["metadata"])},
    "no resourceVersion": _set("metadata", "resourceVersion"),
    "resourceVersion an int": _set("metadata", "resourceVersion", value=4711),
    "annotations a list": _set("metadata", "annotations", value=["a"]),
    "annotation value an int": _set("metadata", "annotations", value={"a.io/b": 1}),
    "annotation key an int": _set("metadata", "annotations", value={1: "a"}),
    "no spec": _set("spec"),
    "spec a list": _set("spec", value=[]),
    "spec a string": _set("spec", value="x"),
    "no rules": _set("spec", "rules"),
    "rules an object": _set("spec", "rules", value={}),
    "rules a tuple": lambda o: _set("spec", "rules", value=tuple(o["spec"]["rules"]))(o),
    "no rules at all": _set("spec", "rules", value=[]),
    "rule a string": _set("spec", "rules", 1, value="x"),
    "rule name an int": _set("spec", "rules", 1, "name", value=3),
    "an earlier rule name an int": _set("spec", "rules", 0, "name", value=3),
    "a later rule name a list": lambda o: _set(
        "spec", "rules", value=[*o["spec"]["rules"], {"name": ["x"]}]
    )(o),
    "no backendRefs": _set(*REFS),
    "backendRefs an object": _set(*REFS, value={"name": "llama-v2"}),
    "backendRefs a string": _set(*REFS, value="llama-v2"),
    "backendRef a string": _set(*REFS, 0, value="llama-v1"),
    "backendRef a proxy": lambda o: _set(
        *REFS, 1, value=MappingProxyType(o["spec"]["rules"][0]["backendRefs"][1])
    )(o),
    "other rule's backendRefs odd": _set("spec", "rules", 1, "backendRefs", value={}),
    "no backend name": _set(*REFS, 0, "name"),
    "backend name an int": _set(*REFS, 0, "name", value=5),
    "weight a string": _set(*REFS, 1, "weight", value="10"),
    "weight a float": _set(*REFS, 1, "weight", value=10.0),
    "weight true": _set(*REFS, 1, "weight", value=True),
    "weight false": _set(*REFS, 0, "weight", value=False),
    "weight null": _set(*REFS, 1, "weight", value=None),
    "other rule's weight odd": _set("spec", "rules", 1, "backendRefs", 0, "weight", value="x"),
    "duplicate backend": _set(*REFS, 2, "name", value="llama-v2"),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"annotations": {STATE: "x"}},
        {"annotations": {STATE: "x"}, "expected_weights": {"llama-v2": 10}, "rule": 0},
        {"rule": "mistral"},
    ],
)
def test_malformed_routes_get_the_tracking_writers_answer(
    change: Callable[[dict[str, Any]], Any], kwargs: dict[str, Any]
) -> None:
    obj = change(patchable_route())
    assert_same(obj, {"llama-v2": 20}, **kwargs)
    assert_same(obj, {"mistral-v1": 20}, **kwargs)


ODD_REQUESTS: dict[str, tuple[Any, dict[str, Any]]] = {
    "no weights": ({}, {}),
    "weights a list": ([("llama-v2", 20)], {}),
    "weights a proxy": (MappingProxyType({"llama-v2": 20}), {}),
    "weights None": (None, {}),
    "a bool weight": ({"llama-v2": True}, {}),
    "a negative weight": ({"llama-v2": -1}, {}),
    "too big a weight": ({"llama-v2": 1_000_001}, {}),
    "the biggest weight": ({"llama-v2": 1_000_000}, {}),
    "a float weight": ({"llama-v2": 20.0}, {}),
    "a backend name not a string": ({1: 20}, {}),
    "an unknown backend": ({"nope": 20}, {}),
    "backends over two rules": ({"llama-v2": 20, "mistral-v1": 1}, {}),
    "all zero": ({"llama-v1": 0, "llama-v2": 0, "fallback": 0}, {}),
    "all zero allowed": ({"llama-v1": 0, "llama-v2": 0, "fallback": 0}, {"allow_all_zero": 1}),
    "rule True": ({"llama-v2": 20}, {"rule": True}),
    "rule False": ({"llama-v2": 20}, {"rule": False}),
    "rule a float": ({"llama-v2": 20}, {"rule": 0.0}),
    "rule out of range": ({"llama-v2": 20}, {"rule": 2}),
    "rule negative": ({"llama-v2": 20}, {"rule": -1}),
    "rule unknown name": ({"llama-v2": 20}, {"rule": "nope"}),
    "backend not in the rule": ({"llama-v2": 20}, {"rule": "mistral"}),
    "bad annotation key": ({"llama-v2": 20}, {"annotations": {"bad key": "x"}}),
    "annotation key an int": ({"llama-v2": 20}, {"annotations": {1: "x"}}),
    "annotation value an int": ({"llama-v2": 20}, {"annotations": {"a.io/b": 1}}),
    "annotations a list": ({"llama-v2": 20}, {"annotations": [("a.io/b", "1")]}),
    "annotations a proxy": ({"llama-v2": 20}, {"annotations": MappingProxyType({"a.io/b": "1"})}),
    "annotations empty": ({"llama-v2": 20}, {"annotations": {}}),
    "expected a proxy": ({"llama-v2": 20}, {"expected_weights": MappingProxyType({"llama-v2": 1})}),
    "expected a list": ({"llama-v2": 20}, {"expected_weights": ["llama-v2"]}),
    "expected odd values": ({"llama-v2": 20}, {"expected_weights": {"llama-v2": "ten"}}),
    "expected empty": ({"llama-v2": 20}, {"expected_weights": {}}),
}


@pytest.mark.parametrize(("w", "kwargs"), ODD_REQUESTS.values(), ids=ODD_REQUESTS.keys())
@pytest.mark.parametrize("drop_annotations", [False, True])
def test_odd_requests_get_the_tracking_writers_answer(
    w: Any, kwargs: dict[str, Any], drop_annotations: bool
) -> None:
    obj = patchable_route()
    if drop_annotations:
        del obj["metadata"]["annotations"]
    assert_same(obj, w, **kwargs)


def test_a_refused_annotation_key_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(InvalidError, match="not a valid label/annotation key"):
            weight_patch_operations(patchable_route(), {"llama-v2": 20}, annotations={"b c": "x"})
    assert "b c" not in _patch._annotation_pointers


def test_the_pointer_memos_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_patch, "_MEMO_LIMIT", 8)
    monkeypatch.setattr(_patch, "_annotation_pointers", {})
    monkeypatch.setattr(_patch, "_ref_pointers", {})
    obj = patchable_route()
    for i in range(50):
        key = f"a.io/k{i}"
        ops = weight_patch_operations(obj, {"llama-v2": i}, annotations={key: "v"}, rule=0)
        assert ops[-1] == {"op": "add", "path": f"/metadata/annotations/a.io~1k{i}", "value": "v"}
        assert _patch._backend_ref_pointers(i, i) == (
            f"/spec/rules/{i}/backendRefs/{i}/name",
            f"/spec/rules/{i}/backendRefs/{i}/weight",
        )
    assert len(_patch._annotation_pointers) <= 8
    assert len(_patch._ref_pointers) <= 8


def test_errors_still_name_the_field() -> None:
    obj = patchable_route()
    obj["spec"]["rules"][0]["backendRefs"][1]["weight"] = "10"
    with pytest.raises(MalformedObjectError) as caught:
        weight_patch_operations(obj, {"llama-v2": 20})
    assert caught.value.path == "spec.rules[0].backendRefs[1].weight"
