"""The rate-limit BackendTrafficPolicy of a route: its name, build and parse."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollout.config import check_dns1123_label, check_dns1123_subdomain
from rollout.gateway.constants import (
    AI_GATEWAY_METADATA_NAMESPACE,
    BACKEND_TRAFFIC_POLICY,
    GATEWAY_API_GROUP,
    ROUTE_ANNOTATION,
)
from rollout.gateway.errors import InvalidError
from rollout.gateway.manifests._common import Manifest, _metadata
from rollout.gateway.manifests._parse import _child_path, _construct, _Node, _read_metadata, _root
from rollout.gateway.models import (
    BudgetPeriod,
    LLMRequestCost,
    RateLimitConfig,
    RateLimitPolicy,
    RateLimitTarget,
)

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
