"""Manifest building and parsing: round-trip laws, CRD conformance, refusals, weight patches."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.gateway.constants import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    ROUTE_ANNOTATION,
    VARIANTS_ANNOTATION,
)
from rollout.gateway.errors import InvalidError, MalformedObjectError, UnsupportedObjectError
from rollout.gateway.manifests import (
    build_backend_manifest,
    build_rate_limit_policy_manifest,
    build_route_manifest,
    build_service_backend_manifest,
    is_managed,
    parse_backend_manifest,
    parse_rate_limit_policy_manifest,
    parse_route_manifest,
    parse_route_status,
    parse_service_backend_manifest,
    rate_limit_policy_name,
    weight_patch_operations,
)
from rollout.gateway.models import (
    AIGatewayRoute,
    AIServiceBackend,
    APISchema,
    APISchemaName,
    Backend,
    BackendRef,
    BudgetPeriod,
    FQDNEndpoint,
    IPEndpoint,
    LLMRequestCost,
    LLMRequestCostType,
    RateLimitConfig,
    RateLimitPolicy,
    RateLimitTarget,
    VariantTag,
    WeightedBackend,
)
from rollout.localcluster.crds import default_crd_dirs

GATEWAY = {"gateway_name": "ai-gateway", "gateway_namespace": "envoy-gateway-system"}
DEFAULT_NS = "model-serving"
ROUTE_ARGS: dict[str, Any] = {"api_version": "v1beta1", **GATEWAY, "default_namespace": DEFAULT_NS}
TOTAL = LLMRequestCost(metadata_key="llm_total_token", type=LLMRequestCostType.TOTAL_TOKEN)

# ============================================================================================
# Strategies
# ============================================================================================

# Built from alphabets rather than st.from_regex: several times faster to generate.
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_MIXED = _ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _bracketed(edges: str, middle: str) -> st.SearchStrategy[str]:
    """1..10 characters from `edges + middle`, starting and ending with one of `edges`."""
    edge = st.sampled_from(edges)
    return edge | st.builds(
        lambda a, m, b: a + m + b, edge, st.text(edges + middle, max_size=8), edge
    )


dns_labels = _bracketed(_ALNUM, "-")
subdomains = st.lists(dns_labels, min_size=1, max_size=3).map(".".join)
name_parts = _bracketed(_MIXED, "-_.")
label_keys = name_parts | st.builds(lambda p, n: f"{p}/{n}", subdomains, name_parts)
label_maps = st.dictionaries(
    label_keys.filter(lambda k: k != MANAGED_BY_LABEL), st.just("") | name_parts, max_size=4
)
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
header_names = st.text(_MIXED + "!#$%&'*+-.^_`|~", min_size=1, max_size=20)
metadata_keys = st.text(_MIXED + "_.:-", min_size=1, max_size=20)
namespaces = st.none() | dns_labels


@st.composite
def weighted_backends(draw: st.DrawFn) -> list[WeightedBackend]:
    names = draw(st.lists(subdomains, min_size=1, max_size=6, unique=True))
    levels = draw(st.integers(1, len(names)))
    spare = len(names) - levels  # backends beyond one per level go to any level
    extra = draw(st.lists(st.integers(0, levels - 1), min_size=spare, max_size=spare))
    priorities = draw(st.permutations(list(range(levels)) + extra))
    return [
        WeightedBackend(
            name=name,
            namespace=draw(namespaces),
            weight=draw(st.integers(0, 100)),
            priority=priority,
            variant_tag=draw(st.none() | st.sampled_from(VariantTag)),
            model_name_override=draw(st.none() | texts),
        )
        for name, priority in zip(names, priorities, strict=True)
    ]


@st.composite
def llm_costs(draw: st.DrawFn) -> list[LLMRequestCost]:
    keys = draw(st.lists(metadata_keys, max_size=5, unique=True))
    costs = []
    for key in keys:
        cost_type = draw(st.sampled_from(LLMRequestCostType))
        cel = draw(texts) if cost_type is LLMRequestCostType.CEL else None
        costs.append(LLMRequestCost(metadata_key=key, type=cost_type, cel=cel))
    return costs


@st.composite
def rate_limits(draw: st.DrawFn, costs: list[LLMRequestCost]) -> RateLimitConfig:
    """A config valid for a route with `costs` (the caller must check one is possible)."""
    totals = [c for c in costs if c.type is LLMRequestCostType.TOTAL_TOKEN]
    keys = [c.metadata_key for c in costs]
    key_choices: st.SearchStrategy[str | None] = st.sampled_from(keys)
    if len(totals) == 1:
        key_choices = st.none() | key_choices
    return RateLimitConfig(
        tenant_header=draw(header_names),
        token_budget=draw(st.integers(1, 2**32 - 1)),
        budget_period=draw(st.sampled_from(BudgetPeriod)),
        requests_per_min=draw(st.none() | st.integers(1, 2**32 - 1)),
        target=draw(st.sampled_from(RateLimitTarget)),
        cost_metadata_key=draw(key_choices),
    )


@st.composite
def routes(
    draw: st.DrawFn, namespace: st.SearchStrategy[str | None] = namespaces
) -> AIGatewayRoute:
    costs = draw(llm_costs())
    rate_limit = draw(st.none() | rate_limits(costs)) if costs else None
    return AIGatewayRoute(
        name=draw(subdomains),
        namespace=draw(namespace),
        model_name=draw(texts),
        backends=draw(weighted_backends()),
        rate_limit=rate_limit,
        labels=draw(label_maps),
        llm_request_costs=costs,
        rule_name=draw(st.none() | subdomains),
    )


service_backends = st.builds(
    AIServiceBackend,
    name=subdomains,
    namespace=dns_labels,
    api_schema=st.builds(
        APISchema,
        name=st.sampled_from(APISchemaName),
        version=st.none() | texts,
        prefix=st.none() | texts,
    ),
    backend_ref=st.builds(BackendRef, name=subdomains, namespace=st.none() | dns_labels),
    labels=label_maps,
)

ports = st.integers(1, 65535)
fqdn_endpoints = st.lists(
    st.builds(FQDNEndpoint, hostname=subdomains, port=ports), min_size=1, max_size=4
)
ip_endpoints = st.lists(
    st.builds(IPEndpoint, address=st.ip_addresses(v=4).map(str), port=ports), min_size=1, max_size=4
)
backends = st.builds(
    Backend,
    name=subdomains,
    namespace=dns_labels,
    endpoints=fqdn_endpoints | ip_endpoints,
    labels=label_maps,
)


# The first use of a CRD schema parses a large YAML file.
NO_DEADLINE = settings(deadline=None)


def json_roundtrip(obj: Any) -> Any:
    """What the API server hands back: plain JSON, no shared Python objects."""
    return json.loads(json.dumps(obj))


# ============================================================================================
# Round-trip laws
# ============================================================================================


@given(routes(namespace=dns_labels))
def test_route_roundtrip(route: AIGatewayRoute) -> None:
    manifest = json_roundtrip(build_route_manifest(route, **ROUTE_ARGS))
    rate_limit = None
    if route.rate_limit is not None:
        policy = build_rate_limit_policy_manifest(
            route.name,
            DEFAULT_NS,
            route.rate_limit,
            route_llm_request_costs=route.llm_request_costs,
            gateway_name="ai-gateway",
        )
        rate_limit = parse_rate_limit_policy_manifest(json_roundtrip(policy)).config
    assert parse_route_manifest(manifest, rate_limit=rate_limit) == route


@given(routes(namespace=st.none()))
def test_route_without_namespace_gets_the_default(route: AIGatewayRoute) -> None:
    manifest = build_route_manifest(route, **ROUTE_ARGS)
    parsed = parse_route_manifest(manifest, rate_limit=route.rate_limit)
    assert parsed.namespace == DEFAULT_NS
    assert parsed == AIGatewayRoute.model_validate({**route.model_dump(), "namespace": DEFAULT_NS})


@NO_DEADLINE
@given(routes(), st.sampled_from(["v1beta1", "v1alpha1"]))
def test_route_manifest_conforms_to_the_crd(route: AIGatewayRoute, version: str) -> None:
    manifest = build_route_manifest(route, **{**ROUTE_ARGS, "api_version": version})
    assert manifest["apiVersion"] == f"aigateway.envoyproxy.io/{version}"
    assert_conforms(manifest, "aigateway.envoyproxy.io_aigatewayroutes.yaml", version)


@NO_DEADLINE
@given(service_backends)
def test_service_backend_roundtrip(backend: AIServiceBackend) -> None:
    manifest = build_service_backend_manifest(
        backend, api_version="v1beta1", default_namespace=DEFAULT_NS
    )
    assert_conforms(manifest, "aigateway.envoyproxy.io_aiservicebackends.yaml", "v1beta1")
    assert parse_service_backend_manifest(json_roundtrip(manifest)) == backend


@NO_DEADLINE
@given(backends)
def test_backend_roundtrip(backend: Backend) -> None:
    manifest = build_backend_manifest(backend, default_namespace=DEFAULT_NS)
    assert_conforms(manifest, "gateway.envoyproxy.io_backends.yaml", "v1alpha1")
    assert parse_backend_manifest(json_roundtrip(manifest)) == backend


@st.composite
def costs_and_rate_limits(draw: st.DrawFn) -> tuple[list[LLMRequestCost], RateLimitConfig]:
    costs = draw(llm_costs().filter(bool))
    return costs, draw(rate_limits(costs))


@NO_DEADLINE
@given(costs_and_rate_limits(), subdomains, dns_labels, subdomains)
def test_rate_limit_policy_roundtrip(
    costs_and_config: tuple[list[LLMRequestCost], RateLimitConfig],
    route_name: str,
    namespace: str,
    gateway_name: str,
) -> None:
    costs, config = costs_and_config
    manifest = build_rate_limit_policy_manifest(
        route_name, namespace, config, route_llm_request_costs=costs, gateway_name=gateway_name
    )
    assert_conforms(manifest, "gateway.envoyproxy.io_backendtrafficpolicies.yaml", "v1alpha1")
    gateway_wide = config.target is RateLimitTarget.GATEWAY
    assert parse_rate_limit_policy_manifest(json_roundtrip(manifest)) == RateLimitPolicy(
        name=rate_limit_policy_name(route_name),
        namespace=namespace,
        route_name=route_name,
        target_name=gateway_name if gateway_wide else route_name,
        config=config.resolved(costs),
    )
    # A resolved config (what a route holds) comes back unchanged.
    if config.cost_metadata_key is not None:
        assert parse_rate_limit_policy_manifest(manifest).config == config


# ============================================================================================
# CRD conformance: a structural check of built manifests against the real CRD schemas
# ============================================================================================

CRD_DIR = default_crd_dirs()[0]


@cache
def crd_schema(filename: str, version: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRD_DIR / filename).read_text(), Loader=loader)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def schema_violations(value: Any, schema: Mapping[str, Any], path: str = "") -> Iterator[str]:
    """OpenAPI checks the API server applies (CEL rules are asserted separately)."""
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: {value!r} not in {schema['enum']}"
    if kind == "object":
        if not isinstance(value, dict):
            yield f"{path}: expected object"
            return
        props = schema.get("properties")
        for key, child in value.items():
            if props is not None and key in props:
                yield from schema_violations(child, props[key], f"{path}.{key}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                yield f"{path}.{key}: unknown field (would be pruned)"
        for key in schema.get("required", []):
            if key not in value:
                yield f"{path}.{key}: required"
    elif kind == "array":
        if not isinstance(value, list):
            yield f"{path}: expected array"
            return
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            yield f"{path}: {len(value)} items outside [minItems, maxItems]"
        for i, item in enumerate(value):
            yield from schema_violations(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            yield f"{path}: expected string"
            return
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            yield f"{path}: length {len(value)} outside [minLength, maxLength]"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"{path}: {value!r} does not match {schema['pattern']}"
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            yield f"{path}: expected integer"
            return
        if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            yield f"{path}: {value} outside [minimum, maximum]"
    elif kind == "boolean" and not isinstance(value, bool):
        yield f"{path}: expected boolean"


def assert_conforms(manifest: Mapping[str, Any], filename: str, version: str) -> None:
    assert CRD_DIR.is_dir(), f"CRDs not found at {CRD_DIR}: set ROLLOUT_CRDS_DIRS"
    assert list(schema_violations(manifest, crd_schema(filename, version))) == []


def test_the_schema_checker_catches_what_the_api_server_would_refuse() -> None:
    # Guard against a checker that passes everything.
    route = AIGatewayRoute(name="r", model_name="m", backends=[WeightedBackend(name="b")])
    manifest = build_route_manifest(route, **ROUTE_ARGS)
    manifest["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    manifest["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    manifest["spec"]["llmRequestCosts"] = [{"metadataKey": "k", "type": "Tokens"}]
    assert CRD_DIR.is_dir(), f"CRDs not found at {CRD_DIR}: set ROLLOUT_CRDS_DIRS"
    found = list(
        schema_violations(
            manifest, crd_schema("aigateway.envoyproxy.io_aigatewayroutes.yaml", "v1beta1")
        )
    )
    assert len(found) == 3, found


# ============================================================================================
# Manifest shape (including the CEL rules the schema check does not cover)
# ============================================================================================


def canary_route(**overrides: Any) -> AIGatewayRoute:
    fields: dict[str, Any] = {
        "name": "llama",
        "namespace": "models",
        "model_name": "llama-3-8b",
        "backends": [
            WeightedBackend(name="llama-v1", weight=90, variant_tag=VariantTag.STABLE),
            WeightedBackend(
                name="llama-v2",
                namespace="canaries",
                weight=10,
                variant_tag=VariantTag.CANARY,
                model_name_override="llama-3-8b-v2",
            ),
            WeightedBackend(name="mistral", weight=1, priority=1),
        ],
        "labels": {"team": "ml"},
        "llm_request_costs": [TOTAL],
    }
    fields.update(overrides)
    return AIGatewayRoute(**fields)


def test_route_manifest_shape() -> None:
    manifest = build_route_manifest(canary_route(), **ROUTE_ARGS)
    assert manifest["apiVersion"] == "aigateway.envoyproxy.io/v1beta1"
    assert manifest["kind"] == "AIGatewayRoute"
    assert manifest["metadata"] == {
        "name": "llama",
        "namespace": "models",
        "labels": {"team": "ml", MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        "annotations": {VARIANTS_ANNOTATION: '{"llama-v1":"stable","llama-v2":"canary"}'},
    }
    assert manifest["spec"] == {
        "parentRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "ai-gateway",
                "namespace": "envoy-gateway-system",
            }
        ],
        "rules": [
            {
                "matches": [
                    {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "llama-3-8b"}]}
                ],
                "backendRefs": [
                    {"name": "llama-v1", "weight": 90, "priority": 0},
                    {
                        "name": "llama-v2",
                        "namespace": "canaries",
                        "weight": 10,
                        "priority": 0,
                        "modelNameOverride": "llama-3-8b-v2",
                    },
                    {"name": "mistral", "weight": 1, "priority": 1},
                ],
            }
        ],
        "llmRequestCosts": [{"metadataKey": "llm_total_token", "type": "TotalToken"}],
    }
    assert is_managed(manifest)


def test_building_does_not_share_or_mutate_the_models_labels() -> None:
    route = canary_route()
    manifest = build_route_manifest(route, **ROUTE_ARGS)
    manifest["metadata"]["labels"]["extra"] = "x"
    assert route.labels == {"team": "ml"}


def test_route_without_tags_or_costs_has_no_annotation_or_costs() -> None:
    route = AIGatewayRoute(name="r", model_name="m", backends=[WeightedBackend(name="b")])
    manifest = build_route_manifest(route, **ROUTE_ARGS)
    assert "annotations" not in manifest["metadata"]
    assert "llmRequestCosts" not in manifest["spec"]
    assert manifest["metadata"]["namespace"] == DEFAULT_NS


def test_rule_name_is_written() -> None:
    manifest = build_route_manifest(canary_route(rule_name="llama-rule"), **ROUTE_ARGS)
    assert manifest["spec"]["rules"][0]["name"] == "llama-rule"


def test_unknown_api_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported API version 'v1'"):
        build_route_manifest(canary_route(), **{**ROUTE_ARGS, "api_version": "v1"})


def test_bad_gateway_names_are_refused() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        build_route_manifest(canary_route(), **{**ROUTE_ARGS, "gateway_name": "AI_Gateway"})


def test_service_backend_writes_group_and_kind_explicitly() -> None:
    backend = AIServiceBackend(
        name="llama-v1",
        api_schema=APISchema(name=APISchemaName.AWS_BEDROCK),
        backend_ref=BackendRef(name="llama-v1-backend"),
    )
    manifest = build_service_backend_manifest(
        backend, api_version="v1alpha1", default_namespace="ns"
    )
    assert manifest["apiVersion"] == "aigateway.envoyproxy.io/v1alpha1"
    assert manifest["spec"] == {
        "schema": {"name": "AWSBedrock"},
        "backendRef": {
            "name": "llama-v1-backend",
            "group": "gateway.envoyproxy.io",
            "kind": "Backend",
        },
    }
    assert manifest["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def test_backend_manifest_shape() -> None:
    backend = Backend(
        name="llama-v1",
        endpoints=[FQDNEndpoint(hostname="llama-v1-predictor.models.svc.cluster.local", port=80)],
    )
    manifest = build_backend_manifest(backend, default_namespace="models")
    assert manifest["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert manifest["spec"] == {
        "endpoints": [
            {"fqdn": {"hostname": "llama-v1-predictor.models.svc.cluster.local", "port": 80}}
        ]
    }


def budget(**overrides: Any) -> RateLimitConfig:
    fields: dict[str, Any] = {
        "tenant_header": "x-tenant-id",
        "token_budget": 1_000_000,
        "budget_period": BudgetPeriod.MONTHLY,
    }
    fields.update(overrides)
    return RateLimitConfig(**fields)


def test_rate_limit_policy_shape() -> None:
    manifest = build_rate_limit_policy_manifest(
        "llama", "models", budget(requests_per_min=60), route_llm_request_costs=[TOTAL]
    )
    assert manifest["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert manifest["kind"] == "BackendTrafficPolicy"
    assert manifest["metadata"] == {
        "name": "llama-ratelimit",
        "namespace": "models",
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        "annotations": {ROUTE_ANNOTATION: "llama"},
    }
    tenant = [{"headers": [{"name": "x-tenant-id", "type": "Distinct"}]}]
    assert manifest["spec"] == {
        "targetRefs": [
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "llama"}
        ],
        "rateLimit": {
            "type": "Global",
            "global": {
                "rules": [
                    {
                        "clientSelectors": tenant,
                        "limit": {"requests": 1_000_000, "unit": "Month"},
                        "cost": {
                            "request": {"from": "Number", "number": 0},
                            "response": {
                                "from": "Metadata",
                                "metadata": {
                                    "namespace": "io.envoy.ai_gateway",
                                    "key": "llm_total_token",
                                },
                            },
                        },
                    },
                    {"clientSelectors": tenant, "limit": {"requests": 60, "unit": "Minute"}},
                ]
            },
        },
    }


@pytest.mark.parametrize(
    ("period", "unit"),
    [
        (BudgetPeriod.PER_SECOND, "Second"),
        (BudgetPeriod.PER_MINUTE, "Minute"),
        (BudgetPeriod.HOURLY, "Hour"),
        (BudgetPeriod.DAILY, "Day"),
        (BudgetPeriod.MONTHLY, "Month"),
        (BudgetPeriod.YEARLY, "Year"),
    ],
)
def test_budget_periods_map_to_envoy_gateway_units(period: BudgetPeriod, unit: str) -> None:
    manifest = build_rate_limit_policy_manifest(
        "r", "ns", budget(budget_period=period), route_llm_request_costs=[TOTAL]
    )
    assert manifest["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["unit"] == unit


def test_rate_limit_uses_the_same_key_as_the_routes_cost() -> None:
    costs = [LLMRequestCost(metadata_key="tokens_used", type=LLMRequestCostType.TOTAL_TOKEN)]
    manifest = build_rate_limit_policy_manifest("r", "ns", budget(), route_llm_request_costs=costs)
    rule = manifest["spec"]["rateLimit"]["global"]["rules"][0]
    assert rule["cost"]["response"]["metadata"]["key"] == "tokens_used"


def test_rate_limit_refuses_a_route_without_costs() -> None:
    with pytest.raises(InvalidError, match="TotalToken"):
        build_rate_limit_policy_manifest("r", "ns", budget(), route_llm_request_costs=[])


def test_rate_limit_refuses_a_key_the_route_does_not_write() -> None:
    with pytest.raises(InvalidError, match="'llm_output' is not written"):
        build_rate_limit_policy_manifest(
            "r", "ns", budget(cost_metadata_key="llm_output"), route_llm_request_costs=[TOTAL]
        )


def test_gateway_wide_rate_limit_targets_the_gateway() -> None:
    config = budget(target=RateLimitTarget.GATEWAY)
    with pytest.raises(InvalidError, match="gateway_name"):
        build_rate_limit_policy_manifest("r", "ns", config, route_llm_request_costs=[TOTAL])
    manifest = build_rate_limit_policy_manifest(
        "r",
        "envoy-gateway-system",
        config,
        route_llm_request_costs=[TOTAL],
        gateway_name="ai-gateway",
    )
    assert manifest["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-gateway"}
    ]
    assert manifest["metadata"]["annotations"] == {ROUTE_ANNOTATION: "r"}


def test_rate_limit_policy_name() -> None:
    assert rate_limit_policy_name("llama") == "llama-ratelimit"
    long_names = ["a" * 253, "a" * 240 + "-" + "b" * 12, "x." * 120 + "abc", "a" * 243]
    names = [rate_limit_policy_name(n) for n in long_names]
    for name in names:
        assert len(name) <= 253
        assert re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name
        )
        assert name.endswith("-ratelimit")
    assert len(set(names)) == len(names)
    assert rate_limit_policy_name("a" * 243) == "a" * 243 + "-ratelimit"  # exactly 253


@given(subdomains.filter(lambda n: len(n) <= 253))
def test_rate_limit_policy_name_is_always_a_valid_name(route_name: str) -> None:
    from rollout.config import check_dns1123_subdomain

    check_dns1123_subdomain(rate_limit_policy_name(route_name))


# ============================================================================================
# Parsing objects as the API server returns them, and what parsing refuses
# ============================================================================================


def server_route() -> dict[str, Any]:
    """An AIGatewayRoute as kubectl get -o json shows it, with server defaults and metadata."""
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {
            "name": "llama",
            "namespace": "models",
            "uid": "0d6c2a44-5d0e-4a39-b0f2-3f1b1c1a2b3c",
            "resourceVersion": "4711",
            "generation": 3,
            "creationTimestamp": "2026-01-02T03:04:05Z",
            "labels": {"team": "ml", MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            "annotations": {
                VARIANTS_ANNOTATION: '{"llama-v1":"stable","llama-v2":"canary","gone":"shadow"}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "managedFields": [{"manager": "rollout", "operation": "Update"}],
        },
        "spec": {
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ai-gateway"}
            ],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-ai-eg-model", "value": "llama-3-8b"}]}],
                    "modelsOwnedBy": "Envoy AI Gateway",
                    "timeouts": {"request": "60s"},
                    "backendRefs": [
                        {"name": "llama-v1", "weight": 90, "priority": 0},
                        {
                            "name": "llama-v2",
                            "weight": 10,
                            "priority": 0,
                            "modelNameOverride": "llama-3-8b-v2",
                            "headerMutation": {"set": [{"name": "x-variant", "value": "canary"}]},
                        },
                        {"name": "fallback"},
                    ],
                }
            ],
        },
        "status": {
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "ReconciliationSucceeded",
                    "message": "AIGatewayRoute reconciled successfully",
                    "lastTransitionTime": "2026-01-02T03:04:07Z",
                }
            ]
        },
    }


def test_parses_a_server_object_with_defaults_and_unmodelled_fields() -> None:
    assert parse_route_manifest(server_route()) == AIGatewayRoute(
        name="llama",
        namespace="models",
        model_name="llama-3-8b",
        backends=[
            WeightedBackend(name="llama-v1", weight=90, variant_tag=VariantTag.STABLE),
            WeightedBackend(
                name="llama-v2",
                weight=10,
                variant_tag=VariantTag.CANARY,
                model_name_override="llama-3-8b-v2",
            ),
            WeightedBackend(name="fallback", weight=1, priority=0),
        ],
        labels={"team": "ml"},
    )


def test_parses_route_status() -> None:
    status = parse_route_status(server_route())
    assert status.ready is True
    assert status.last_updated == "2026-01-02T03:04:07Z"
    assert status.messages == ["AIGatewayRoute reconciled successfully"]
    assert status.conditions[0].reason == "ReconciliationSucceeded"


def test_not_accepted_route_is_not_ready() -> None:
    obj = server_route()
    obj["status"]["conditions"] = [
        {
            "type": "NotAccepted",
            "status": "False",
            "reason": "ReconciliationFailed",
            "message": 'AIServiceBackend "llama-v2" not found',
            "lastTransitionTime": "2026-01-02T03:05:00Z",
        }
    ]
    status = parse_route_status(obj)
    assert status.ready is False
    assert status.messages == ['AIServiceBackend "llama-v2" not found']


def test_route_without_status_is_not_ready() -> None:
    obj = server_route()
    del obj["status"]
    status = parse_route_status(obj)
    assert (status.ready, status.conditions, status.last_updated) == (False, [], None)


def test_accepted_false_is_not_ready() -> None:
    obj = server_route()
    obj["status"]["conditions"][0]["status"] = "False"
    assert parse_route_status(obj).ready is False


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    return obj


RULE = ("spec", "rules", 0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec",), None, "AIGatewayRoute models/llama: spec: required field is missing"),
        (
            ("spec", "rules"),
            {},
            "AIGatewayRoute models/llama: spec.rules: expected an array, got object",
        ),
        (
            (*RULE, "backendRefs", 1, "name"),
            5,
            "AIGatewayRoute models/llama: spec.rules[0].backendRefs[1].name: "
            "expected a string, got integer",
        ),
        (
            (*RULE, "backendRefs", 0, "weight"),
            "90",
            "AIGatewayRoute models/llama: spec.rules[0].backendRefs[0].weight: "
            "expected an integer, got string",
        ),
        (
            (*RULE, "backendRefs", 0, "weight"),
            250,
            "AIGatewayRoute models/llama: spec.rules[0].backendRefs[0].weight: "
            "Input should be less than or equal to 100",
        ),
        (
            (*RULE, "backendRefs", 0, "priority"),
            True,
            "AIGatewayRoute models/llama: spec.rules[0].backendRefs[0].priority: "
            "expected an integer, got boolean",
        ),
        (
            (*RULE, "backendRefs", 1, "name"),
            "llama-v1",
            "AIGatewayRoute models/llama: spec.rules[0].backendRefs: "
            "backend names must be unique in a route; repeated: ['llama-v1']",
        ),
        (
            ("metadata", "labels", "team"),
            7,
            "AIGatewayRoute models/llama: metadata.labels.team: expected a string, got integer",
        ),
        (
            ("metadata", "annotations", VARIANTS_ANNOTATION),
            '{"llama-v1": "blue"}',
            "AIGatewayRoute models/llama: "
            f"metadata.annotations[{VARIANTS_ANNOTATION}].llama-v1: "
            "expected a variant tag (stable, canary, shadow), got 'blue'",
        ),
        (
            ("metadata", "annotations", VARIANTS_ANNOTATION),
            "not json",
            f"AIGatewayRoute models/llama: metadata.annotations[{VARIANTS_ANNOTATION}]: "
            "expected a JSON object {backend name: variant tag}, got invalid JSON",
        ),
        (
            ("metadata", "labels", MANAGED_BY_LABEL),
            "argocd",
            "AIGatewayRoute models/llama: metadata.labels: label 'managed-by' is reserved",
        ),
        (
            ("kind",),
            "HTTPRoute",
            "AIGatewayRoute models/llama: kind: expected 'AIGatewayRoute', got 'HTTPRoute'",
        ),
        (
            ("metadata", "name"),
            None,
            "AIGatewayRoute models/<unnamed>: metadata.name: required field is missing",
        ),
    ],
)
def test_malformed_routes_name_object_and_field(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    obj = server_route()
    _set(obj, path, value)
    with pytest.raises(MalformedObjectError) as caught:
        parse_route_manifest(obj)
    assert str(caught.value).startswith(message)
    assert not isinstance(caught.value, UnsupportedObjectError)


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("spec", "rules", 1), None, "spec.rules"),  # placeholder replaced below: two rules
        ((*RULE, "matches"), [], "spec.rules[0].matches"),
        ((*RULE, "matches", 0, "headers", 0, "type"), "RegularExpression", "headers[0].type"),
        ((*RULE, "matches", 0, "headers", 0, "name"), "x-model", "headers[0].name"),
        ((*RULE, "backendRefs", 0, "group"), "inference.networking.k8s.io", "backendRefs[0]"),
    ],
)
def test_routes_the_model_cannot_represent_are_refused(
    path: tuple[Any, ...], value: Any, where: str
) -> None:
    obj = server_route()
    if path == ("spec", "rules", 1):
        obj["spec"]["rules"].append(copy.deepcopy(obj["spec"]["rules"][0]))
    else:
        _set(obj, path, value)
    with pytest.raises(UnsupportedObjectError, match=re.escape(where)):
        parse_route_manifest(obj)


def test_a_rule_without_matches_is_refused() -> None:
    obj = server_route()
    del obj["spec"]["rules"][0]["matches"]
    with pytest.raises(UnsupportedObjectError, match="without a x-ai-eg-model match"):
        parse_route_manifest(obj)


@pytest.mark.parametrize("junk", [None, [], "AIGatewayRoute", 3])
def test_a_non_object_is_malformed(junk: Any) -> None:
    with pytest.raises(MalformedObjectError, match="expected an object"):
        parse_route_manifest(junk)


def test_status_with_bad_condition_is_malformed() -> None:
    obj = server_route()
    obj["status"]["conditions"][0]["status"] = "Yes"
    with pytest.raises(MalformedObjectError, match=r"status.conditions\[0\].status"):
        parse_route_status(obj)


def test_service_backend_with_a_service_ref_is_malformed() -> None:
    backend = AIServiceBackend(
        name="b", api_schema=APISchema(name=APISchemaName.OPENAI), backend_ref=BackendRef(name="b")
    )
    manifest = build_service_backend_manifest(
        backend, api_version="v1beta1", default_namespace="ns"
    )
    del manifest["spec"]["backendRef"]["group"]
    del manifest["spec"]["backendRef"]["kind"]
    with pytest.raises(
        MalformedObjectError, match=r"spec.backendRef.group: Input should be 'gateway"
    ):
        parse_service_backend_manifest(manifest)


def test_unix_endpoints_are_unsupported() -> None:
    manifest = build_backend_manifest(
        Backend(name="b", endpoints=[FQDNEndpoint(hostname="a", port=1)]), default_namespace="ns"
    )
    manifest["spec"]["endpoints"] = [{"unix": {"path": "/run/model.sock"}}]
    with pytest.raises(UnsupportedObjectError, match=r"spec.endpoints\[0\].unix"):
        parse_backend_manifest(manifest)


def policy_manifest(**config: Any) -> dict[str, Any]:
    return build_rate_limit_policy_manifest(
        "llama", "models", budget(**config), route_llm_request_costs=[TOTAL]
    )


RULES = ("spec", "rateLimit", "global", "rules")


@pytest.mark.parametrize(
    ("mangle", "error", "where"),
    [
        (
            lambda m: m["spec"]["rateLimit"]["global"]["rules"].pop(0),
            UnsupportedObjectError,
            "token-budget",
        ),
        (
            lambda m: _set(m, (*RULES, 0, "limit", "unit"), "Week"),
            MalformedObjectError,
            "limit.unit",
        ),
        (
            lambda m: _set(m, (*RULES, 0, "limit", "requests"), "5"),
            MalformedObjectError,
            "limit.requests",
        ),
        (
            lambda m: _set(m, (*RULES, 1, "limit", "unit"), "Hour"),
            UnsupportedObjectError,
            "rules[1].limit.unit",
        ),
        (
            lambda m: _set(m, (*RULES, 1, "clientSelectors", 0, "headers", 0, "name"), "x-user"),
            UnsupportedObjectError,
            "rules[1].clientSelectors",
        ),
        (
            lambda m: m["spec"]["rateLimit"]["global"]["rules"].append({}),
            MalformedObjectError,
            "rules[2]",
        ),
        (lambda m: _set(m, (*RULES, 0, "shadowMode"), True), UnsupportedObjectError, "shadowMode"),
        (
            lambda m: _set(m, (*RULES, 0, "cost", "response", "metadata", "namespace"), "envoy.lb"),
            UnsupportedObjectError,
            "metadata.namespace",
        ),
        (
            lambda m: _set(m, ("spec", "rateLimit", "type"), "Local"),
            UnsupportedObjectError,
            "rateLimit.type",
        ),
        (
            lambda m: _set(m, ("spec", "targetRefs", 0, "name"), "other"),
            MalformedObjectError,
            f"metadata.annotations[{ROUTE_ANNOTATION}]",
        ),
        (lambda m: m["spec"]["targetRefs"].append({}), UnsupportedObjectError, "spec.targetRefs"),
    ],
)
def test_rate_limit_policies_are_read_rule_by_rule(
    mangle: Any, error: type[Exception], where: str
) -> None:
    manifest = policy_manifest(requests_per_min=60)
    mangle(manifest)
    with pytest.raises(error, match=re.escape(where)):
        parse_rate_limit_policy_manifest(manifest)


def test_rate_limit_rule_order_does_not_matter() -> None:
    manifest = policy_manifest(requests_per_min=60)
    manifest["spec"]["rateLimit"]["global"]["rules"].reverse()
    assert parse_rate_limit_policy_manifest(manifest).config.requests_per_min == 60


def test_policy_without_route_annotation_falls_back_to_the_httproute() -> None:
    manifest = policy_manifest()
    del manifest["metadata"]["annotations"]
    assert parse_rate_limit_policy_manifest(manifest).route_name == "llama"


# --- mangled manifests: nothing but MalformedObjectError escapes -----------------------------

JUNK: st.SearchStrategy[Any] = st.sampled_from(
    [None, 0, -1, 1.5, True, "", "x", [], [1], {}, {"a": 1}, [{}], "a" * 300]
)


def all_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from all_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from all_paths(value, (*prefix, index))


def mangle(data: st.DataObject, manifest: dict[str, Any]) -> Any:
    paths = list(all_paths(manifest))
    path = data.draw(st.sampled_from(paths), label="path")
    junk = data.draw(JUNK, label="junk")
    if not path:
        return junk
    mangled = copy.deepcopy(manifest)
    parent = mangled
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    return mangled


def assert_only_malformed(parse: Any, obj: Any, kind: str) -> None:
    try:
        parse(obj)
    except MalformedObjectError as err:
        assert kind in str(err)
        assert err.kind == kind


MANGLE_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@MANGLE_SETTINGS
@given(routes(namespace=dns_labels), st.data())
def test_mangled_routes_raise_only_malformed(route: AIGatewayRoute, data: st.DataObject) -> None:
    manifest = build_route_manifest(route, **ROUTE_ARGS)
    manifest["status"] = server_route()["status"]
    mangled = mangle(data, manifest)
    assert_only_malformed(parse_route_manifest, mangled, "AIGatewayRoute")
    assert_only_malformed(parse_route_status, mangled, "AIGatewayRoute")


@MANGLE_SETTINGS
@given(costs_and_rate_limits(), st.data())
def test_mangled_policies_raise_only_malformed(
    costs_and_config: tuple[list[LLMRequestCost], RateLimitConfig], data: st.DataObject
) -> None:
    costs, config = costs_and_config
    manifest = build_rate_limit_policy_manifest(
        "r", "ns", config, route_llm_request_costs=costs, gateway_name="gw"
    )
    assert_only_malformed(
        parse_rate_limit_policy_manifest, mangle(data, manifest), "BackendTrafficPolicy"
    )


@MANGLE_SETTINGS
@given(service_backends, backends, st.data())
def test_mangled_backends_raise_only_malformed(
    service_backend: AIServiceBackend, backend: Backend, data: st.DataObject
) -> None:
    sb = build_service_backend_manifest(
        service_backend, api_version="v1beta1", default_namespace="ns"
    )
    assert_only_malformed(parse_service_backend_manifest, mangle(data, sb), "AIServiceBackend")
    b = build_backend_manifest(backend, default_namespace="ns")
    assert_only_malformed(parse_backend_manifest, mangle(data, b), "Backend")


@MANGLE_SETTINGS
@given(st.data())
def test_mangled_routes_never_crash_weight_patches(data: st.DataObject) -> None:
    mangled = mangle(data, patchable_route())
    with contextlib.suppress(MalformedObjectError, InvalidError):
        weight_patch_operations(mangled, {"llama-v2": 20})


# ============================================================================================
# Weight patches
# ============================================================================================


class PatchTestFailed(Exception):
    pass


def apply_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """A strict RFC 6902 applier for test/add/replace (all the weight patches use)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["path"].startswith("/")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last: Any = int(parts[-1]) if isinstance(parent, list) else parts[-1]
        if op["op"] == "test":
            try:
                actual = parent[last]
            except (KeyError, IndexError) as err:
                raise PatchTestFailed(op["path"]) from err
            if actual != op["value"]:
                raise PatchTestFailed(op["path"])
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(last, op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "replace":
            if isinstance(parent, dict) and last not in parent:
                raise KeyError(f"replace of a missing member {op['path']}")
            parent[last] = op["value"]
        else:
            raise AssertionError(f"unexpected op {op['op']}")
    return doc


def patchable_route() -> dict[str, Any]:
    """A route with two rules and fields the weight patch must not touch."""
    obj = server_route()
    second_rule = {
        "name": "mistral",
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "mistral"}]}],
        "backendRefs": [
            {"name": "mistral-v1", "weight": 50, "priority": 0},
            {
                "name": "mistral-v2",
                "weight": 50,
                "priority": 0,
                "bodyMutation": {"remove": ["seed"]},
            },
        ],
    }
    obj["spec"]["rules"].append(second_rule)
    return obj


