"""Pure translation between the models and Kubernetes manifests (plain JSON-shaped dicts).

This module is the boundary: dicts go in and out of the API client, models everywhere else.
Nothing here does I/O or imports the kubernetes package.

Laws (tested with hypothesis):
- For every valid model x with its namespace set, parse(build(x)) == x. A model whose namespace
  is None comes back with the default namespace the builder used.
- A route's rate limit lives in a separate BackendTrafficPolicy, so the route law reads
  parse_route_manifest(build_route_manifest(r), rate_limit=parse_rate_limit_policy_manifest(
  build_rate_limit_policy_manifest(r.name, ns, r.rate_limit, ...)).config) == r.
- Parsing never raises anything but MalformedObjectError (or its subclass
  UnsupportedObjectError) for a bad object, naming the object and the field path.

Round-trip details:
- The builders add `managed-by: model-registry` to the caller's labels (in a new dict); the
  models never hold it (see models.py), so parsing drops it. Use `is_managed()` on the raw object
  to check ownership.
- Variant tags are not a CRD field: the route builder stores them in the annotation
  `rollout.model-registry.io/variants` as a JSON object {backend name: tag}, omitted when no
  backend has a tag. Other annotations belong to whoever set them and are not modelled.
- CRD defaults the API server fills in (weight 1, priority 0, header match type Exact,
  modelsOwnedBy, parentRef group/kind) parse to the same model as the manifest we built.
- Fields the models do not represent but that do not change what the models say (timeouts,
  header/body mutations, hostnames, Backend tls/appProtocols, ...) are ignored on parse; do not
  replace whole objects built from a parsed model if others may have set such fields: patch.
- Structures the models cannot represent (several rules, other matches, InferencePool refs,
  unix endpoints, extra rate-limit rules, ...) raise UnsupportedObjectError.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from rollout.config import check_dns1123_label, check_dns1123_subdomain
from rollout.gateway.constants import (
    AI_GATEWAY_METADATA_NAMESPACE,
    AI_GATEWAY_ROUTE,
    AI_SERVICE_BACKEND,
    BACKEND,
    BACKEND_TRAFFIC_POLICY,
    GATEWAY_API_GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MODEL_HEADER,
    ROUTE_ANNOTATION,
    VARIANTS_ANNOTATION,
    ResourceType,
)
from rollout.gateway.errors import (
    InvalidError,
    MalformedObjectError,
    StatusCause,
    UnsupportedObjectError,
)
from rollout.gateway.models import (
    MAX_WEIGHT,
    AIGatewayRoute,
    AIGatewayRouteStatus,
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    BudgetPeriod,
    Condition,
    FQDNEndpoint,
    IPEndpoint,
    LLMRequestCost,
    RateLimitConfig,
    RateLimitPolicy,
    RateLimitTarget,
    RouteSnapshot,
    RuleWeights,
    VariantTag,
    WeightedBackend,
    check_qualified_name,
)

Manifest = dict[str, Any]
JSONPatch = list[dict[str, Any]]

_M = TypeVar("_M", bound=BaseModel)

# EG v1.8 units; there is no Week before v1.9.
_UNIT_OF_PERIOD: Mapping[BudgetPeriod, str] = {
    BudgetPeriod.PER_SECOND: "Second",
    BudgetPeriod.PER_MINUTE: "Minute",
    BudgetPeriod.HOURLY: "Hour",
    BudgetPeriod.DAILY: "Day",
    BudgetPeriod.MONTHLY: "Month",
    BudgetPeriod.YEARLY: "Year",
}
_PERIOD_OF_UNIT: Mapping[str, BudgetPeriod] = {u: p for p, u in _UNIT_OF_PERIOD.items()}
_RATE_LIMIT_SUFFIX = "-ratelimit"
_MAX_NAME = 253


# ============================================================================================
# Shared helpers
# ============================================================================================


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {**labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": namespace, "labels": _labels(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether a raw object carries our ownership label (never raises on odd shapes)."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _gateway_parent_ref(gateway_name: str, gateway_namespace: str) -> Manifest:
    return {
        "group": GATEWAY_API_GROUP,
        "kind": "Gateway",
        "name": check_dns1123_subdomain(gateway_name),
        "namespace": check_dns1123_label(gateway_namespace),
    }


def rate_limit_policy_name(route_name: str) -> str:
    """Name of the BackendTrafficPolicy for a route: `<route>-ratelimit`, hashed if too long.

    Deterministic, so the adapter can find the policy from the route name alone.
    """
    check_dns1123_subdomain(route_name)
    name = f"{route_name}{_RATE_LIMIT_SUFFIX}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(route_name.encode()).hexdigest()[:10]
    keep = _MAX_NAME - len(_RATE_LIMIT_SUFFIX) - len(digest) - 1
    # A cut may end on '-' or '.', which cannot precede '-' in a DNS subdomain part.
    stem = route_name[:keep].rstrip("-.")
    return f"{stem}-{digest}{_RATE_LIMIT_SUFFIX}"


# ============================================================================================
# Reading raw objects with field paths
# ============================================================================================

_JSON_TYPE_NAMES: Mapping[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "object"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.replace("-", "").replace("_", "").isalnum():
        return f"{path}.{key}" if path else key
    return f"{path}[{key}]"  # annotation keys with '/' and '.'


@dataclass(frozen=True)
class _Ref:
    kind: str
    namespace: str | None
    name: str | None

    def identity(self) -> dict[str, str | None]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name}


@dataclass(frozen=True)
class _Node:
    """A value inside a raw object, with its path, so every complaint names the field."""

    value: object
    path: str
    ref: _Ref

    def fail(self, detail: str) -> NoReturn:
        raise MalformedObjectError(detail, path=self.path, **self.ref.identity())

    def unsupported(self, detail: str) -> NoReturn:
        raise UnsupportedObjectError(
            f"not representable by this adapter: {detail}", path=self.path, **self.ref.identity()
        )

    def _expected(self, what: str) -> NoReturn:
        self.fail(f"expected {what}, got {_type_name(self.value)}")

    def mapping(self) -> Mapping[str, object]:
        if not isinstance(self.value, Mapping):
            self._expected("an object")
        return self.value

    def get(self, key: str) -> _Node | None:
        """The child, or None when absent or null (Kubernetes treats both as unset)."""
        value = self.mapping().get(key)
        return None if value is None else _Node(value, _child_path(self.path, key), self.ref)

    def req(self, key: str) -> _Node:
        child = self.get(key)
        if child is None:
            _Node(None, _child_path(self.path, key), self.ref).fail("required field is missing")
        return child

    def string(self) -> str:
        if not isinstance(self.value, str):
            self._expected("a string")
        return self.value

    def integer(self) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            self._expected("an integer")
        return self.value

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            self._expected("an array")
        return [_Node(v, _child_path(self.path, i), self.ref) for i, v in enumerate(self.value)]

    def string_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.mapping().items():
            child = _Node(value, _child_path(self.path, str(key)), self.ref)
            if not isinstance(key, str):
                child.fail(f"expected string keys, got {_type_name(key)}")
            out[key] = child.string()
        return out

    def opt_string(self, key: str) -> str | None:
        child = self.get(key)
        return None if child is None else child.string()

    def opt_integer(self, key: str) -> int | None:
        child = self.get(key)
        return None if child is None else child.integer()

    def exactly_one(self, what: str) -> _Node:
        nodes = self.items()
        if len(nodes) != 1:
            self.unsupported(f"expected exactly one {what}, got {len(nodes)}")
        return nodes[0]


def _root(obj: object, rtype: ResourceType) -> _Node:
    """The top node; reads name/namespace leniently first so even errors about them name them."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    ref = _Ref(
        rtype.kind,
        namespace if isinstance(namespace, str) else None,
        name if isinstance(name, str) else None,
    )
    root = _Node(obj, "", ref)
    root.mapping()
    kind = root.opt_string("kind")
    if kind is not None and kind != rtype.kind:
        root.req("kind").fail(f"expected {rtype.kind!r}, got {kind!r}")
    api_version = root.opt_string("apiVersion")
    if api_version is not None and api_version.partition("/")[0] != rtype.group:
        root.req("apiVersion").fail(f"expected group {rtype.group!r}, got {api_version!r}")
    return root


