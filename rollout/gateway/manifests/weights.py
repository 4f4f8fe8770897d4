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