def test_weight_patch_tests_then_replaces_only_weights() -> None:
    obj = patchable_route()
    ops = weight_patch_operations(obj, {"llama-v1": 70, "llama-v2": 30})
    assert ops == [
        {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "llama-v1"},
        {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 70},
        {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "llama-v2"},
        {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 30},
    ]
    expected = copy.deepcopy(obj)
    expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = 70
    expected["spec"]["rules"][0]["backendRefs"][1]["weight"] = 30
    # priority, modelNameOverride, headerMutation, the other rule: all untouched.
    assert apply_patch(obj, ops) == expected


def test_weight_patch_adds_a_missing_weight() -> None:
    obj = patchable_route()
    ops = weight_patch_operations(obj, {"fallback": 5})
    assert {"op": "add", "path": "/spec/rules/0/backendRefs/2/weight", "value": 5} in ops
    patched = apply_patch(obj, ops)
    assert patched["spec"]["rules"][0]["backendRefs"][2] == {"name": "fallback", "weight": 5}


def test_weight_patch_finds_the_rule_holding_the_backends() -> None:
    obj = patchable_route()
    patched = apply_patch(obj, weight_patch_operations(obj, {"mistral-v2": 0}))
    assert [r["weight"] for r in patched["spec"]["rules"][1]["backendRefs"]] == [50, 0]
    assert patched["spec"]["rules"][0] == obj["spec"]["rules"][0]
    assert patched["spec"]["rules"][1]["backendRefs"][1]["bodyMutation"] == {"remove": ["seed"]}


