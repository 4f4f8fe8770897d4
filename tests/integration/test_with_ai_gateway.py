"""The adapter and the controller with the real Envoy AI Gateway controller as co-owner: its
finalizer on deletes, its real statuses, its generated HTTPRoute, and writes that never fight
it. The session's AI Gateway controller is suspended in a few tests (an outage) and always
resumed before the test ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.controller.reconciler import GatewayChecks, Reconciler
from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.state import EventReason, RolloutPhase, RolloutState
from rollout.gateway import (
    AIGatewayError,
    AIGatewayRoute,
    BudgetPeriod,
    DeletionBlockedError,
    KubeAIGatewayClient,
    LLMRequestCost,
    NotFoundError,
    RateLimitConfig,
    WeightedBackend,
)
from rollout.gateway.constants import AIGATEWAY_FINALIZER
from rollout.localcluster import LocalAIGateway
from rollout.policy import API_VERSION, RolloutPolicy
from tests.integration.chain import create_chain

ROUTES = "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{ns}/aigatewayroutes"
T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    # Generous: after an outage the controller (one worker) reconciles every route of the
    # session's namespaces before it gets to this test's.
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def gateway(api_client: k8s.ApiClient, namespace: str) -> KubeAIGatewayClient:
    return KubeAIGatewayClient(
        api_client,
        AIGatewayConfig(enabled=True, default_namespace=namespace, delete_timeout_seconds=60),
    )


@pytest.fixture
def outage(ai_gateway: LocalAIGateway) -> Iterator[LocalAIGateway]:
    """The AI Gateway controller, stoppable by the test; always running again afterwards."""
    yield ai_gateway
    ai_gateway.resume()


def route(name: str = "chat", weights: tuple[int, int] = (100, 0), **extra: Any) -> AIGatewayRoute:
    return AIGatewayRoute(
        name=name,
        model_name="llama-3-8b",
        backends=[
            WeightedBackend(name="llama-v1", weight=weights[0], model_name_override="m-v1"),
            WeightedBackend(name="llama-v2", weight=weights[1], model_name_override="m-v2"),
        ],
        llm_request_costs=[LLMRequestCost(metadata_key="llm_total_token", type="TotalToken")],
        **extra,
    )


def served(gateway: KubeAIGatewayClient, name: str = "chat") -> list[int] | None:
    try:
        return gateway.get_generated_route(None, name).weights_of_rule(0)
    except NotFoundError:
        return None


def finalizers(api: k8s.ApiClient, namespace: str, name: str = "chat") -> list[str]:
    obj = kubeapi.request(api, "GET", ROUTES.format(ns=namespace) + f"/{name}")
    return list(obj["metadata"].get("finalizers") or [])


# ---- statuses --------------------------------------------------------------------------------


def test_route_status_is_the_controllers_accepted_and_not_accepted(
    gateway: KubeAIGatewayClient, outage: LocalAIGateway
) -> None:
    # Before the controller has seen the route: no condition, so not ready, and said so.
    outage.suspend()
    gateway.create_route(route())
    unseen = gateway.get_route_status(None, "chat")
    assert unseen.ready is False and unseen.conditions == [] and not unseen.reconciled
    outage.resume()
    # The backends are missing: the controller refuses the route and says which.
    rejected = eventually(
        "NotAccepted",
        lambda: (s := gateway.get_route_status(None, "chat")).reconciled and s,
    )
    assert rejected.ready is False
    assert rejected.conditions[0].type == "NotAccepted"
    assert rejected.conditions[0].reason == "ReconciliationFailed"
    assert rejected.rejection is not None and "AIServiceBackend llama-v" in rejected.rejection
    create_chain(gateway, ["llama-v1", "llama-v2"])
    # Nothing of ours changed, so nudge a reconcile with a weight write (as the controller does).
    gateway.update_traffic_weights(None, "chat", {"llama-v1": 90, "llama-v2": 10})
    accepted = eventually(
        "Accepted", lambda: (s := gateway.get_route_status(None, "chat")).ready and s
    )
    assert accepted.conditions[0].reason == "ReconciliationSucceeded"
    assert eventually("the HTTPRoute", lambda: served(gateway)) == [90, 10]


# ---- deletes and the finalizer ---------------------------------------------------------------


def test_delete_waits_for_the_controllers_finalizer_and_the_route_is_gone(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    create_chain(gateway, ["llama-v1", "llama-v2"])
    gateway.create_route(route())
    eventually("the finalizer", lambda: AIGATEWAY_FINALIZER in finalizers(api_client, namespace))
    gateway.delete_route(None, "chat")
    with pytest.raises(NotFoundError):
        gateway.get_route(None, "chat")
    gateway.delete_service_backend(None, "llama-v2")
    with pytest.raises(NotFoundError):
        gateway.get_service_backend(None, "llama-v2")


def test_a_delete_the_finalizer_blocks_raises_naming_it_and_completes_later(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str, outage: LocalAIGateway
) -> None:
    create_chain(gateway, ["llama-v1", "llama-v2"])
    gateway.create_route(route())
    eventually("the finalizer", lambda: AIGATEWAY_FINALIZER in finalizers(api_client, namespace))
    outage.suspend()
    impatient = KubeAIGatewayClient(
        api_client,
        AIGatewayConfig(enabled=True, default_namespace=namespace, delete_timeout_seconds=3),
    )
    started = time.monotonic()
    with pytest.raises(DeletionBlockedError) as info:
        impatient.delete_route(None, "chat")
    assert 3 <= time.monotonic() - started < 8  # bounded by delete_timeout_seconds
    assert info.value.finalizers == [AIGATEWAY_FINALIZER]
    assert "AI Gateway controller is not finishing the deletion" in str(info.value)
    assert AIGATEWAY_FINALIZER in str(info.value)
    outage.resume()
    eventually("the route gone", lambda: _gone(gateway, "chat"))


def _gone(gateway: KubeAIGatewayClient, name: str) -> bool:
    try:
        gateway.get_route(None, name)
    except NotFoundError:
        return True
    return False


def test_no_half_applied_route_when_its_rate_limit_policy_fails_with_the_controller_running(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    # A real admission policy refuses BackendTrafficPolicies in this namespace except in dry
    # run: the adapter's server-side check passes, the real create fails after the route exists.
    policy_name = f"no-rate-limits-{namespace}"
    kubeapi.request(
        api_client,
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        body={
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy_name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["gateway.envoyproxy.io"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE"],
                            "resources": ["backendtrafficpolicies"],
                        }
                    ]
                },
                "validations": [
                    {"expression": "request.dryRun == true", "message": "rate limits are frozen"}
                ],
            },
        },
    )
    kubeapi.request(
        api_client,
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        body={
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy_name},
            "spec": {
                "policyName": policy_name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    )
    try:
        create_chain(gateway, ["llama-v1", "llama-v2"])
        budget = RateLimitConfig(
            tenant_header="x-tenant-id", token_budget=2**31 + 1, budget_period=BudgetPeriod.DAILY
        )

        # The binding takes a moment to be enforced: probe with a policy of no route's until
        # the real create is refused (a route created and deleted meanwhile is no test).
        probes = (
            f"/apis/gateway.envoyproxy.io/v1alpha1/namespaces/{namespace}/backendtrafficpolicies"
        )
        probe = {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "BackendTrafficPolicy",
            "metadata": {"name": "probe"},
            "spec": {
                "targetRefs": [
                    {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "none"}
                ]
            },
        }

        def enforced() -> bool:
            try:
                kubeapi.request(api_client, "POST", probes, body=probe)
            except kubeapi.ApiException as exc:
                return "rate limits are frozen" in str(exc.body)
            kubeapi.request(api_client, "DELETE", f"{probes}/probe")
            return False

        eventually("the admission policy to be enforced", enforced)
        with pytest.raises(AIGatewayError) as info:
            gateway.create_route(route(rate_limit=budget))
        assert "rate limits are frozen" in str(info.value)
        assert _gone(gateway, "chat")  # deleted again, finalizer and all
    finally:
        for kind in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
            kubeapi.request(
                api_client,
                "DELETE",
                f"/apis/admissionregistration.k8s.io/v1/{kind}/{policy_name}",
            )


# ---- writes that never fight the controller --------------------------------------------------


def test_concurrent_weight_steps_while_the_controller_reconciles(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    create_chain(gateway, ["llama-v1", "llama-v2"])
    gateway.create_route(route())
    eventually("Accepted", lambda: gateway.get_route_status(None, "chat").ready)
    errors: list[BaseException] = []

    def steps(offset: int) -> None:
        try:
            for canary in range(offset, 100, 4):
                gateway.update_traffic_weights(
                    None,
                    "chat",
                    {"llama-v1": 100 - canary, "llama-v2": canary},
                    annotations={f"rollout.model-registry.io/step-{offset}": str(canary)},
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=steps, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    last = gateway.get_route_snapshot(None, "chat")
    assert AIGATEWAY_FINALIZER in finalizers(api_client, namespace)  # our writes kept it
    assert last.status.ready  # the status is the controller's, untouched by our writes
    expected = [last.rules[0].weights["llama-v1"], last.rules[0].weights["llama-v2"]]
    assert eventually("the HTTPRoute to follow", lambda: served(gateway) == expected or None)
    assert {last.annotations[f"rollout.model-registry.io/step-{o}"] for o in range(4)} == {
        "96",
        "97",
        "98",
        "99",
    }


# ---- the controller listens to the gateway ---------------------------------------------------


def policy(namespace: str) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat-canary"},
            "spec": {
                "route": {"namespace": namespace, "name": "chat"},
                "stable": {"backend": "llama-v1", "modelNameOverride": "m-v1"},
                "canary": {"backend": "llama-v2", "modelNameOverride": "m-v2"},
                "steps": [10, 50],
                "analysis": {"interval": "10s", "metrics": [{"kind": "error-rate", "max": 0.05}]},
            },
        }
    )


def events(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = kubeapi.request(api, "GET", f"/api/v1/namespaces/{namespace}/events")
    return sorted(listed["items"], key=lambda e: e.get("lastTimestamp") or "")


def test_no_rollout_starts_on_a_rejected_route_and_it_starts_once_accepted(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    create_chain(gateway, ["llama-v1"])  # the canary's AIServiceBackend is missing
    gateway.create_route(route())
    eventually("NotAccepted", lambda: gateway.get_route_status(None, "chat").reconciled)
    reconciler = Reconciler(gateway, KubeEventRecorder(api_client))
    now = datetime.now(UTC)
    held = reconciler.tick(policy(namespace), now, None)
    assert held.decision is not None and held.decision.set_weights is None
    assert held.decision.state.phase is RolloutPhase.PENDING
    snapshot = gateway.get_route_snapshot(None, "chat")
    assert snapshot.rules[0].weights == {"llama-v1": 100, "llama-v2": 0}  # no weight moved
    [event] = [e for e in events(api_client, namespace) if e["reason"] == "RouteNotAccepted"]
    assert "AIServiceBackend llama-v2" in event["message"] and event["type"] == "Warning"
    create_chain(gateway, ["llama-v2"])
    gateway.set_route_annotations(None, "chat", {"example.com/nudge": "1"})  # a spec-less edit
    eventually("Accepted", lambda: _accepted_after_nudge(gateway))
    started = reconciler.tick(policy(namespace), now + timedelta(seconds=1), None)
    assert started.decision is not None and started.decision.set_weights is not None
    reasons = [e.reason for e in started.decision.events]
    assert reasons == [EventReason.GATEWAY_READY, EventReason.ROLLOUT_STARTED]
    # The step waits for the generated HTTPRoute, then is verified on the next look.
    assert started.decision.state.awaiting_verification
    eventually("the HTTPRoute to carry 90/10", lambda: served(gateway) == [90, 10])
    verified = reconciler.tick(policy(namespace), now + timedelta(seconds=2), None)
    assert verified.decision is not None
    assert not verified.decision.state.awaiting_verification


def _accepted_after_nudge(gateway: KubeAIGatewayClient) -> bool:
    if gateway.get_route_status(None, "chat").ready:
        return True
    # The controller reconciles on spec changes: a weight write (0 -> 0) is one.
    gateway.update_traffic_weights(None, "chat", {"llama-v1": 100, "llama-v2": 0})
    return False


def test_a_route_never_reconciled_holds_with_its_own_reason(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str, outage: LocalAIGateway
) -> None:
    outage.suspend()
    create_chain(gateway, ["llama-v1", "llama-v2"])
    gateway.create_route(route())
    result = Reconciler(gateway, KubeEventRecorder(api_client)).tick(
        policy(namespace), datetime.now(UTC), None
    )
    assert result.decision is not None and result.decision.set_weights is None
    assert [e.reason for e in result.decision.events] == [EventReason.ROUTE_NOT_RECONCILED]
    state = RolloutState.from_route_annotations(gateway.get_route_annotations(None, "chat"))
    assert state is not None and "has not reconciled the route" in (state.hold_reason or "")


def test_weights_not_applied_while_the_gateway_controller_is_down_hold_then_continue(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str, outage: LocalAIGateway
) -> None:
    create_chain(gateway, ["llama-v1", "llama-v2"])
    gateway.create_route(route())
    eventually("Accepted", lambda: gateway.get_route_status(None, "chat").ready)
    checks = GatewayChecks(verification_timeout=timedelta(seconds=1))
    reconciler = Reconciler(gateway, KubeEventRecorder(api_client), gateway_checks=checks)
    t0 = datetime.now(UTC)
    outage.suspend()  # the status stays Accepted (stale), but nobody regenerates the HTTPRoute
    started = reconciler.tick(policy(namespace), t0, None)
    assert started.decision is not None and started.decision.set_weights is not None
    time.sleep(0.5)
    assert served(gateway) == [100, 0]
    held = reconciler.tick(policy(namespace), t0 + timedelta(seconds=2), None)
    assert held.decision is not None
    assert [e.reason for e in held.decision.events] == [EventReason.WEIGHTS_NOT_APPLIED]
    assert "stable 90 / canary 10" in held.decision.events[0].message
    assert "the HTTPRoute shows stable 100 / canary 0" in held.decision.events[0].message
    outage.resume()
    eventually("the HTTPRoute to carry 90/10", lambda: served(gateway) == [90, 10])
    ready = reconciler.tick(policy(namespace), t0 + timedelta(seconds=3), None)
    assert ready.decision is not None
    assert [e.reason for e in ready.decision.events] == [EventReason.GATEWAY_READY]
    assert ready.decision.state.hold_reason is None