@dataclass(frozen=True)
class _Meta:
    node: _Node
    name: str
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]


def _read_metadata(root: _Node) -> _Meta:
    meta = root.req("metadata")
    labels = meta.get("labels")
    annotations = meta.get("annotations")
    return _Meta(
        node=meta,
        name=meta.req("name").string(),
        namespace=meta.opt_string("namespace"),
        labels={} if labels is None else labels.string_map(),
        annotations={} if annotations is None else annotations.string_map(),
    )


def _strip_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _construct(
    node: _Node, cls: type[_M], fields: Mapping[str, object], paths: Mapping[str, str]
) -> _M:
    """Validate `fields` into `cls`; a refusal becomes MalformedObjectError at the field's path.

    `paths` maps model field names to their path: relative to `node` when it starts with '.',
    else from the object's root. Model-level refusals are reported at `node`.
    """
    try:
        return cls.model_validate(dict(fields))
    except ValidationError as exc:
        located = [
            (_error_path(node, paths, e["loc"]), _strip_value_error(e["msg"])) for e in exc.errors()
        ]
        path, detail = located[0]
        also = "".join(f"; also {p or 'the object'}: {m}" for p, m in located[1:])
        raise MalformedObjectError(detail + also, path=path, **node.ref.identity()) from None


def _error_path(node: _Node, paths: Mapping[str, str], loc: tuple[int | str, ...]) -> str:
    field_path = paths.get(str(loc[0]), "") if loc else ""
    relative = not field_path or field_path.startswith(".")
    return (f"{node.path}{field_path}" if relative else field_path).lstrip(".")


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