def test_weight_patch_rule_selection_by_index_and_name() -> None:
    obj = patchable_route()
    obj["spec"]["rules"][1]["backendRefs"].append({"name": "llama-v1", "weight": 0})
    with pytest.raises(InvalidError, match="appear in rules"):
        weight_patch_operations(obj, {"llama-v1": 10})
    by_index = weight_patch_operations(obj, {"llama-v1": 10}, rule=1)
    by_name = weight_patch_operations(obj, {"llama-v1": 10}, rule="mistral")
    assert by_index == by_name
    assert by_index[-1] == {
        "op": "replace",
        "path": "/spec/rules/1/backendRefs/2/weight",
        "value": 10,
    }
    with pytest.raises(InvalidError, match="out of range"):
        weight_patch_operations(obj, {"llama-v1": 10}, rule=2)
    with pytest.raises(InvalidError, match="no rule named 'nope'"):
        weight_patch_operations(obj, {"llama-v1": 10}, rule="nope")
    with pytest.raises(InvalidError, match=r"\['llama-v2'\] not in rule 1"):
        weight_patch_operations(obj, {"llama-v2": 10}, rule=1)


@pytest.mark.parametrize("weight", [-1, 1_000_001, True, "50", 5.0])
def test_weight_patch_refuses_bad_weights(weight: Any) -> None:
    # Up to 1,000,000 (the generated HTTPRoute's cap): sub-percent steps on a 1,000,000 total.
    with pytest.raises(
        InvalidError, match=r"weights\[llama-v2\]: weight must be an integer 0..1000000"
    ) as caught:
        weight_patch_operations(patchable_route(), {"llama-v2": weight})
    assert caught.value.causes[0].field == "weights[llama-v2]"


