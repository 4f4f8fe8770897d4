"""AIGatewayRoute: build the object of a model, parse a model and the status back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rollout.config import check_dns1123_label
from rollout.gateway.constants import AI_GATEWAY_ROUTE, MODEL_HEADER, VARIANTS_ANNOTATION
from rollout.gateway.manifests._common import Manifest, _gateway_parent_ref, _metadata
from rollout.gateway.manifests._parse import (
    _child_path,
    _construct,
    _Meta,
    _Node,
    _read_metadata,
    _root,
    _type_name,
)
from rollout.gateway.models import (
    AIGatewayRoute,
    AIGatewayRouteStatus,
    Condition,
    LLMRequestCost,
    RateLimitConfig,
    VariantTag,
    WeightedBackend,
)

# ============================================================================================
# AIGatewayRoute
# ============================================================================================


def _build_backend_ref(backend: WeightedBackend) -> Manifest:
    ref: Manifest = {"name": backend.name}
    if backend.namespace is not None:
        ref["namespace"] = backend.namespace
    # Written even when they equal the CRD defaults, so the stored object says what we meant.
    ref["weight"] = backend.weight
    ref["priority"] = backend.priority
    if backend.model_name_override is not None:
        ref["modelNameOverride"] = backend.model_name_override
    return ref


def _build_cost(cost: LLMRequestCost) -> Manifest:
    out: Manifest = {"metadataKey": cost.metadata_key, "type": cost.type.value}
    if cost.cel is not None:
        out["cel"] = cost.cel
    return out


def _variants_annotation(backends: Sequence[WeightedBackend]) -> dict[str, str]:
    tags = {b.name: b.variant_tag.value for b in backends if b.variant_tag is not None}
    if not tags:
        return {}
    return {VARIANTS_ANNOTATION: json.dumps(tags, sort_keys=True, separators=(",", ":"))}


def build_route_manifest(
    route: AIGatewayRoute,
    *,
    api_version: str,
    gateway_name: str,
    gateway_namespace: str,
    default_namespace: str,
) -> Manifest:
    """The AIGatewayRoute object for `route`.

    `api_version` is the served version of aigateway.envoyproxy.io ("v1beta1" or "v1alpha1").
    `route.rate_limit` is not part of this object: build it with
    build_rate_limit_policy_manifest.
    """
    rule: Manifest = {}
    if route.rule_name is not None:
        rule["name"] = route.rule_name
    rule["matches"] = [
        {"headers": [{"type": "Exact", "name": MODEL_HEADER, "value": route.model_name}]}
    ]
    rule["backendRefs"] = [_build_backend_ref(b) for b in route.backends]
    spec: Manifest = {
        "parentRefs": [_gateway_parent_ref(gateway_name, gateway_namespace)],
        "rules": [rule],
    }
    if route.llm_request_costs:
        spec["llmRequestCosts"] = [_build_cost(c) for c in route.llm_request_costs]
    namespace = route.namespace or check_dns1123_label(default_namespace)
    return {
        "apiVersion": AI_GATEWAY_ROUTE.api_version(api_version),
        "kind": AI_GATEWAY_ROUTE.kind,
        "metadata": _metadata(
            route.name, namespace, route.labels, _variants_annotation(route.backends)
        ),
        "spec": spec,
    }


def _parse_variant_tags(meta: _Meta) -> _Node | None:
    """The decoded variants annotation, as a node so bad entries are reported with a path."""
    raw = meta.annotations.get(VARIANTS_ANNOTATION)
    if raw is None:
        return None
    path = _child_path(_child_path(meta.node.path, "annotations"), VARIANTS_ANNOTATION)
    node = _Node(raw, path, meta.node.ref)
    try:
        decoded = json.loads(raw)
    except ValueError:
        node.fail("expected a JSON object {backend name: variant tag}, got invalid JSON")
    if not isinstance(decoded, dict):
        node.fail(f"expected a JSON object {{backend name: tag}}, got {_type_name(decoded)}")
    return _Node(decoded, path, meta.node.ref)


def _variant_tag(tags: _Node | None, backend_name: str) -> VariantTag | None:
    # Entries for backends no longer in the route are ignored: someone may have removed one.
    child = None if tags is None else tags.get(backend_name)
    if child is None:
        return None
    value = child.string()
    try:
        return VariantTag(value)
    except ValueError:
        allowed = ", ".join(t.value for t in VariantTag)
        child.fail(f"expected a variant tag ({allowed}), got {value!r}")


def _parse_model_match(rule: _Node) -> str:
    matches = rule.get("matches")
    if matches is None:
        rule.unsupported(f"a rule without a {MODEL_HEADER} match (it matches every model)")
    match = matches.exactly_one("match (the x-ai-eg-model header)")
    header = match.req("headers").exactly_one("header match (x-ai-eg-model)")
    name = header.req("name").string()
    if name.lower() != MODEL_HEADER:
        header.req("name").unsupported(f"expected the {MODEL_HEADER} header, got {name!r}")
    match_type = header.opt_string("type") or "Exact"  # CRD default
    if match_type != "Exact":
        header.req("type").unsupported(f"expected an Exact model match, got {match_type!r}")
    return header.req("value").string()


def _parse_weighted_backend(node: _Node, variant_tags: _Node | None) -> WeightedBackend:
    node.mapping()
    if node.get("group") is not None or node.get("kind") is not None:
        node.unsupported("InferencePool backend references")
    name = node.req("name").string()
    weight = node.opt_integer("weight")
    priority = node.opt_integer("priority")
    fields = {
        "name": name,
        "namespace": node.opt_string("namespace"),
        "weight": 1 if weight is None else weight,  # CRD defaults
        "priority": 0 if priority is None else priority,
        "variant_tag": _variant_tag(variant_tags, name),
        "model_name_override": node.opt_string("modelNameOverride"),
    }
    paths = {
        "name": ".name",
        "namespace": ".namespace",
        "weight": ".weight",
        "priority": ".priority",
        "model_name_override": ".modelNameOverride",
    }
    return _construct(node, WeightedBackend, fields, paths)


def _parse_cost(node: _Node) -> LLMRequestCost:
    fields = {
        "metadata_key": node.req("metadataKey").string(),
        "type": node.req("type").string(),
        "cel": node.opt_string("cel"),
    }
    paths = {"metadata_key": ".metadataKey", "type": ".type", "cel": ".cel"}
    return _construct(node, LLMRequestCost, fields, paths)


def parse_route_manifest(
    obj: Mapping[str, Any], *, rate_limit: RateLimitConfig | None = None
) -> AIGatewayRoute:
    """The route an AIGatewayRoute object describes.

    `rate_limit` is the config of the route's BackendTrafficPolicy, if the caller read one
    (parse_rate_limit_policy_manifest(...).config); the route object itself does not hold it.
    """
    root = _root(obj, AI_GATEWAY_ROUTE)
    meta = _read_metadata(root)
    spec = root.req("spec")
    rule = spec.req("rules").exactly_one("rule (one model per route)")
    variant_tags = _parse_variant_tags(meta)
    backends = [_parse_weighted_backend(n, variant_tags) for n in rule.req("backendRefs").items()]
    costs_node = spec.get("llmRequestCosts")
    costs = [] if costs_node is None else [_parse_cost(n) for n in costs_node.items()]
    fields = {
        "name": meta.name,
        "namespace": meta.namespace,
        "model_name": _parse_model_match(rule),
        "backends": backends,
        "rate_limit": rate_limit,
        "labels": meta.labels,
        "llm_request_costs": costs,
        "rule_name": rule.opt_string("name"),
    }
    paths = {
        "name": "metadata.name",
        "namespace": "metadata.namespace",
        "model_name": f"{rule.path}.matches[0].headers[0].value",
        "backends": f"{rule.path}.backendRefs",
        "labels": "metadata.labels",
        "llm_request_costs": "spec.llmRequestCosts",
        "rule_name": f"{rule.path}.name",
    }
    return _construct(root, AIGatewayRoute, fields, paths)


def parse_route_status(obj: Mapping[str, Any]) -> AIGatewayRouteStatus:
    """Readiness and conditions of an AIGatewayRoute (no status yet: not ready, no conditions).

    The AI Gateway controller writes one condition: Accepted=True when it reconciled the route,
    NotAccepted=False with the error as message otherwise. It never sets observedGeneration.
    """
    root = _root(obj, AI_GATEWAY_ROUTE)
    status = root.get("status")
    conditions_node = None if status is None else status.get("conditions")
    conditions = [] if conditions_node is None else conditions_node.items()
    parsed = [_parse_condition(n) for n in conditions]
    times = [c.last_transition_time for c in parsed if c.last_transition_time]
    return AIGatewayRouteStatus(
        ready=any(c.type == "Accepted" and c.status == "True" for c in parsed),
        conditions=parsed,
        # RFC 3339 UTC timestamps as Kubernetes writes them sort lexically.
        last_updated=max(times) if times else None,
    )


def _parse_condition(node: _Node) -> Condition:
    fields = {
        "type": node.req("type").string(),
        "status": node.req("status").string(),
        "reason": node.opt_string("reason") or "",
        "message": node.opt_string("message") or "",
        "last_transition_time": node.opt_string("lastTransitionTime"),
        "observed_generation": node.opt_integer("observedGeneration"),
    }
    paths = {"status": ".status", "type": ".type"}
    return _construct(node, Condition, fields, paths)