# ============================================================================================
# AIServiceBackend
# ============================================================================================


def build_service_backend_manifest(
    backend: AIServiceBackend, *, api_version: str, default_namespace: str
) -> Manifest:
    """The AIServiceBackend object; `api_version` as for build_route_manifest."""
    schema: Manifest = {"name": backend.api_schema.name.value}
    if backend.api_schema.version is not None:
        schema["version"] = backend.api_schema.version
    if backend.api_schema.prefix is not None:
        schema["prefix"] = backend.api_schema.prefix
    ref = backend.backend_ref
    backend_ref: Manifest = {"name": ref.name}
    if ref.namespace is not None:
        backend_ref["namespace"] = ref.namespace
    backend_ref |= {"group": ref.group, "kind": ref.kind}  # CEL demands both, explicitly
    namespace = backend.namespace or check_dns1123_label(default_namespace)
    return {
        "apiVersion": AI_SERVICE_BACKEND.api_version(api_version),
        "kind": AI_SERVICE_BACKEND.kind,
        "metadata": _metadata(backend.name, namespace, backend.labels, {}),
        "spec": {"schema": schema, "backendRef": backend_ref},
    }


def parse_service_backend_manifest(obj: Mapping[str, Any]) -> AIServiceBackend:
    root = _root(obj, AI_SERVICE_BACKEND)
    meta = _read_metadata(root)
    spec = root.req("spec")
    schema_node = spec.req("schema")
    schema = _construct(
        schema_node,
        APISchema,
        {
            "name": schema_node.req("name").string(),
            "version": schema_node.opt_string("version"),
            "prefix": schema_node.opt_string("prefix"),
        },
        {"name": ".name", "version": ".version", "prefix": ".prefix"},
    )
    ref_node = spec.req("backendRef")
    ref_fields = {
        "name": ref_node.req("name").string(),
        "namespace": ref_node.opt_string("namespace"),
        # Absent means the CRD defaults ('' and Service), which its CEL rule refuses anyway.
        "group": ref_node.opt_string("group") or "",
        "kind": ref_node.opt_string("kind") or "Service",
    }
    ref_paths = {"name": ".name", "namespace": ".namespace", "group": ".group", "kind": ".kind"}
    backend_ref = _construct(ref_node, BackendRef, ref_fields, ref_paths)
    return _construct(
        root,
        AIServiceBackend,
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "api_schema": schema,
            "backend_ref": backend_ref,
            "labels": meta.labels,
        },
        {"name": "metadata.name", "namespace": "metadata.namespace", "labels": "metadata.labels"},
    )


