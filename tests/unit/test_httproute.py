"""Parsing the HTTPRoute the AI Gateway controller generates (shape as v1.1.0 writes it)."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.gateway.errors import MalformedObjectError
from rollout.gateway.httproute import parse_generated_route


def generated(weights: list[Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "chat",
            "namespace": "llm",
            "ownerReferences": [
                {
                    "apiVersion": "aigateway.envoyproxy.io/v1beta1",
                    "kind": "AIGatewayRoute",
                    "name": "chat",
                    "uid": "u-1",
                }
            ],
        },
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {
                            "group": "gateway.envoyproxy.io",
                            "kind": "Backend",
                            "name": f"b{i}",
                            **({} if w is None else {"weight": w}),
                        }
                        for i, w in enumerate(weights)
                    ],
                    "matches": [
                        {
                            "headers": [{"name": "x-ai-eg-model", "type": "Exact", "value": "m"}],
                            "path": {"type": "PathPrefix", "value": "/"},
                        }
                    ],
                },
                {"name": "route-not-found", "matches": [{"path": {"value": "/"}}]},
            ]
        },
    }


def test_weights_matches_and_owner_are_read_by_position() -> None:
    route = parse_generated_route(generated([90, 10]))
    assert route.owner_uid == "u-1"
    assert route.weights_of_rule(0) == [90, 10]
    assert route.rules[0].header_matches == [
        [{"name": "x-ai-eg-model", "type": "Exact", "value": "m"}]
    ]
    assert route.rules[1].name == "route-not-found" and route.weights_of_rule(1) == []
    assert route.weights_of_rule(2) is None


def test_weights_by_backend_name_ours_in_order_and_none_for_another_shape() -> None:
    route = parse_generated_route(generated([90, 10]))
    assert route.weights_by_backend(0, ["stable", "canary"]) == {"stable": 90, "canary": 10}
    assert route.weights_by_backend(0, ["canary", "stable"]) == {"canary": 90, "stable": 10}
    assert route.weights_by_backend(0, ["only"]) is None  # generated from another shape
    assert route.weights_by_backend(2, ["stable", "canary"]) is None  # no such rule


def test_a_missing_weight_is_the_gateway_api_default_and_zero_stays_zero() -> None:
    assert parse_generated_route(generated([None, 0])).weights_of_rule(0) == [1, 0]


def test_a_wrong_type_names_the_field() -> None:
    with pytest.raises(MalformedObjectError) as info:
        parse_generated_route(generated(["ten"]))
    assert info.value.path == "spec.rules[0]" and "HTTPRoute llm/chat" in str(info.value)
