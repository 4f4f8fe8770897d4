"""Issue 10's route shapes against the real CRDs (API server, CEL) and the real Envoy AI
Gateway controller: each shape is written through the adapter, the route is Accepted, and the
HTTPRoute the controller generates carries the matches and weights we meant."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from kubernetes import client as k8s

from rollout.config import AIGatewayConfig
from rollout.gateway import (
    AIGatewayRoute,
    GeneratedRoute,
    KubeAIGatewayClient,
    NotFoundError,
    WeightedBackend,
)
from rollout.gateway.manifests.cohorts import cohort_regex, cohort_selected_percent
from rollout.localcluster import LocalAIGateway
from tests.integration.chain import create_chain

T = TypeVar("T")
BACKENDS = ["llama-v1", "llama-v2"]
MODEL = {"name": "x-ai-eg-model", "type": "Exact", "value": "llama-3-8b"}


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def gateway(
    api_client: k8s.ApiClient, namespace: str, ai_gateway: LocalAIGateway
) -> KubeAIGatewayClient:
    gw = KubeAIGatewayClient(
        api_client,
        AIGatewayConfig(enabled=True, default_namespace=namespace, delete_timeout_seconds=60),
    )
    create_chain(gw, BACKENDS)
    gw.create_route(
        AIGatewayRoute(
            name="chat",
            model_name="llama-3-8b",
            rule_name="chat",
            backends=[
                WeightedBackend(name="llama-v1", weight=100, model_name_override="m-v1"),
                WeightedBackend(name="llama-v2", weight=0, model_name_override="m-v2"),
            ],
        )
    )
    return gw


def generated_when(
    gateway: KubeAIGatewayClient, what: str, check: Callable[[GeneratedRoute], bool]
) -> GeneratedRoute:
    def probe() -> GeneratedRoute | None:
        if not gateway.get_route_status(None, "chat").ready:
            return None
        try:
            generated = gateway.get_generated_route(None, "chat")
        except NotFoundError:
            return None
        return generated if check(generated) else None

    return eventually(what, probe)


def rule_names(generated: GeneratedRoute) -> list[str | None]:
    return [r.name for r in generated.rules]


def test_cohort_rule_added_widened_and_removed_is_accepted_and_generated(
    gateway: KubeAIGatewayClient,
) -> None:
    def session_regex(generated: GeneratedRoute) -> str | None:
        rule = generated.rules[0]
        if rule.name != "llama-v2-cohort":
            return None
        [[model, session]] = rule.header_matches
        assert model == MODEL
        assert session["name"] == "x-session-id" and session["type"] == "RegularExpression"
        return session["value"]

    snapshot = gateway.set_cohort_rule(
        None,
        "chat",
        backends=BACKENDS,
        header="x-session-id",
        canary_backend="llama-v2",
        percent=0.5,
        annotations={"rollout.model-registry.io/state": "cohort-0.5"},
    )
    assert snapshot.cohort_percent == cohort_selected_percent(0.5)
    assert snapshot.annotations["rollout.model-registry.io/state"] == "cohort-0.5"
    generated = generated_when(
        gateway, "the cohort rule", lambda g: session_regex(g) == cohort_regex(0.5)
    )
    assert rule_names(generated) == ["llama-v2-cohort", "chat", "route-not-found"]
    assert generated.weights_of_rule(0) == [1]
    assert generated.weights_of_rule(1) == [100, 0]

    widened = gateway.set_cohort_rule(
        None,
        "chat",
        backends=BACKENDS,
        header="x-session-id",
        canary_backend="llama-v2",
        percent=25,
        expected_weights={"llama-v1": 100, "llama-v2": 0},
    )
    assert widened.cohort_percent == 25.0
    generated_when(gateway, "the widened regex", lambda g: session_regex(g) == cohort_regex(25))

    removed = gateway.remove_cohort_rule(
        None, "chat", canary_backend="llama-v2", weights={"llama-v1": 0, "llama-v2": 100}
    )
    assert removed.cohort_percent is None
    generated = generated_when(
        gateway, "the cohort rule gone", lambda g: rule_names(g) == ["chat", "route-not-found"]
    )
    assert generated.weights_of_rule(0) == [0, 100]


def test_tenant_opt_in_rule_is_accepted_and_generated(gateway: KubeAIGatewayClient) -> None:
    values = ["internal", "beta-customer"]
    snapshot = gateway.set_opt_in_rule(
        None,
        "chat",
        backends=BACKENDS,
        header="x-tenant-id",
        values=values,
        canary_backend="llama-v2",
    )
    assert snapshot.opt_in_values == values
    expected = [[MODEL, {"name": "x-tenant-id", "type": "Exact", "value": v}] for v in values]
    generated = generated_when(
        gateway,
        "the opt-in rule",
        lambda g: g.rules[0].name == "llama-v2-opt-in" and g.rules[0].header_matches == expected,
    )
    assert rule_names(generated) == ["llama-v2-opt-in", "chat", "route-not-found"]
    gateway.remove_opt_in_rule(None, "chat", canary_backend="llama-v2")
    generated_when(gateway, "opt-in gone", lambda g: rule_names(g) == ["chat", "route-not-found"])


def test_sub_percent_weights_are_accepted_and_generated(gateway: KubeAIGatewayClient) -> None:
    # 0.1% of the canary on a total of 1,000,000 (the generated HTTPRoute's per-weight cap).
    result = gateway.update_traffic_weights(
        None,
        "chat",
        {"llama-v1": 999_000, "llama-v2": 1_000},
        expected_weights={"llama-v1": 100, "llama-v2": 0},
    )
    assert result is None  # not the model's 0..100 shape; the write happened
    assert gateway.get_route_snapshot(None, "chat").rule_for(BACKENDS).weights == {
        "llama-v1": 999_000,
        "llama-v2": 1_000,
    }
    generated_when(
        gateway, "sub-percent weights", lambda g: g.weights_of_rule(0) == [999_000, 1_000]
    )
    gateway.update_traffic_weights(None, "chat", {"llama-v1": 0, "llama-v2": 1_000_000})
    generated_when(gateway, "the 1,000,000 cap", lambda g: g.weights_of_rule(0) == [0, 1_000_000])
