"""Tenant opt-in: a header-matched rule sending the named tenants to the canary (issue 10).

One HTTPRouteMatch per tenant value, each carrying the weighted rule's `x-ai-eg-model` match
and an Exact match of the tenant header, so other models of the route are untouched. At most
64 values (the generated HTTPRoute's matches per rule, times the weighted rule's model
matches), each 1..4096 printable ASCII characters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rollout.gateway.manifests._common import JSONPatch, Manifest
from rollout.gateway.manifests._rules import (
    canary_backend_refs,
    check_header_name,
    check_header_value,
    header_match,
    header_rule_name,
    model_header_matches,
    read_rules,
    remove_rule_operations,
    set_rule_operations,
)

OPT_IN_SUFFIX = "-opt-in"


def opt_in_rule_name(canary_backend: str) -> str:
    """The opt-in rule's name: `<canary>-opt-in`."""
    return header_rule_name(canary_backend, OPT_IN_SUFFIX)


def opt_in_rule(
    obj: Mapping[str, Any],
    *,
    backends: Sequence[str],
    header: str,
    values: Sequence[str],
    canary_backend: str,
    rule: int | str | None = None,
) -> tuple[int, Manifest]:
    """(index of the weighted rule, the opt-in rule) for the live route `obj`."""
    check_header_name(header)
    route = read_rules(obj)
    if isinstance(values, str) or not values:
        raise route.err(f"opt-in: expected a non-empty list of {header} values, got {values!r}")
    for value in values:
        check_header_value(value, f"opt-in {header} value")
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        raise route.err(f"opt-in: values repeated: {repeated}")
    weighted = route.weighted_index(backends, rule)
    if canary_backend not in backends:
        raise route.err(f"canary backend {canary_backend!r} is not one of {list(backends)}")
    matches = [
        {"headers": [model, header_match(header, "Exact", value)]}
        for model in model_header_matches(route, weighted)
        for value in values
    ]
    return weighted, {
        "name": opt_in_rule_name(canary_backend),
        "matches": matches,
        "backendRefs": canary_backend_refs(route, weighted, canary_backend),
    }


def opt_in_rule_operations(
    obj: Mapping[str, Any],
    *,
    backends: Sequence[str],
    header: str,
    values: Sequence[str],
    canary_backend: str,
    rule: int | str | None = None,
) -> JSONPatch:
    """JSON Patch operations setting the opt-in rule (added before the weighted rule, or its
    matches replaced after testing its name), as cohorts.cohort_rule_operations does."""
    route = read_rules(obj)
    weighted, new_rule = opt_in_rule(
        obj,
        backends=backends,
        header=header,
        values=values,
        canary_backend=canary_backend,
        rule=rule,
    )
    return set_rule_operations(route, weighted, new_rule, replace_matches=True)


def remove_opt_in_rule_operations(obj: Mapping[str, Any], *, canary_backend: str) -> JSONPatch:
    """Test the opt-in rule's name at its index and remove it; [] when there is none."""
    return remove_rule_operations(read_rules(obj), opt_in_rule_name(canary_backend))


__all__ = [
    "OPT_IN_SUFFIX",
    "opt_in_rule",
    "opt_in_rule_name",
    "opt_in_rule_operations",
    "remove_opt_in_rule_operations",
]