# ============================================================================================
# Backend
# ============================================================================================


def _build_endpoint(endpoint: FQDNEndpoint | IPEndpoint) -> Manifest:
    if isinstance(endpoint, FQDNEndpoint):
        return {"fqdn": {"hostname": endpoint.hostname, "port": endpoint.port}}
    return {"ip": {"address": endpoint.address, "port": endpoint.port}}


def build_backend_manifest(backend: Backend, *, default_namespace: str) -> Manifest:
    """The Envoy Gateway Backend object (gateway.envoyproxy.io/v1alpha1)."""
    namespace = backend.namespace or check_dns1123_label(default_namespace)
    return {
        "apiVersion": BACKEND.api_version(BACKEND.preferred_version),
        "kind": BACKEND.kind,
        "metadata": _metadata(backend.name, namespace, backend.labels, {}),
        "spec": {"endpoints": [_build_endpoint(e) for e in backend.endpoints]},
    }


def _parse_endpoint(node: _Node) -> FQDNEndpoint | IPEndpoint:
    present = [key for key in ("fqdn", "ip", "unix") if node.get(key) is not None]
    if len(present) != 1:
        node.fail(f"expected exactly one of fqdn, ip or unix, got {present or 'none'}")
    if present == ["unix"]:
        node.req("unix").unsupported("unix socket endpoints")
    inner = node.req(present[0])
    port = inner.req("port").integer()
    if present == ["fqdn"]:
        hostname = inner.req("hostname").string()
        fields: dict[str, object] = {"hostname": hostname, "port": port}
        return _construct(inner, FQDNEndpoint, fields, {"hostname": ".hostname", "port": ".port"})
    fields = {"address": inner.req("address").string(), "port": port}
    return _construct(inner, IPEndpoint, fields, {"address": ".address", "port": ".port"})


def parse_backend_manifest(obj: Mapping[str, Any]) -> Backend:
    root = _root(obj, BACKEND)
    meta = _read_metadata(root)
    spec = root.req("spec")
    endpoints = [_parse_endpoint(n) for n in spec.req("endpoints").items()]
    return _construct(
        root,
        Backend,
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "endpoints": endpoints,
            "labels": meta.labels,
        },
        {
            "name": "metadata.name",
            "namespace": "metadata.namespace",
            "endpoints": "spec.endpoints",
            "labels": "metadata.labels",
        },
    )


# ============================================================================================
# BackendTrafficPolicy (rate limit)
# ============================================================================================


def _tenant_selector(header: str) -> list[Manifest]:
    return [{"headers": [{"name": header, "type": "Distinct"}]}]


def build_rate_limit_policy_manifest(
    route_name: str,
    namespace: str,
    config: RateLimitConfig,
    *,
    route_llm_request_costs: Sequence[LLMRequestCost],
    gateway_name: str | None = None,
) -> Manifest:
    """The BackendTrafficPolicy enforcing `config` for the route `route_name`.

    The token rule charges each tenant (a distinct value of `tenant_header`) nothing per request
    and, after each response, the tokens the route's llmRequestCosts wrote under
    `cost_metadata_key`. Raises InvalidError when that key is not one of
    `route_llm_request_costs` (or, if None, the route has no single TotalToken cost): such a
    budget would never be charged. With `requests_per_min`, a second rule counts requests.

    `gateway_name` is required when config.target is Gateway. A policy only attaches to
    objects of its own namespace, so a Gateway-wide policy must be created in the Gateway's
    namespace.
    """
    check_dns1123_subdomain(route_name)
    check_dns1123_label(namespace)
    resolved = config.resolved(route_llm_request_costs)
    if resolved.target is RateLimitTarget.GATEWAY:
        if gateway_name is None:
            raise InvalidError("a Gateway-wide rate limit needs gateway_name")
        target_name = check_dns1123_subdomain(gateway_name)
    else:
        target_name = route_name
    token_rule: Manifest = {
        "clientSelectors": _tenant_selector(resolved.tenant_header),
        "limit": {
            "requests": resolved.token_budget,
            "unit": _UNIT_OF_PERIOD[resolved.budget_period],
        },
        "cost": {
            # Charged 0 on the request, the token count after the response.
            "request": {"from": "Number", "number": 0},
            "response": {
                "from": "Metadata",
                "metadata": {
                    "namespace": AI_GATEWAY_METADATA_NAMESPACE,
                    "key": resolved.cost_metadata_key,
                },
            },
        },
    }
    rules = [token_rule]
    if resolved.requests_per_min is not None:
        rules.append(
            {
                "clientSelectors": _tenant_selector(resolved.tenant_header),
                "limit": {"requests": resolved.requests_per_min, "unit": "Minute"},
            }
        )
    return {
        "apiVersion": BACKEND_TRAFFIC_POLICY.api_version(BACKEND_TRAFFIC_POLICY.preferred_version),
        "kind": BACKEND_TRAFFIC_POLICY.kind,
        "metadata": _metadata(
            rate_limit_policy_name(route_name), namespace, {}, {ROUTE_ANNOTATION: route_name}
        ),
        "spec": {
            "targetRefs": [
                {"group": GATEWAY_API_GROUP, "kind": resolved.target.value, "name": target_name}
            ],
            "rateLimit": {"type": "Global", "global": {"rules": rules}},
        },
    }


