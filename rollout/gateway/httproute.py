"""Parse the HTTPRoute the AI Gateway controller generates from an AIGatewayRoute (pure).

We never write it (the controller overwrites it on every sync); we read it to verify that the
weights we wrote reached what Envoy Gateway serves, and the simulator routes by it as Envoy
would. Defensive: a field of the wrong type raises MalformedObjectError naming its path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.gateway.constants import AI_GATEWAY_ROUTE, HTTP_ROUTE
from rollout.gateway.errors import MalformedObjectError
from rollout.gateway.models import GeneratedBackendRef, GeneratedRoute, GeneratedRouteRule


def parse_generated_route(obj: Mapping[str, Any]) -> GeneratedRoute:
    meta = _mapping(obj.get("metadata"), "metadata", obj)
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise _malformed("a string namespace and name are required", "metadata", obj)
    owner_uid = None
    for ref in _list(meta.get("ownerReferences"), "metadata.ownerReferences", obj):
        if isinstance(ref, Mapping) and ref.get("kind") == AI_GATEWAY_ROUTE.kind:
            owner_uid = ref.get("uid") if isinstance(ref.get("uid"), str) else None
    spec = _mapping(obj.get("spec"), "spec", obj)
    rules = []
    for i, rule in enumerate(_list(spec.get("rules"), "spec.rules", obj)):
        at = f"spec.rules[{i}]"
        rule = _mapping(rule, at, obj)
        refs = []
        for j, ref in enumerate(_list(rule.get("backendRefs"), f"{at}.backendRefs", obj)):
            ref = _mapping(ref, f"{at}.backendRefs[{j}]", obj)
            weight = ref.get("weight", 1)  # Gateway API default
            if not isinstance(ref.get("name"), str) or not isinstance(weight, int):
                raise _malformed("name (string) and weight (integer) expected", at, obj)
            refs.append(
                GeneratedBackendRef(name=ref["name"], namespace=ref.get("namespace"), weight=weight)
            )
        matches = [
            [
                {k: str(v) for k, v in header.items()}
                for header in _list(
                    _mapping(match, f"{at}.matches", obj).get("headers"), f"{at}.matches", obj
                )
                if isinstance(header, Mapping)
            ]
            for match in _list(rule.get("matches"), f"{at}.matches", obj)
        ]
        rule_name = rule.get("name")
        rules.append(
            GeneratedRouteRule(
                name=rule_name if isinstance(rule_name, str) else None,
                backend_refs=refs,
                header_matches=matches,
            )
        )
    return GeneratedRoute(namespace=namespace, name=name, owner_uid=owner_uid, rules=rules)


def _mapping(value: Any, path: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _malformed("an object expected", path, obj)
    return value


def _list(value: Any, path: str, obj: Mapping[str, Any]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed("a list expected", path, obj)
    return value


def _malformed(detail: str, path: str, obj: Mapping[str, Any]) -> MalformedObjectError:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    return MalformedObjectError(
        detail,
        path=path,
        kind=HTTP_ROUTE.kind,
        namespace=meta.get("namespace"),
        name=meta.get("name"),
    )


__all__ = ["parse_generated_route"]
