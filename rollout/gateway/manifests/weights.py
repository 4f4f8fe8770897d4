"""The weight patch: set the weights of named backendRefs of one rule, and only that."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.gateway.errors import InvalidError, StatusCause
from rollout.gateway.manifests._common import JSONPatch
from rollout.gateway.manifests._parse import _root
from rollout.gateway.manifests._patch import (
    _annotation_operations,
    _backend_ref_pointers,
    _checked_annotation_pointer,
    _pointer,
    _rule_backend_names,
    _select_rule,
)
from rollout.gateway.models import MAX_PATCH_WEIGHT


def _check_weights(weights: Mapping[str, int]) -> None:
    if not weights:
        raise InvalidError("no weights given")
    bad = [
        StatusCause(
            field=f"weights[{name}]",
            reason="FieldValueInvalid",
            message=f"weight must be an integer 0..{MAX_PATCH_WEIGHT}, got {value!r}",
        )
        for name, value in weights.items()
        if not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_PATCH_WEIGHT
    ]
    if bad:
        raise InvalidError("; ".join(str(c) for c in bad), causes=bad)


def weight_patch_operations(
    obj: Mapping[str, Any],
    weights: Mapping[str, int],
    *,
    rule: int | str | None = None,
    allow_all_zero: bool = False,
    annotations: Mapping[str, str] | None = None,
    expected_weights: Mapping[str, int] | None = None,
) -> JSONPatch:
    """A JSON Patch (RFC 6902) setting the weights of named backends of one rule of `obj`.

    `obj` is the AIGatewayRoute as last read (possibly a little stale). The patch tests the name
    at every backendRef index it touches, then replaces (or adds, where absent) only
    `/spec/rules/i/backendRefs/j/weight` of the named backends and adds the given annotations.
    Everything else is left alone.

    It deliberately does NOT test metadata.resourceVersion: the server applies the patch to the
    latest object atomically, so other owners' concurrent changes (status, labels, other
    annotations, other rules) are never lost, and they must not make our write fail or starve
    it. The name tests make sure the indexes still point at the backends we mean. Two cases
    test more:
    - `expected_weights`: the current weight of each named backend is tested too, so the write
      is a compare-and-swap on the weights (someone else's weight change makes it fail);
    - creating metadata.annotations (absent in `obj`) would replace a map someone added since,
      so then the resourceVersion is tested.
    A failed test surfaces as ConflictError (see error_from_status / the adapter).

    The rule is `rule` (index or rule name) or, if None, the single rule holding every named
    backend. Raises InvalidError for weights outside 0..1,000,000 (MAX_PATCH_WEIGHT: the
    generated HTTPRoute's cap; sub-percent steps use a total of 1,000,000), unknown or
    ambiguous backend names, and for a result where every backend of the rule has weight 0
    (no traffic at all) unless `allow_all_zero`; MalformedObjectError if `obj` is not a
    well-formed route.
    """
    # It runs for every weight step: the plain writer handles well-formed routes; anything it
    # does not expect (a malformed object, a refused request) goes to the path-tracking writer,
    # which gives the same patch or the error naming the field.
    try:
        return _fast_weight_patch_operations(
            obj, weights, rule, allow_all_zero, annotations, expected_weights
        )
    except _Bail:
        return _tracked_weight_patch_operations(
            obj,
            weights,
            rule=rule,
            allow_all_zero=allow_all_zero,
            annotations=annotations,
            expected_weights=expected_weights,
        )


def _tracked_weight_patch_operations(
    obj: Mapping[str, Any],
    weights: Mapping[str, int],
    *,
    rule: int | str | None = None,
    allow_all_zero: bool = False,
    annotations: Mapping[str, str] | None = None,
    expected_weights: Mapping[str, int] | None = None,
) -> JSONPatch:
    """weight_patch_operations on the path-tracking reader: the reference, and every error."""
    _check_weights(weights)
    root = _root(obj, AI_GATEWAY_ROUTE)
    ref = root.ref

    def err(message: str) -> InvalidError:
        return InvalidError(message, kind=ref.kind, namespace=ref.namespace, name=ref.name)

    meta = root.req("metadata")
    resource_version = meta.req("resourceVersion").string()
    rules = root.req("spec").req("rules").items()
    names = [_rule_backend_names(r) for r in rules]
    index = _select_rule(rules, names, set(weights), rule, err)

    rule_names = names[index]
    missing = sorted(set(weights) - set(rule_names))
    if missing:
        raise err(f"backend(s) {missing} not in rule {index}; it has {rule_names}")
    repeated = sorted({n for n in weights if rule_names.count(n) > 1})
    if repeated:
        raise err(f"backend(s) {repeated} appear more than once in rule {index}; ambiguous")

    refs = rules[index].req("backendRefs").items()
    current = [ref_node.opt_integer("weight") for ref_node in refs]
    final = [
        weights.get(name, 1 if weight is None else weight)
        for name, weight in zip(rule_names, current, strict=True)
    ]
    if not allow_all_zero and all(w == 0 for w in final):
        raise err(
            f"every backend of rule {index} would have weight 0, so the model would get no "
            "traffic; pass allow_all_zero=True to do that on purpose"
        )

    expected = expected_weights or {}
    ops: JSONPatch = []
    for j, name in enumerate(rule_names):
        if name not in weights:
            continue
        base = ("spec", "rules", index, "backendRefs", j)
        ops.append({"op": "test", "path": _pointer(*base, "name"), "value": name})
        if name in expected and current[j] is not None:
            ops.append({"op": "test", "path": _pointer(*base, "weight"), "value": expected[name]})
        op = "add" if current[j] is None else "replace"
        ops.append({"op": op, "path": _pointer(*base, "weight"), "value": weights[name]})
    annotation_ops = _annotation_operations(meta, annotations or {})
    if annotations and meta.get("annotations") is None:
        ops.insert(
            0,
            {
                "op": "test",
                "path": _pointer("metadata", "resourceVersion"),
                "value": resource_version,
            },
        )
    ops.extend(annotation_ops)
    return ops


# --- The plain writer: the tracking writer's checks on exact JSON types, no paths ----------


class _Bail(Exception):
    """Something the plain writer does not expect (or would refuse): let the tracking writer
    say what, or give the same patch."""


_RESOURCE_VERSION_POINTER = _pointer("metadata", "resourceVersion")
_ANNOTATIONS_POINTER = _pointer("metadata", "annotations")


def _fast_backend_names(rule: object) -> list[str]:
    if type(rule) is not dict:
        raise _Bail
    refs = rule.get("backendRefs")
    if refs is None:
        return []
    if type(refs) is not list:
        raise _Bail
    names = []
    for ref in refs:
        if type(ref) is not dict:
            raise _Bail
        name = ref.get("name")
        if type(name) is not str:
            raise _Bail
        names.append(name)
    return names


def _fast_select_rule(
    rules: list[dict[str, Any]], names: list[list[str]], wanted: set[str], rule: object
) -> int:
    """_select_rule where it succeeds; anything else bails (refusals come from the tracker)."""
    if type(rule) is int:
        if not 0 <= rule < len(rules):
            raise _Bail
        return rule
    if type(rule) is str:
        index = -1
        for i, r in enumerate(rules):
            rule_name = r.get("name")
            if rule_name is None:
                continue
            if type(rule_name) is not str:
                raise _Bail  # the tracker reads every rule's name
            if index < 0 and rule_name == rule:
                index = i
        if index < 0:
            raise _Bail
        return index
    if rule is not None:
        raise _Bail  # e.g. a bool: the tracker knows what it means
    holding = [i for i, rule_names in enumerate(names) if wanted <= set(rule_names)]
    if len(holding) != 1:
        raise _Bail
    return holding[0]


def _fast_weight_patch_operations(
    obj: object,
    weights: object,
    rule: object,
    allow_all_zero: bool,
    annotations: object,
    expected_weights: object,
) -> JSONPatch:
    """weight_patch_operations on plain dicts and lists of exact JSON types; it raises _Bail
    (and nothing else) wherever the tracking writer might refuse or see something else."""
    if type(weights) is not dict or not weights:
        raise _Bail
    for name, value in weights.items():
        if type(name) is not str or type(value) is not int or not 0 <= value <= MAX_PATCH_WEIGHT:
            raise _Bail
    if expected_weights is None:
        expected: dict[str, Any] = {}
    elif type(expected_weights) is dict:
        expected = expected_weights
    else:
        raise _Bail
    if annotations is not None and type(annotations) is not dict:
        raise _Bail

    # _root, then metadata.resourceVersion and spec.rules
    if type(obj) is not dict:
        raise _Bail
    kind = obj.get("kind")
    if kind is not None and (type(kind) is not str or kind != AI_GATEWAY_ROUTE.kind):
        raise _Bail
    api_version = obj.get("apiVersion")
    if api_version is not None and (
        type(api_version) is not str or api_version.partition("/")[0] != AI_GATEWAY_ROUTE.group
    ):
        raise _Bail
    meta = obj.get("metadata")
    if type(meta) is not dict:
        raise _Bail
    resource_version = meta.get("resourceVersion")
    if type(resource_version) is not str:
        raise _Bail
    spec = obj.get("spec")
    if type(spec) is not dict:
        raise _Bail
    rules = spec.get("rules")
    if type(rules) is not list:
        raise _Bail

    names = [_fast_backend_names(r) for r in rules]  # also: every rule is a dict
    wanted = set(weights)
    index = _fast_select_rule(rules, names, wanted, rule)
    rule_names = names[index]
    held = set(rule_names)
    if not wanted <= held:
        raise _Bail  # missing backends
    if len(held) != len(rule_names) and any(rule_names.count(n) > 1 for n in wanted):
        raise _Bail  # ambiguous backends

    ops: JSONPatch = []
    all_zero = True
    for j, ref in enumerate(rules[index]["backendRefs"]):  # a list of dicts: names read it
        current = ref.get("weight")
        if current is not None and type(current) is not int:
            raise _Bail
        name = rule_names[j]
        if name in weights:
            new = weights[name]
            name_path, weight_path = _backend_ref_pointers(index, j)
            ops.append({"op": "test", "path": name_path, "value": name})
            if current is None:
                ops.append({"op": "add", "path": weight_path, "value": new})
            else:
                if name in expected:
                    ops.append({"op": "test", "path": weight_path, "value": expected[name]})
                ops.append({"op": "replace", "path": weight_path, "value": new})
        else:
            new = 1 if current is None else current
        if new != 0:
            all_zero = False
    if not allow_all_zero and all_zero:
        raise _Bail

    if annotations:
        annotation_ops: JSONPatch = []
        for key, value in annotations.items():
            path = _checked_annotation_pointer(key) if type(key) is str else None
            if path is None or type(value) is not str:
                raise _Bail
            annotation_ops.append({"op": "add", "path": path, "value": value})
        existing = meta.get("annotations")
        if existing is None:
            ops.insert(
                0, {"op": "test", "path": _RESOURCE_VERSION_POINTER, "value": resource_version}
            )
            ops.append({"op": "add", "path": _ANNOTATIONS_POINTER, "value": dict(annotations)})
        else:
            if type(existing) is not dict:
                raise _Bail
            for key, value in existing.items():
                if type(key) is not str or type(value) is not str:
                    raise _Bail
            ops.extend(annotation_ops)
    return ops


def annotation_patch_operations(
    obj: Mapping[str, Any], annotations: Mapping[str, str]
) -> JSONPatch:
    """Operations adding `annotations` (and only them), for a patch that sets no weights;
    testing the resourceVersion when metadata.annotations must be created (as above)."""
    root = _root(obj, AI_GATEWAY_ROUTE)
    meta = root.req("metadata")
    ops = _annotation_operations(meta, annotations)
    if annotations and meta.get("annotations") is None:
        version = meta.req("resourceVersion").string()
        ops.insert(
            0, {"op": "test", "path": _pointer("metadata", "resourceVersion"), "value": version}
        )
    return ops