@dataclass(frozen=True)
class _RateRule:
    node: _Node
    tenant_header: str
    requests: int
    unit: str
    cost_key: str | None  # None: a plain request-count rule


def _parse_tenant_header(rule: _Node) -> str:
    selector = rule.req("clientSelectors").exactly_one("client selector (the tenant header)")
    extra = sorted(str(k) for k in selector.mapping() if k != "headers")
    if extra:
        selector.unsupported(f"client selectors other than one header: {extra}")
    header = selector.req("headers").exactly_one("tenant header")
    header_type = header.opt_string("type") or "Exact"
    if header_type != "Distinct":
        header.req("type").unsupported(f"expected a Distinct tenant header, got {header_type!r}")
    return header.req("name").string()


def _parse_cost_key(cost: _Node) -> str:
    request = cost.req("request")
    if request.req("from").string() != "Number" or request.opt_integer("number") not in (0, None):
        request.unsupported("expected a request cost of Number 0 (only tokens count)")
    response = cost.req("response")
    if response.req("from").string() != "Metadata":
        response.req("from").unsupported("expected a response cost read from Metadata")
    metadata = response.req("metadata")
    namespace = metadata.req("namespace").string()
    if namespace != AI_GATEWAY_METADATA_NAMESPACE:
        metadata.req("namespace").unsupported(
            f"expected metadata namespace {AI_GATEWAY_METADATA_NAMESPACE!r}, got {namespace!r}"
        )
    return metadata.req("key").string()


def _parse_rate_rule(rule: _Node) -> _RateRule:
    shadow = rule.get("shadowMode")
    if shadow is not None and shadow.value is not False:
        shadow.unsupported("shadow-mode rules (they do not enforce the limit)")
    limit = rule.req("limit")
    unit = limit.req("unit").string()
    if unit not in _PERIOD_OF_UNIT:
        limit.req("unit").fail(f"expected one of {', '.join(_PERIOD_OF_UNIT)}, got {unit!r}")
    cost = rule.get("cost")
    return _RateRule(
        node=rule,
        tenant_header=_parse_tenant_header(rule),
        requests=limit.req("requests").integer(),
        unit=unit,
        cost_key=None if cost is None else _parse_cost_key(cost),
    )


def _split_rules(rules_node: _Node) -> tuple[_RateRule, _RateRule | None]:
    rules = [_parse_rate_rule(n) for n in rules_node.items()]
    token = [r for r in rules if r.cost_key is not None]
    count = [r for r in rules if r.cost_key is None]
    if len(token) != 1:
        rules_node.unsupported(f"expected exactly one token-budget rule, got {len(token)}")
    if len(count) > 1:
        rules_node.unsupported(f"expected at most one request-count rule, got {len(count)}")
    rpm = count[0] if count else None
    if rpm is not None:
        if rpm.unit != "Minute":
            rpm.node.req("limit").req("unit").unsupported(
                f"expected the request-count rule per Minute, got {rpm.unit!r}"
            )
        if rpm.tenant_header != token[0].tenant_header:
            rpm.node.req("clientSelectors").unsupported(
                f"the request-count rule limits header {rpm.tenant_header!r}, the token rule "
                f"{token[0].tenant_header!r}"
            )
    return token[0], rpm