def test_weight_patch_refuses_unknown_backends() -> None:
    with pytest.raises(InvalidError, match=r"unknown backend\(s\) \['llama-v3'\]"):
        weight_patch_operations(patchable_route(), {"llama-v1": 50, "llama-v3": 50})


def test_weight_patch_refuses_backends_spread_over_rules() -> None:
    with pytest.raises(InvalidError, match="not all in one rule"):
        weight_patch_operations(patchable_route(), {"llama-v1": 50, "mistral-v1": 50})


def test_weight_patch_refuses_an_empty_update() -> None:
    with pytest.raises(InvalidError, match="no weights"):
        weight_patch_operations(patchable_route(), {})


def test_weight_patch_refuses_duplicate_names_in_the_rule() -> None:
    obj = patchable_route()
    obj["spec"]["rules"][0]["backendRefs"].append({"name": "llama-v1", "weight": 3})
    with pytest.raises(InvalidError, match="more than once"):
        weight_patch_operations(obj, {"llama-v1": 10})


def test_weight_patch_refuses_all_zero_unless_allowed() -> None:
    obj = patchable_route()
    everything_off = {"llama-v1": 0, "llama-v2": 0, "fallback": 0}
    with pytest.raises(InvalidError, match="allow_all_zero"):
        weight_patch_operations(obj, everything_off)
    patched = apply_patch(obj, weight_patch_operations(obj, everything_off, allow_all_zero=True))
    assert [r["weight"] for r in patched["spec"]["rules"][0]["backendRefs"]] == [0, 0, 0]


