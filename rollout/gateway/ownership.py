"""What our writes may change in an object that already exists: pure merge functions.

An AIGatewayRoute in a real cluster has other owners: a GitOps tool applies it, people add
headerMutation or timeouts, other controllers annotate it. An update must replace only the
fields our model describes and keep the rest, so each kind lists the spec keys it owns. In
metadata we set our labels and our annotation keys and keep everyone else's.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any, Final

from rollout.gateway.constants import MODEL_HEADER, ROUTE_ANNOTATION, VARIANTS_ANNOTATION

Manifest = dict[str, Any]

ROUTE_OWNED_SPEC: Final = ("parentRefs", "llmRequestCosts")
SERVICE_BACKEND_OWNED_SPEC: Final = ("schema", "backendRef")
BACKEND_OWNED_SPEC: Final = ("endpoints",)
RATE_LIMIT_OWNED_SPEC: Final = ("targetRefs", "rateLimit")

ROUTE_OWNED_ANNOTATIONS: Final = (VARIANTS_ANNOTATION,)
RATE_LIMIT_OWNED_ANNOTATIONS: Final = (ROUTE_ANNOTATION,)

# Fields of a backendRef the WeightedBackend model describes; headerMutation, bodyMutation,
# group/kind (InferencePool) belong to others and survive an update.
_OWNED_BACKEND_REF_FIELDS: Final = ("name", "namespace", "weight", "priority", "modelNameOverride")


def _merge_metadata(
    existing: Mapping[str, Any], desired: Mapping[str, Any], owned_annotations: Collection[str]
) -> Manifest:
    meta = copy.deepcopy(dict(existing))
    labels = dict(meta.get("labels") or {})
    labels.update(desired.get("labels") or {})
    if labels:
        meta["labels"] = labels
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in owned_annotations
    }
    annotations.update(desired.get("annotations") or {})
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return meta


def merge_owned(
    existing: Mapping[str, Any],
    desired: Mapping[str, Any],
    owned_spec: Collection[str],
    owned_annotations: Collection[str] = (),
) -> Manifest:
    """`existing` with the owned spec keys and our metadata taken from `desired`.

    The result keeps existing.metadata.resourceVersion, so a PUT of it is a
    compare-and-swap against the version that was read.
    """
    merged = copy.deepcopy(dict(existing))
    merged["apiVersion"] = desired["apiVersion"]
    merged["metadata"] = _merge_metadata(
        existing.get("metadata") or {}, desired["metadata"], owned_annotations
    )
    spec = dict(merged.get("spec") or {})
    for key in owned_spec:
        if key in desired["spec"]:
            spec[key] = copy.deepcopy(desired["spec"][key])
        else:
            spec.pop(key, None)
    merged["spec"] = spec
    return merged


def _model_of(rule: Mapping[str, Any]) -> str | None:
    for match in rule.get("matches") or []:
        for header in match.get("headers") or []:
            if header.get("name") == MODEL_HEADER:
                value = header.get("value")
                return value if isinstance(value, str) else None
    return None


def _find_rule(rules: list[Any], desired_rule: Mapping[str, Any]) -> int | None:
    """Our rule in an existing route: by rule name, else by the model it matches, else the
    only rule there is."""
    name = desired_rule.get("name")
    if name is not None:
        for i, rule in enumerate(rules):
            if isinstance(rule, Mapping) and rule.get("name") == name:
                return i
    model = _model_of(desired_rule)
    for i, rule in enumerate(rules):
        if isinstance(rule, Mapping) and _model_of(rule) == model:
            return i
    return 0 if len(rules) == 1 else None


def _merge_backend_refs(existing: list[Any], desired: list[Manifest]) -> list[Manifest]:
    by_name = {
        ref.get("name"): ref for ref in existing if isinstance(ref, Mapping) and "name" in ref
    }
    merged: list[Manifest] = []
    for ref in desired:
        base = {
            k: v
            for k, v in copy.deepcopy(dict(by_name.get(ref["name"], {}))).items()
            if k not in _OWNED_BACKEND_REF_FIELDS
        }
        merged.append({**base, **ref})
    return merged


def merge_owned_route(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> Manifest:
    """An AIGatewayRoute update: our rule's matches and backendRefs, parentRefs and costs.

    Other rules, the rule's timeouts, and each backendRef's fields we do not model (e.g.
    headerMutation) are kept.
    """
    merged = merge_owned(existing, desired, ROUTE_OWNED_SPEC, ROUTE_OWNED_ANNOTATIONS)
    (desired_rule,) = desired["spec"]["rules"]
    rules = copy.deepcopy(list(merged["spec"].get("rules") or []))
    index = _find_rule(rules, desired_rule)
    if index is None:
        rules.append(copy.deepcopy(desired_rule))
    else:
        rule = dict(rules[index])
        rule.pop("name", None)
        rule.update({k: copy.deepcopy(v) for k, v in desired_rule.items() if k != "backendRefs"})
        rule["backendRefs"] = _merge_backend_refs(
            list(rule.get("backendRefs") or []), desired_rule["backendRefs"]
        )
        rules[index] = rule
    merged["spec"]["rules"] = rules
    return merged