def parse_rate_limit_policy_manifest(obj: Mapping[str, Any]) -> RateLimitPolicy:
    """The rate limit a BackendTrafficPolicy built by build_rate_limit_policy_manifest holds.

    Every rule is read: exactly one token-budget rule and at most one request-count rule.
    """
    root = _root(obj, BACKEND_TRAFFIC_POLICY)
    meta = _read_metadata(root)
    if meta.namespace is None:
        meta.node.req("namespace")
    spec = root.req("spec")
    if spec.get("targetRef") is not None or spec.get("targetSelectors") is not None:
        spec.unsupported("targetRef/targetSelectors; expected one entry in targetRefs")
    target = spec.req("targetRefs").exactly_one("target")
    group = target.req("group").string()
    if group != GATEWAY_API_GROUP:
        target.req("group").unsupported(f"expected group {GATEWAY_API_GROUP!r}, got {group!r}")
    kind = target.req("kind").string()
    if kind not in {t.value for t in RateLimitTarget}:
        target.req("kind").unsupported(f"expected an HTTPRoute or Gateway target, got {kind!r}")
    target_name = target.req("name").string()

    route_name = meta.annotations.get(ROUTE_ANNOTATION)
    annotation_path = _child_path("metadata.annotations", ROUTE_ANNOTATION)
    if route_name is None:
        if kind != RateLimitTarget.HTTP_ROUTE:
            _Node(None, annotation_path, root.ref).fail(
                "required for a Gateway-wide policy: it names the route the policy belongs to"
            )
        route_name = target_name
    elif kind == RateLimitTarget.HTTP_ROUTE and route_name != target_name:
        _Node(route_name, annotation_path, root.ref).fail(
            f"names route {route_name!r} but the policy targets HTTPRoute {target_name!r}"
        )

    rate_limit = spec.req("rateLimit")
    limit_type = rate_limit.req("type").string()
    if limit_type != "Global":
        rate_limit.req("type").unsupported(f"expected a Global rate limit, got {limit_type!r}")
    token, rpm = _split_rules(rate_limit.req("global").req("rules"))

    config = _construct(
        token.node,
        RateLimitConfig,
        {
            "tenant_header": token.tenant_header,
            "token_budget": token.requests,
            "budget_period": _PERIOD_OF_UNIT[token.unit],
            "requests_per_min": None if rpm is None else rpm.requests,
            "target": kind,
            "cost_metadata_key": token.cost_key,
        },
        {
            "tenant_header": ".clientSelectors[0].headers[0].name",
            "token_budget": ".limit.requests",
            "requests_per_min": ".limit.requests",
            "cost_metadata_key": ".cost.response.metadata.key",
        },
    )
    return _construct(
        root,
        RateLimitPolicy,
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "route_name": route_name,
            "target_name": target_name,
            "config": config,
        },
        {
            "name": "metadata.name",
            "namespace": "metadata.namespace",
            "route_name": annotation_path,
            "target_name": "spec.targetRefs[0].name",
        },
    )


# ============================================================================================
# Weight updates (JSON Patch)
# ============================================================================================


