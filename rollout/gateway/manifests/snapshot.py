"""RouteSnapshot: what a traffic controller reads of ANY route shape."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from rollout.gateway.constants import AI_GATEWAY_ROUTE, MODEL_HEADER
from rollout.gateway.manifests._parse import _Node, _read_metadata, _root
from rollout.gateway.manifests.cohorts import cohort_rule_name, cohort_share
from rollout.gateway.manifests.opt_in import opt_in_rule_name
from rollout.gateway.manifests.route import parse_route_status
from rollout.gateway.models import RouteSnapshot, RuleWeights


def _header_matches(rule: _Node) -> list[list[dict[str, str]]]:
    matches = rule.get("matches")
    out = []
    for match in [] if matches is None else matches.items():
        headers = match.get("headers")
        out.append(
            [
                {
                    "name": h.req("name").string(),
                    "type": h.opt_string("type") or "Exact",
                    "value": h.req("value").string(),
                }
                for h in ([] if headers is None else headers.items())
            ]
        )
    return out


def _rule_weights(rule: _Node) -> RuleWeights:
    weights: dict[str, int] = {}
    overrides: dict[str, str] = {}
    priorities: dict[str, int] = {}
    refs = rule.get("backendRefs")  # optional in the CRD: a rule may have none
    for ref in [] if refs is None else refs.items():
        name = ref.req("name").string()
        weight = ref.opt_integer("weight")
        weights[name] = 1 if weight is None else weight
        priorities[name] = ref.opt_integer("priority") or 0
        override = ref.opt_string("modelNameOverride")
        if override is not None:
            overrides[name] = override
    return RuleWeights(
        name=rule.opt_string("name"),
        weights=weights,
        header_matches=_header_matches(rule),
        model_name_overrides=overrides,
        priorities=priorities,
    )


def _own_header_rule(rule: RuleWeights, name_of: Any) -> str | None:
    """The canary of a header rule of ours (named after its only backend), else None."""
    if rule.name is None or len(rule.weights) != 1:
        return None
    (backend,) = rule.weights
    try:
        return backend if name_of(backend) == rule.name else None
    except ValueError:
        return None


def _non_model_headers(rule: RuleWeights, match_type: str) -> list[dict[str, str]]:
    return [
        h
        for match in rule.header_matches
        for h in match
        if h["name"].lower() != MODEL_HEADER and h["type"] == match_type
    ]


def _header_rule_fields(rules: list[RuleWeights]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for rule in rules:
        cohort = _own_header_rule(rule, cohort_rule_name)
        if cohort is not None and "cohort_backend" not in fields:
            headers = _non_model_headers(rule, "RegularExpression")
            fields["cohort_backend"] = cohort
            if headers:
                fields["cohort_header"] = headers[0]["name"]
                with contextlib.suppress(ValueError):  # edited by someone: no share
                    fields["cohort_percent"] = cohort_share(headers[0]["value"])
        opt_in = _own_header_rule(rule, opt_in_rule_name)
        if opt_in is not None and "opt_in_backend" not in fields:
            headers = _non_model_headers(rule, "Exact")
            fields["opt_in_backend"] = opt_in
            if headers:
                fields["opt_in_header"] = headers[0]["name"]
                values = [h["value"] for h in headers]
                fields["opt_in_values"] = list(dict.fromkeys(values))
    return fields


def parse_route_snapshot(obj: Mapping[str, Any]) -> RouteSnapshot:
    """Weights per rule and annotations of ANY well-formed AIGatewayRoute (several rules,
    foreign fields and weights above 100 included), and its cohort / opt-in rule (by name,
    `<canary>-cohort` / `<canary>-opt-in`); MalformedObjectError otherwise."""
    root = _root(obj, AI_GATEWAY_ROUTE)
    meta = _read_metadata(root)
    metadata = root.req("metadata")
    rules = [_rule_weights(rule) for rule in root.req("spec").req("rules").items()]
    return RouteSnapshot(
        namespace=metadata.req("namespace").string(),
        name=meta.name,
        uid=metadata.opt_string("uid"),
        resource_version=metadata.opt_string("resourceVersion"),
        api_version=root.req("apiVersion").string(),
        annotations=dict(meta.annotations),
        rules=rules,
        status=parse_route_status(obj),
        **_header_rule_fields(rules),
    )
