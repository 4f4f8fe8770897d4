"""The local control plane is a real one: upstream CRD validation (OpenAPI + CEL), strict
field validation and RBAC are enforced by a real kube-apiserver."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from rollout.localcluster import LocalControlPlane

GROUP, VERSION = "aigateway.envoyproxy.io", "v1beta1"


def service_backend(name: str, backend_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AIServiceBackend",
        "metadata": {"name": name},
        "spec": {"schema": {"name": "OpenAI"}, "backendRef": backend_ref},
    }


def create_backend(api: k8s.ApiClient, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
    return k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "aiservicebackends", body, **kw
    )


def test_version_is_the_built_one(api_client: k8s.ApiClient) -> None:
    info = k8s.VersionApi(api_client).get_code()
    assert info.git_version.startswith("v1.36.")


def test_accepts_a_backend_ref_to_an_envoy_gateway_backend(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    ref = {"name": "llama-v1", "group": "gateway.envoyproxy.io", "kind": "Backend"}
    created = create_backend(api_client, namespace, service_backend("ok", ref))
    assert created["spec"]["backendRef"]["kind"] == "Backend"


def test_rejects_a_backend_ref_to_a_kubernetes_service(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    """An upstream CEL rule: AIServiceBackend may only reference gateway.envoyproxy.io/Backend."""
    ref = {"name": "llama-v1", "group": "", "kind": "Service"}
    with pytest.raises(ApiException) as info:
        create_backend(api_client, namespace, service_backend("svc", ref))
    assert info.value.status == 422
    assert "Backend" in json.loads(info.value.body)["message"]


def test_strict_field_validation_rejects_unknown_fields(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    ref = {"name": "b", "group": "gateway.envoyproxy.io", "kind": "Backend"}
    body = service_backend("strict", ref)
    body["spec"]["filterConfig"] = {"type": "OpenAI"}  # removed upstream long ago
    with pytest.raises(ApiException) as info:
        create_backend(api_client, namespace, body, field_validation="Strict")
    assert info.value.status == 400  # strict decoding errors are BadRequest, not Invalid
    assert 'unknown field "spec.filterConfig"' in json.loads(info.value.body)["message"]
    # Without strictness the same field is silently pruned: why the adapter always asks.
    body["metadata"]["name"] = "lenient"
    created = create_backend(api_client, namespace, body)
    assert "filterConfig" not in created["spec"]


def test_user_without_a_role_is_forbidden(control_plane: LocalControlPlane, namespace: str) -> None:
    with (
        control_plane.api_client(user="nobody", groups=()) as api,
        pytest.raises(ApiException) as info,
    ):
        k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "aigatewayroutes"
        )
    assert info.value.status == 403


def test_impersonated_service_account_gets_exactly_its_cluster_role(
    api_client: k8s.ApiClient, control_plane: LocalControlPlane, namespace: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(api_client)
    role = f"read-routes-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role(
        k8s.V1ClusterRole(
            metadata=k8s.V1ObjectMeta(name=role),
            rules=[
                k8s.V1PolicyRule(
                    api_groups=[GROUP], resources=["aigatewayroutes"], verbs=["get", "list"]
                )
            ],
        )
    )
    rbac.create_cluster_role_binding(
        k8s.V1ClusterRoleBinding(
            metadata=k8s.V1ObjectMeta(name=role),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
    )
    try:
        with control_plane.api_client() as api:
            api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:reader")
            custom = k8s.CustomObjectsApi(api)
            listed = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "aigatewayroutes"
            )
            assert listed["items"] == []
            with pytest.raises(ApiException) as info:
                create_backend(
                    api,
                    namespace,
                    service_backend(
                        "x", {"name": "b", "group": "gateway.envoyproxy.io", "kind": "Backend"}
                    ),
                )
            assert info.value.status == 403
            with pytest.raises(ApiException) as info:
                k8s.CoreV1Api(api).list_namespaced_secret(namespace)
            assert info.value.status == 403
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)


def test_stop_leaves_no_process_and_no_folder(control_plane: LocalControlPlane) -> None:
    """A second, short-lived control plane: after stop, its processes and folder are gone."""
    plane = LocalControlPlane(crd_dirs=control_plane.crd_dirs)
    with plane:
        pids, workdir = plane.pids(), plane.workdir
        assert len(pids) == 2 and workdir.is_dir()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_free(pid)
    assert not workdir.exists()


def _is_zombie_free(pid: int) -> bool:
    # A reaped child's pid may be reused by an unrelated process; it is not ours then.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return True
    return b"kube-apiserver" not in cmd and b"etcd" not in cmd


def test_a_token_budget_above_2_to_the_31_is_accepted_by_the_real_crd(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    """Envoy Gateway v1.8.3 declares limit.requests as int64 (v1.8.1 said int32 with a uint32
    maximum, which kube-apiserver refused for every object): budgets up to 2^32-1 now fit."""
    policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": "p"},
        "spec": {
            "targetRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}
            ],
            "rateLimit": {
                "type": "Global",
                "global": {"rules": [{"limit": {"requests": 2**31 + 7, "unit": "Month"}}]},
            },
        },
    }
    created = k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "gateway.envoyproxy.io", "v1alpha1", namespace, "backendtrafficpolicies", policy
    )
    assert created["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] == 2**31 + 7
