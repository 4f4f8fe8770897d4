"""RouteSnapshot: what a traffic controller reads of ANY route shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.gateway.manifests._parse import _read_metadata, _root
from rollout.gateway.manifests.route import parse_route_status
from rollout.gateway.models import RouteSnapshot, RuleWeights


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