def _pointer(*parts: str | int) -> str:
    """RFC 6901 JSON Pointer; '~' and '/' inside a key are escaped as ~0 and ~1."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _check_weights(weights: Mapping[str, int]) -> None:
    if not weights:
        raise InvalidError("no weights given")
    bad = [
        StatusCause(
            field=f"weights[{name}]",
            reason="FieldValueInvalid",
            message=f"weight must be an integer 0..{MAX_WEIGHT}, got {value!r}",
        )
        for name, value in weights.items()
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_WEIGHT
    ]
    if bad:
        raise InvalidError("; ".join(str(c) for c in bad), causes=bad)


def _rule_backend_names(rule: _Node) -> list[str]:
    refs = rule.get("backendRefs")
    return [] if refs is None else [ref.req("name").string() for ref in refs.items()]


def _select_rule(
    rules: list[_Node],
    names: list[list[str]],
    wanted: set[str],
    rule: int | str | None,
    err: Callable[[str], InvalidError],
) -> int:
    if isinstance(rule, int) and not isinstance(rule, bool):
        if not 0 <= rule < len(rules):
            raise err(f"rule index {rule} out of range: the route has {len(rules)} rule(s)")
        return rule
    if isinstance(rule, str):
        matching = [i for i, r in enumerate(rules) if r.opt_string("name") == rule]
        if not matching:
            raise err(f"no rule named {rule!r}")
        return matching[0]
    holding = [i for i, rule_names in enumerate(names) if wanted <= set(rule_names)]
    if len(holding) == 1:
        return holding[0]
    if len(holding) > 1:
        raise err(f"backends {sorted(wanted)} appear in rules {holding}; select one with rule=")
    known = {n for rule_names in names for n in rule_names}
    unknown = sorted(wanted - known)
    if unknown:
        raise err(f"unknown backend(s) {unknown}; the route has {sorted(known)}")
    raise err(f"backends {sorted(wanted)} are not all in one rule; update one rule at a time")


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
    backend. Raises InvalidError for weights outside 0..100, unknown or ambiguous backend names,
    and for a result where every backend of the rule has weight 0 (no traffic at all) unless
    `allow_all_zero`; MalformedObjectError if `obj` is not a well-formed route.
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


def _annotation_operations(meta: _Node, annotations: Mapping[str, str]) -> JSONPatch:
    for key, value in annotations.items():
        try:
            check_qualified_name(key)
        except ValueError as exc:
            raise InvalidError(str(exc)) from None
        if not isinstance(value, str):
            raise InvalidError(f"annotation {key!r}: expected a string value, got {value!r}")
    if not annotations:
        return []
    existing = meta.get("annotations")
    if existing is None:
        return [
            {"op": "add", "path": _pointer("metadata", "annotations"), "value": dict(annotations)}
        ]
    existing.string_map()
    # `add` on an existing member replaces it (RFC 6902 4.1), so one op fits both cases.
    return [
        {"op": "add", "path": _pointer("metadata", "annotations", key), "value": value}
        for key, value in annotations.items()
    ]


def parse_route_snapshot(obj: Mapping[str, Any]) -> RouteSnapshot:
    """Weights per rule and annotations of ANY well-formed AIGatewayRoute (several rules,
    foreign fields and weights above 100 included); MalformedObjectError otherwise."""
    root = _root(obj, AI_GATEWAY_ROUTE)
    meta = _read_metadata(root)
    metadata = root.req("metadata")
    rules = []
    for rule in root.req("spec").req("rules").items():
        weights: dict[str, int] = {}
        refs = rule.get("backendRefs")  # optional in the CRD: a rule may have none
        for ref in [] if refs is None else refs.items():
            weight = ref.opt_integer("weight")
            weights[ref.req("name").string()] = 1 if weight is None else weight
        rules.append(RuleWeights(name=rule.opt_string("name"), weights=weights))
    return RouteSnapshot(
        namespace=metadata.req("namespace").string(),
        name=meta.name,
        uid=metadata.opt_string("uid"),
        resource_version=metadata.opt_string("resourceVersion"),
        api_version=root.req("apiVersion").string(),
        annotations=dict(meta.annotations),
        rules=rules,
        status=parse_route_status(obj),
    )


__all__ = [
    "JSONPatch",
    "Manifest",
    "build_backend_manifest",
    "build_rate_limit_policy_manifest",
    "build_route_manifest",
    "build_service_backend_manifest",
    "is_managed",
    "parse_backend_manifest",
    "parse_rate_limit_policy_manifest",
    "parse_route_manifest",
    "parse_route_snapshot",
    "parse_route_status",
    "parse_service_backend_manifest",
    "rate_limit_policy_name",
    "weight_patch_operations",
]