def test_weight_patch_counts_unnamed_backends_at_their_current_weight() -> None:
    # fallback has no weight field: the CRD default 1 keeps the rule from being all zero.
    ops = weight_patch_operations(patchable_route(), {"llama-v1": 0, "llama-v2": 0})
    assert len(ops) == 4


def test_weight_patch_needs_a_resource_version() -> None:
    obj = patchable_route()
    del obj["metadata"]["resourceVersion"]
    with pytest.raises(MalformedObjectError, match=r"metadata\.resourceVersion: required"):
        weight_patch_operations(obj, {"llama-v1": 10})


def test_weight_patch_applies_over_unrelated_changes_but_not_over_a_reordering() -> None:
    obj = patchable_route()
    ops = weight_patch_operations(obj, {"llama-v2": 20})
    # Someone else changed other fields meanwhile: the patch still applies, keeping them.
    newer = copy.deepcopy(obj)
    newer["metadata"]["resourceVersion"] = "4712"
    newer["metadata"]["labels"]["team"] = "ml"
    patched = apply_patch(newer, ops)
    assert patched["metadata"]["labels"]["team"] == "ml"
    assert patched["spec"]["rules"][0]["backendRefs"][1]["weight"] == 20
    reordered = copy.deepcopy(obj)
    refs = reordered["spec"]["rules"][0]["backendRefs"]
    refs[0], refs[1] = refs[1], refs[0]
    with pytest.raises(PatchTestFailed, match="/spec/rules/0/backendRefs/1/name"):
        apply_patch(reordered, ops)


