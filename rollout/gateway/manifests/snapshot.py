"""RouteSnapshot: what a traffic controller reads of ANY route shape."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from rollout.gateway.constants import AI_GATEWAY_ROUTE, MODEL_HEADER
from rollout.gateway.manifests._parse import _Node, _read_metadata, _root
from rollout.gateway.manifests.cohorts import cohort_rule_name, cohort_share
from rollout.gateway.manifests.opt_in import opt_in_rule_name
from rollout.gateway.manifests.route import parse_route_status
from rollout.gateway.models import AIGatewayRouteStatus, Condition, RouteSnapshot, RuleWeights


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
    # It runs for every watch event of a changed route and every write answer: the plain
    # reader handles well-formed objects; anything it does not expect goes to the path-tracking
    # reader, which gives the same result or the error naming the field.
    try:
        return _fast_route_snapshot(obj)
    except _Surprise:
        return _tracked_route_snapshot(obj)


def _tracked_route_snapshot(obj: Mapping[str, Any]) -> RouteSnapshot:
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


# --- The plain reader: the tracking reader's checks on exact JSON types, no paths ----------


class _Surprise(Exception):
    """Something the plain reader does not expect: let the tracking reader say what."""


def _obj(value: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Surprise
    return value


def _list(value: object) -> list[Any]:
    if type(value) is not list:
        raise _Surprise
    return value


def _str(value: object) -> str:
    if type(value) is not str:
        raise _Surprise
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:  # bool (an int subclass) is refused
        raise _Surprise
    return value


def _str_map(value: object) -> dict[str, str]:
    out = _obj(value)
    for key, item in out.items():
        if type(key) is not str or type(item) is not str:
            raise _Surprise
    return dict(out)


def _fast_route_snapshot(obj: Mapping[str, Any]) -> RouteSnapshot:
    root = _obj(obj)
    kind = _opt_str(root.get("kind"))
    if kind is not None and kind != AI_GATEWAY_ROUTE.kind:
        raise _Surprise
    api_version = _str(root.get("apiVersion"))
    if api_version.partition("/")[0] != AI_GATEWAY_ROUTE.group:
        raise _Surprise
    meta = _obj(root.get("metadata"))
    labels, annotations = meta.get("labels"), meta.get("annotations")
    if labels is not None:
        _str_map(labels)  # not kept, but a malformed one is refused
    rules = [_fast_rule_weights(_obj(rule)) for rule in _list(_obj(root.get("spec")).get("rules"))]
    return RouteSnapshot(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        uid=_opt_str(meta.get("uid")),
        resource_version=_opt_str(meta.get("resourceVersion")),
        api_version=api_version,
        annotations={} if annotations is None else _str_map(annotations),
        rules=rules,
        status=_fast_route_status(root.get("status")),
        **_header_rule_fields(rules),
    )


def _fast_rule_weights(rule: dict[str, Any]) -> RuleWeights:
    weights: dict[str, int] = {}
    overrides: dict[str, str] = {}
    priorities: dict[str, int] = {}
    refs = rule.get("backendRefs")
    for raw in () if refs is None else _list(refs):
        ref = _obj(raw)
        name = _str(ref.get("name"))
        weight = _opt_int(ref.get("weight"))
        weights[name] = 1 if weight is None else weight
        priorities[name] = _opt_int(ref.get("priority")) or 0
        override = _opt_str(ref.get("modelNameOverride"))
        if override is not None:
            overrides[name] = override
    matches = rule.get("matches")
    header_matches = []
    for raw_match in () if matches is None else _list(matches):
        headers = _obj(raw_match).get("headers")
        headers = () if headers is None else _list(headers)
        header_matches.append([_fast_header(h) for h in headers])
    return RuleWeights(
        name=_opt_str(rule.get("name")),
        weights=weights,
        header_matches=header_matches,
        model_name_overrides=overrides,
        priorities=priorities,
    )


def _fast_header(raw: object) -> dict[str, str]:
    header = _obj(raw)
    return {
        "name": _str(header.get("name")),
        "type": _opt_str(header.get("type")) or "Exact",
        "value": _str(header.get("value")),
    }


def _fast_route_status(raw: object) -> AIGatewayRouteStatus:
    """parse_route_status on the plain reader."""
    conditions = None if raw is None else _obj(raw).get("conditions")
    parsed = [_fast_condition(c) for c in (() if conditions is None else _list(conditions))]
    times = [c.last_transition_time for c in parsed if c.last_transition_time]
    return AIGatewayRouteStatus(
        ready=any(c.type == "Accepted" and c.status == "True" for c in parsed),
        conditions=parsed,
        last_updated=max(times) if times else None,
    )


def _fast_condition(raw: object) -> Condition:
    node = _obj(raw)
    try:
        return Condition(
            type=_str(node.get("type")),
            status=_str(node.get("status")),
            reason=_opt_str(node.get("reason")) or "",
            message=_opt_str(node.get("message")) or "",
            last_transition_time=_opt_str(node.get("lastTransitionTime")),
            observed_generation=_opt_int(node.get("observedGeneration")),
        )
    except ValidationError:
        raise _Surprise from None
