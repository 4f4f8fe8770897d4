"""The AI Gateway adapter against a real kube-apiserver with the upstream CRDs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.gateway import manifests
from rollout.gateway.errors import (
    AlreadyExistsError,
    ConflictError,
    DisabledError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)
from rollout.gateway.kube import FIELD_MANAGER, KubeAIGatewayClient
from rollout.gateway.models import (
    AIGatewayRoute,
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    BudgetPeriod,
    FQDNEndpoint,
    LLMRequestCost,
    RateLimitConfig,
    WeightedBackend,
)
from rollout.localcluster import LocalControlPlane

RBAC_FILE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "aigateway-rbac.yaml"
ROUTES = "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{ns}/aigatewayroutes/{name}"
TOTAL = LLMRequestCost(metadata_key="llm_total_token", type="TotalToken")


def config(namespace: str) -> AIGatewayConfig:
    return AIGatewayConfig(enabled=True, default_namespace=namespace)


@pytest.fixture
def gateway(api_client: k8s.ApiClient, namespace: str) -> KubeAIGatewayClient:
    return KubeAIGatewayClient(api_client, config(namespace))


def chat_route(
    name: str = "chat", stable: int = 100, canary: int = 0, **extra: Any
) -> AIGatewayRoute:
    return AIGatewayRoute(
        name=name,
        model_name="llama-3-8b",
        backends=[
            WeightedBackend(
                name="llama-v1",
                weight=stable,
                variant_tag="stable",
                model_name_override="llama-3-8b-v1",
            ),
            WeightedBackend(
                name="llama-v2",
                weight=canary,
                variant_tag="canary",
                model_name_override="llama-3-8b-v2",
            ),
        ],
        llm_request_costs=[TOTAL, LLMRequestCost(metadata_key="llm_output", type="OutputToken")],
        labels={"app": "chat"},
        **extra,
    )


def raw_route(api: k8s.ApiClient, namespace: str, name: str = "chat") -> dict[str, Any]:
    obj: dict[str, Any] = kubeapi.request(api, "GET", ROUTES.format(ns=namespace, name=name))
    return obj


def make_chain(gateway: KubeAIGatewayClient, variant: str) -> None:
    gateway.create_backend(
        Backend(
            name=f"llama-{variant}",
            endpoints=[
                FQDNEndpoint(
                    hostname=f"llama-{variant}-predictor.models.svc.cluster.local", port=8080
                )
            ],
        )
    )
    gateway.create_service_backend(
        AIServiceBackend(
            name=f"llama-{variant}",
            api_schema=APISchema(name="OpenAI", version="v1"),
            backend_ref=BackendRef(name=f"llama-{variant}"),
        )
    )


# ---- the seed's checklist -----------------------------------------------------------------


def test_route_is_created_with_the_model_header_match(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    created = gateway.create_route(chat_route())
    assert created == chat_route().model_copy(update={"namespace": namespace})
    obj = raw_route(api_client, namespace)
    assert obj["spec"]["rules"][0]["matches"] == [
        {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "llama-3-8b"}]}
    ]
    assert obj["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "ai-gateway",
            "namespace": "envoy-gateway-system",
        }
    ]
    assert obj["spec"]["llmRequestCosts"] == [
        {"metadataKey": "llm_total_token", "type": "TotalToken"},
        {"metadataKey": "llm_output", "type": "OutputToken"},
    ]
    assert obj["metadata"]["labels"] == {"app": "chat", "managed-by": "model-registry"}
    assert gateway.get_route(namespace, "chat") == created


def test_caller_labels_are_not_mutated(gateway: KubeAIGatewayClient) -> None:
    route = chat_route()
    gateway.create_route(route)
    assert route.labels == {"app": "chat"}


def test_service_backend_is_created_with_its_backend_reference(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    make_chain(gateway, "v1")
    backend = gateway.get_service_backend(None, "llama-v1")
    assert backend.backend_ref == BackendRef(name="llama-v1")
    raw = kubeapi.request(
        api_client,
        "GET",
        f"/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{namespace}/aiservicebackends/llama-v1",
    )
    assert raw["spec"]["backendRef"] == {
        "name": "llama-v1",
        "group": "gateway.envoyproxy.io",
        "kind": "Backend",
    }
    assert gateway.get_backend(None, "llama-v1").endpoints[0] == FQDNEndpoint(
        hostname="llama-v1-predictor.models.svc.cluster.local", port=8080
    )


def test_traffic_weight_updates_work(gateway: KubeAIGatewayClient) -> None:
    gateway.create_route(chat_route())
    updated = gateway.update_traffic_weights(None, "chat", {"llama-v1": 95, "llama-v2": 5})
    assert updated is not None
    assert [(b.name, b.weight) for b in updated.backends] == [("llama-v1", 95), ("llama-v2", 5)]
    assert gateway.get_route(None, "chat").backends == updated.backends


# ---- the whole chain, CRUD and apply ------------------------------------------------------


def test_whole_chain_for_stable_and_canary(gateway: KubeAIGatewayClient, namespace: str) -> None:
    make_chain(gateway, "v1")
    make_chain(gateway, "v2")
    gateway.create_route(chat_route(stable=90, canary=10))
    route = gateway.get_route(namespace, "chat")
    for wb in route.backends:
        service_backend = gateway.get_service_backend(namespace, wb.name)
        backend = gateway.get_backend(namespace, service_backend.backend_ref.name)
        assert backend.endpoints[0].hostname.startswith(wb.name)
    assert {b.name: b.weight for b in route.backends} == {"llama-v1": 90, "llama-v2": 10}
    assert gateway.list_routes(namespace, "managed-by=model-registry") == [route]
    assert gateway.list_routes(namespace, "app=other") == []


def test_route_crud_and_apply(gateway: KubeAIGatewayClient, namespace: str) -> None:
    with pytest.raises(NotFoundError):
        gateway.get_route(None, "chat")
    gateway.apply_route(chat_route())  # creates
    with pytest.raises(AlreadyExistsError):
        gateway.create_route(chat_route())
    changed = chat_route(stable=50, canary=50).model_copy(
        update={"model_name": "llama-3-8b-instruct", "labels": {"app": "chat", "tier": "gold"}}
    )
    assert gateway.apply_route(changed) == changed.model_copy(update={"namespace": namespace})
    assert gateway.update_route(chat_route()) == gateway.get_route(None, "chat")
    gateway.delete_route(None, "chat")
    with pytest.raises(NotFoundError):
        gateway.delete_route(None, "chat")
    with pytest.raises(NotFoundError):
        gateway.update_route(chat_route())


def test_service_backend_and_backend_crud_and_apply(gateway: KubeAIGatewayClient) -> None:
    backend = Backend(name="b", endpoints=[FQDNEndpoint(hostname="a.svc", port=80)])
    assert gateway.apply_backend(backend).endpoints == backend.endpoints
    moved = backend.model_copy(update={"endpoints": [FQDNEndpoint(hostname="b.svc", port=81)]})
    assert gateway.apply_backend(moved).endpoints == moved.endpoints
    assert gateway.update_backend(backend).endpoints == backend.endpoints
    sb = AIServiceBackend(
        name="sb", api_schema=APISchema(name="OpenAI"), backend_ref=BackendRef(name="b")
    )
    assert gateway.apply_service_backend(sb).api_schema.name == "OpenAI"
    sb2 = sb.model_copy(update={"api_schema": APISchema(name="OpenAI", prefix="/v1")})
    assert gateway.update_service_backend(sb2).api_schema.prefix == "/v1"
    assert gateway.apply_service_backend(sb2) == gateway.get_service_backend(None, "sb")
    gateway.delete_service_backend(None, "sb")
    gateway.delete_backend(None, "b")
    with pytest.raises(NotFoundError):
        gateway.get_service_backend(None, "sb")
    with pytest.raises(NotFoundError):
        gateway.get_backend(None, "b")


# ---- rate limits --------------------------------------------------------------------------


def test_rate_limit_policy_is_accepted_by_the_crd_and_updated(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    gateway.create_route(chat_route())
    budget = RateLimitConfig(
        tenant_header="x-tenant-id",
        token_budget=100_000,
        budget_period=BudgetPeriod.DAILY,
        requests_per_min=60,
    )
    created = gateway.create_rate_limit_policy(None, "chat", budget)
    assert created.config.cost_metadata_key == "llm_total_token"
    assert created.target_name == "chat" and created.route_name == "chat"
    raw = kubeapi.request(
        api_client,
        "GET",
        f"/apis/gateway.envoyproxy.io/v1alpha1/namespaces/{namespace}/"
        f"backendtrafficpolicies/{manifests.rate_limit_policy_name('chat')}",
    )
    assert raw["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "chat"}
    ]
    token_rule, rpm_rule = raw["spec"]["rateLimit"]["global"]["rules"]
    assert token_rule["limit"] == {"requests": 100_000, "unit": "Day"}
    assert token_rule["cost"]["request"] == {"from": "Number", "number": 0}
    assert token_rule["cost"]["response"]["metadata"] == {
        "namespace": "io.envoy.ai_gateway",
        "key": "llm_total_token",
    }
    assert rpm_rule["limit"] == {"requests": 60, "unit": "Minute"}

    monthly = budget.model_copy(
        update={"budget_period": BudgetPeriod.MONTHLY, "requests_per_min": None}
    )
    updated = gateway.update_rate_limit_policy(None, "chat", monthly)
    assert updated.config.budget_period == BudgetPeriod.MONTHLY
    assert gateway.get_rate_limit_policy(None, "chat").config.requests_per_min is None
    assert gateway.get_route(None, "chat").rate_limit == updated.config
    gateway.delete_rate_limit_policy(None, "chat")
    with pytest.raises(NotFoundError):
        gateway.get_rate_limit_policy(None, "chat")


def test_rate_limit_cost_key_must_be_one_the_route_writes(gateway: KubeAIGatewayClient) -> None:
    gateway.create_route(chat_route())
    wrong = RateLimitConfig(
        tenant_header="x-tenant-id",
        token_budget=10,
        budget_period="daily",
        cost_metadata_key="llm_input",
    )
    with pytest.raises(InvalidError, match="llm_input"):
        gateway.create_rate_limit_policy(None, "chat", wrong)


def test_route_with_rate_limit_creates_both_and_deletes_both(
    gateway: KubeAIGatewayClient, namespace: str
) -> None:
    budget = RateLimitConfig(tenant_header="x-tenant-id", token_budget=5000, budget_period="hourly")
    route = chat_route(rate_limit=budget)
    assert gateway.create_route(route).rate_limit == route.rate_limit
    assert gateway.get_route(None, "chat") == route.model_copy(update={"namespace": namespace})
    policy_names = [p.name for p in gateway._list_policies(namespace).values()]
    assert policy_names == [manifests.rate_limit_policy_name("chat")]
    gateway.update_route(chat_route())  # no rate limit any more: our policy goes
    with pytest.raises(NotFoundError):
        gateway.get_rate_limit_policy(None, "chat")
    gateway.update_route(route)
    gateway.delete_route(None, "chat")
    with pytest.raises(NotFoundError):
        gateway.get_rate_limit_policy(None, "chat")


def test_policy_per_route_does_not_collide(gateway: KubeAIGatewayClient) -> None:
    budget = RateLimitConfig(tenant_header="x-tenant-id", token_budget=1, budget_period="daily")
    gateway.create_route(chat_route("chat-a", rate_limit=budget))
    gateway.create_route(chat_route("chat-b", rate_limit=budget))
    assert gateway.get_rate_limit_policy(None, "chat-a").target_name == "chat-a"
    assert gateway.get_rate_limit_policy(None, "chat-b").target_name == "chat-b"


# ---- errors -------------------------------------------------------------------------------


def test_server_side_rejection_is_an_invalid_error_with_the_servers_message(
    gateway: KubeAIGatewayClient,
) -> None:
    # Bypass our own validation to see what the API server says (the CRD is the final word).
    bad = WeightedBackend.model_construct(
        name="llama-v1",
        weight=-5,
        priority=0,
        variant_tag=None,
        model_name_override=None,
        namespace=None,
    )
    route = chat_route().model_copy(update={"backends": [bad]})
    with pytest.raises(InvalidError) as info:
        gateway.create_route(route)
    assert "spec.rules[0].backendRefs[0].weight" in str(info.value)
    assert info.value.status_code == 422
    assert any("weight" in (c.field or "") for c in info.value.causes)


def test_unknown_fields_fail_loudly_instead_of_being_pruned(
    gateway: KubeAIGatewayClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = manifests.build_backend_manifest

    def with_unknown_field(*args: Any, **kwargs: Any) -> dict[str, Any]:
        obj = build(*args, **kwargs)
        obj["spec"]["loadBalancer"] = {"type": "RoundRobin"}
        return obj

    monkeypatch.setattr(manifests, "build_backend_manifest", with_unknown_field)
    with pytest.raises(InvalidError, match=r'unknown field "spec\.loadBalancer"'):
        gateway.create_backend(Backend(name="b", endpoints=[FQDNEndpoint(hostname="a", port=1)]))


def test_weights_are_validated(gateway: KubeAIGatewayClient) -> None:
    gateway.create_route(chat_route())
    with pytest.raises(InvalidError, match="unknown"):
        gateway.update_traffic_weights(None, "chat", {"nope": 10})
    with pytest.raises(InvalidError, match=r"0\.\.1000000"):
        gateway.update_traffic_weights(None, "chat", {"llama-v1": 1_000_001})
    with pytest.raises(InvalidError, match="weight 0"):
        gateway.update_traffic_weights(None, "chat", {"llama-v1": 0, "llama-v2": 0})
    gateway.update_traffic_weights(
        None, "chat", {"llama-v1": 0, "llama-v2": 0}, allow_all_zero=True
    )


def test_expected_weights_make_the_update_a_compare_and_swap(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    gateway.create_route(chat_route())
    other = KubeAIGatewayClient(api_client, config(namespace))
    other.update_traffic_weights(None, "chat", {"llama-v1": 70, "llama-v2": 30})
    with pytest.raises(ConflictError, match="weights changed"):
        gateway.update_traffic_weights(
            None,
            "chat",
            {"llama-v1": 99, "llama-v2": 1},
            expected_weights={"llama-v1": 100, "llama-v2": 0},
        )
    assert {b.name: b.weight for b in gateway.get_route(None, "chat").backends} == {
        "llama-v1": 70,
        "llama-v2": 30,
    }


def test_disabled_adapter_says_so(namespace: str) -> None:
    gateway = KubeAIGatewayClient.from_config(AIGatewayConfig(enabled=False))
    assert gateway.is_available() is False
    with pytest.raises(DisabledError, match=r"disabled \(AIGATEWAY_ENABLED=false\)"):
        gateway.get_route(namespace, "chat")
    with pytest.raises(DisabledError):
        gateway.update_traffic_weights(namespace, "chat", {"a": 1})


def test_availability_and_version_detection(
    gateway: KubeAIGatewayClient,
    control_plane: LocalControlPlane,
    tmp_path: Path,
    namespace: str,
) -> None:
    assert gateway.is_available() is True
    assert gateway._version(manifests.AI_GATEWAY_ROUTE) == "v1beta1"
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "kubeconfig")
    from_file = KubeAIGatewayClient.from_config(
        AIGatewayConfig(enabled=True, kubeconfig=str(kubeconfig), default_namespace=namespace)
    )
    assert from_file.is_available() is True
    dead = dict(control_plane.kubeconfig())
    dead["clusters"] = [
        {
            "name": "local",
            "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True},
        }
    ]
    (tmp_path / "dead").write_text(yaml.safe_dump(dead))
    unreachable = KubeAIGatewayClient.from_config(
        AIGatewayConfig(enabled=True, kubeconfig=str(tmp_path / "dead"))
    )
    assert unreachable.is_available() is False


def test_route_status_reads_the_ai_gateway_condition(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    gateway.create_route(chat_route())
    assert gateway.get_route_status(None, "chat").ready is False
    path = ROUTES.format(ns=namespace, name="chat") + "/status"
    for status, reason, message in (
        ("False", "ReconciliationFailed", "backend llama-v2 not found"),
        ("True", "ReconciliationSucceeded", "AIGatewayRoute reconciled successfully"),
    ):
        kubeapi.request(
            api_client,
            "PATCH",
            path,
            content_type=kubeapi.MERGE_PATCH,
            body={
                "status": {
                    "conditions": [
                        {
                            "type": "Accepted" if status == "True" else "NotAccepted",
                            "status": status,
                            "reason": reason,
                            "message": message,
                            "lastTransitionTime": "2026-11-27T10:00:00Z",
                        }
                    ]
                }
            },
        )
        got = gateway.get_route_status(None, "chat")
        assert got.ready is (status == "True")
        assert got.messages == [message]
        assert got.last_updated == "2026-11-27T10:00:00Z"


# ---- never clobber what others own --------------------------------------------------------


def test_updates_keep_fields_others_own(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    gateway.create_route(chat_route())
    path = ROUTES.format(ns=namespace, name="chat")
    for _ in range(20):  # another owner's read-modify-write, retried as a careful one would
        # while the AI Gateway controller adds its finalizer and status meanwhile
        obj = raw_route(api_client, namespace)
        rule = obj["spec"]["rules"][0]
        rule["timeouts"] = {"request": "120s"}
        rule["backendRefs"][1]["headerMutation"] = {"set": [{"name": "x-canary", "value": "1"}]}
        obj["spec"]["rules"].append(
            {
                "name": "embeddings",
                "matches": [
                    {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "bge"}]}
                ],
                "backendRefs": [{"name": "bge", "weight": 1}],
            }
        )
        obj["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "chat:x"}
        obj["metadata"]["labels"]["team"] = "ml"
        try:
            kubeapi.request(api_client, "PUT", path, body=obj)
            break
        except kubeapi.ApiException as exc:
            if exc.status != 409:
                raise

    gateway.update_traffic_weights(
        None,
        "chat",
        {"llama-v1": 80, "llama-v2": 20},
        annotations={"rollout.model-registry.io/state": "{}"},
    )
    gateway.update_route(chat_route(stable=60, canary=40))
    after = raw_route(api_client, namespace)
    rule = after["spec"]["rules"][0]
    assert rule["timeouts"] == {"request": "120s"}
    assert rule["backendRefs"][1]["headerMutation"] == {"set": [{"name": "x-canary", "value": "1"}]}
    assert [r["weight"] for r in rule["backendRefs"]] == [60, 40]
    assert after["spec"]["rules"][1]["name"] == "embeddings"
    assert after["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] == "chat:x"
    assert after["metadata"]["annotations"]["rollout.model-registry.io/state"] == "{}"
    assert after["metadata"]["labels"]["team"] == "ml"


def test_weight_update_is_one_request_when_the_route_was_read(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.create_route(chat_route())
    gateway.get_route(None, "chat")
    calls: list[str] = []
    original = kubeapi.request

    def counting(api: k8s.ApiClient, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{method} {path.rsplit('/', 2)[-2:]}")
        return original(api, method, path, *args, **kwargs)

    monkeypatch.setattr(kubeapi, "request", counting)
    gateway.update_traffic_weights(None, "chat", {"llama-v1": 99, "llama-v2": 1})
    unparsed = gateway.update_traffic_weights(
        None, "chat", {"llama-v1": 95, "llama-v2": 5}, return_route=False
    )
    assert len(calls) == 2 and all(c.startswith("PATCH") for c in calls), calls
    assert unparsed is None  # not parsed into the model; the answer is in the route store
    manifest = gateway.route_store.manifest(gateway.config.default_namespace, "chat")
    assert manifest is not None
    assert [r["weight"] for r in manifest["spec"]["rules"][0]["backendRefs"]] == [95, 5]


def test_concurrent_writers_lose_no_update(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, namespace: str
) -> None:
    route = chat_route().model_copy(
        update={"backends": [WeightedBackend(name=f"b{k}", weight=10) for k in range(3)]}
    )
    gateway.create_route(route)
    rounds = 12
    errors: list[BaseException] = []

    def weights_writer(k: int) -> None:
        own = KubeAIGatewayClient(api_client, config(namespace))  # its own, soon stale, cache
        try:
            for i in range(rounds):
                own.update_traffic_weights(
                    None, "chat", {f"b{k}": 10 + i}, annotations={f"test.io/writer-{k}": str(i)}
                )
        except BaseException as exc:
            errors.append(exc)

    def annotation_writer() -> None:
        own = KubeAIGatewayClient(api_client, config(namespace))
        try:
            for i in range(rounds):
                own.set_route_annotations(None, "chat", {"test.io/other": str(i)})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=weights_writer, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=annotation_writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    obj = raw_route(api_client, namespace)
    assert [r["weight"] for r in obj["spec"]["rules"][0]["backendRefs"]] == [10 + rounds - 1] * 3
    annotations = obj["metadata"]["annotations"]
    assert {k: annotations[k] for k in annotations if k.startswith("test.io/")} == {
        "test.io/writer-0": str(rounds - 1),
        "test.io/writer-1": str(rounds - 1),
        "test.io/writer-2": str(rounds - 1),
        "test.io/other": str(rounds - 1),
    }


# ---- RBAC ---------------------------------------------------------------------------------


@pytest.fixture
def model_registry_rbac(api_client: k8s.ApiClient) -> Iterator[None]:
    docs = list(yaml.safe_load_all(RBAC_FILE.read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    base = "/apis/rbac.authorization.k8s.io/v1"
    kubeapi.request(api_client, "POST", f"{base}/clusterroles", body=role)
    kubeapi.request(api_client, "POST", f"{base}/clusterrolebindings", body=binding)
    yield
    kubeapi.request(
        api_client, "DELETE", f"{base}/clusterrolebindings/{binding['metadata']['name']}"
    )
    kubeapi.request(api_client, "DELETE", f"{base}/clusterroles/{role['metadata']['name']}")


def test_service_account_bound_by_the_rbac_file_can_do_every_operation_and_no_more(
    control_plane: LocalControlPlane, namespace: str, model_registry_rbac: None
) -> None:
    with control_plane.api_client() as api:
        api.set_default_header(
            "Impersonate-User", "system:serviceaccount:model-registry:model-registry"
        )
        gateway = KubeAIGatewayClient(api, config(namespace))
        assert gateway.is_available()
        make_chain(gateway, "v1")
        make_chain(gateway, "v2")
        gateway.apply_backend(
            Backend(name="llama-v1", endpoints=[FQDNEndpoint(hostname="h", port=1)])
        )
        gateway.apply_service_backend(gateway.get_service_backend(None, "llama-v2"))
        budget = RateLimitConfig(tenant_header="x-tenant", token_budget=10, budget_period="daily")
        gateway.create_route(chat_route(rate_limit=budget))
        gateway.apply_route(chat_route(stable=90, canary=10, rate_limit=budget))
        gateway.list_routes(namespace)
        gateway.list_routes(None, "managed-by=model-registry")
        gateway.get_route_status(None, "chat")
        gateway.update_traffic_weights(
            None,
            "chat",
            {"llama-v1": 50, "llama-v2": 50},
            annotations={"rollout.model-registry.io/state": "{}"},
        )
        gateway.set_route_annotations(None, "chat", {"rollout.model-registry.io/pause": "true"})
        gateway.update_rate_limit_policy(None, "chat", budget)
        gateway.apply_rate_limit_policy(None, "chat", budget)
        gateway.delete_rate_limit_policy(None, "chat")
        gateway.create_rate_limit_policy(None, "chat", budget)
        gateway.delete_route(None, "chat")
        for variant in ("v1", "v2"):
            gateway.delete_service_backend(None, f"llama-{variant}")
            gateway.delete_backend(None, f"llama-{variant}")
        with pytest.raises(kubeapi.ApiException) as info:
            kubeapi.request(api, "GET", f"/api/v1/namespaces/{namespace}/secrets")
        assert info.value.status == 403


def test_unbound_service_account_is_forbidden(
    control_plane: LocalControlPlane, namespace: str
) -> None:
    with control_plane.api_client() as api:
        api.set_default_header("Impersonate-User", "system:serviceaccount:model-registry:other")
        with pytest.raises(ForbiddenError):
            KubeAIGatewayClient(api, config(namespace)).get_route(None, "chat")


def test_falls_back_to_v1alpha1_when_v1beta1_is_not_served(
    gateway: KubeAIGatewayClient, api_client: k8s.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older AI Gateway serves only v1alpha1: discovery picks it, and the real API server
    (which still serves v1alpha1 too) accepts what is written with it."""
    real_request = kubeapi.request

    def older_discovery(api: k8s.ApiClient, method: str, path: str, **kw: Any) -> Any:
        answer = real_request(api, method, path, **kw)
        if path == "/apis/aigateway.envoyproxy.io":
            answer["versions"] = [v for v in answer["versions"] if v["version"] == "v1alpha1"]
        return answer

    monkeypatch.setattr(kubeapi, "request", older_discovery)
    assert gateway._version(manifests.AI_GATEWAY_ROUTE) == "v1alpha1"
    created = gateway.create_route(chat_route())
    assert created.name == "chat"
    obj = raw_route(api_client, gateway.config.default_namespace)
    [ours] = [m for m in obj["metadata"]["managedFields"] if m["manager"] == FIELD_MANAGER]
    assert ours["apiVersion"] == "aigateway.envoyproxy.io/v1alpha1"