def test_weight_patch_with_expected_weights_is_a_compare_and_swap() -> None:
    obj = patchable_route()
    live = [90, 10]  # llama-v1, llama-v2 in server_route()
    ops = weight_patch_operations(
        obj,
        {"llama-v1": 50, "llama-v2": 50},
        expected_weights={"llama-v1": live[0], "llama-v2": live[1]},
    )
    assert {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": live[0]} in ops
    assert apply_patch(obj, ops)["spec"]["rules"][0]["backendRefs"][0]["weight"] == 50
    changed = copy.deepcopy(obj)
    changed["spec"]["rules"][0]["backendRefs"][1]["weight"] = live[1] + 1
    with pytest.raises(PatchTestFailed, match="/spec/rules/0/backendRefs/1/weight"):
        apply_patch(changed, ops)


def test_weight_patch_creating_the_annotations_map_tests_the_resource_version() -> None:
    obj = patchable_route()
    del obj["metadata"]["annotations"]
    ops = weight_patch_operations(obj, {"llama-v2": 20}, annotations={"a.io/b": "1"})
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "4711"}
    newer = copy.deepcopy(obj)
    newer["metadata"]["resourceVersion"] = "4712"
    newer["metadata"]["annotations"] = {"someone.io/else": "x"}
    with pytest.raises(PatchTestFailed, match="resourceVersion"):
        apply_patch(newer, ops)


def test_weight_patch_adds_annotations_escaping_keys() -> None:
    obj = patchable_route()
    notes = {"rollout.model-registry.io/step": "2", "rollout.model-registry.io/phase": "canary"}
    ops = weight_patch_operations(obj, {"llama-v2": 20}, annotations=notes)
    assert ops[-2:] == [
        {
            "op": "add",
            "path": "/metadata/annotations/rollout.model-registry.io~1step",
            "value": "2",
        },
        {
            "op": "add",
            "path": "/metadata/annotations/rollout.model-registry.io~1phase",
            "value": "canary",
        },
    ]
    patched = apply_patch(obj, ops)
    assert patched["metadata"]["annotations"] == {**obj["metadata"]["annotations"], **notes}


def test_weight_patch_creates_the_annotations_map() -> None:
    obj = patchable_route()
    del obj["metadata"]["annotations"]
    ops = weight_patch_operations(obj, {"llama-v2": 20}, annotations={"a.io/b": "1"})
    assert ops[-1] == {"op": "add", "path": "/metadata/annotations", "value": {"a.io/b": "1"}}
    assert apply_patch(obj, ops)["metadata"]["annotations"] == {"a.io/b": "1"}


def test_weight_patch_refuses_bad_annotation_keys() -> None:
    with pytest.raises(InvalidError, match="not a valid label/annotation key"):
        weight_patch_operations(patchable_route(), {"llama-v2": 20}, annotations={"bad key": "x"})


@given(routes(namespace=dns_labels), st.data())
def test_weight_patch_changes_exactly_the_named_weights(
    route: AIGatewayRoute, data: st.DataObject
) -> None:
    obj = json_roundtrip(build_route_manifest(route, **ROUTE_ARGS))
    obj["metadata"]["resourceVersion"] = "1"
    names = [b.name for b in route.backends]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    weights = {name: data.draw(st.integers(0, 100)) for name in chosen}
    try:
        ops = weight_patch_operations(obj, weights)
    except InvalidError as err:
        assert "weight 0" in str(err)
        final = [weights.get(b.name, b.weight) for b in route.backends]
        assert all(w == 0 for w in final)
        return
    patched = parse_route_manifest(apply_patch(obj, ops), rate_limit=route.rate_limit)
    expected = AIGatewayRoute.model_validate(
        {
            **route.model_dump(),
            "backends": [
                {**b.model_dump(), "weight": weights.get(b.name, b.weight)} for b in route.backends
            ],
        }
    )
    assert patched == expected
