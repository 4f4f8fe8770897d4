"""kubeapi.request's two paths against the real kube-apiserver: the fast transport and the
official client's urllib3 stack give the same answers and the same errors, with client
certificates and with bearer tokens (refreshed through the configuration's hook)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.kubehttp import FastTransport
from rollout.localcluster import LocalControlPlane


@pytest.fixture
def both(control_plane: LocalControlPlane) -> Iterator[tuple[k8s.ApiClient, k8s.ApiClient]]:
    """A client on the fast path and one on the official client's path."""
    fast = control_plane.api_client()
    kubeapi.use_fast_path(False)
    try:
        slow = control_plane.api_client()
        kubeapi.request(slow, "GET", "/version")  # binds this client to the official path
    finally:
        kubeapi.use_fast_path(True)
    kubeapi.request(fast, "GET", "/version")
    assert isinstance(kubeapi._transports[fast], FastTransport)
    assert kubeapi._transports[slow] is None
    with fast, slow:
        yield fast, slow


def _namespace(api: k8s.ApiClient) -> str:
    name = f"transport-{uuid.uuid4().hex[:8]}"
    kubeapi.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name}})
    return name


def _error(api: k8s.ApiClient, method: str, path: str, **kwargs: Any) -> kubeapi.ApiException:
    with pytest.raises(kubeapi.ApiException) as caught:
        kubeapi.request(api, method, path, **kwargs)
    return caught.value


def test_both_paths_answer_alike(both: tuple[k8s.ApiClient, k8s.ApiClient]) -> None:
    fast, slow = both
    namespace = _namespace(fast)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    for api, name in ((fast, "by-fast"), (slow, "by-slow")):
        made = kubeapi.request(
            api, "POST", path, body={"metadata": {"name": name}, "data": {"k": "v"}}
        )
        assert made["metadata"]["name"] == name
        patched = kubeapi.request(
            api,
            "PATCH",
            f"{path}/{name}",
            body=[
                {"op": "test", "path": "/data/k", "value": "v"},
                {"op": "replace", "path": "/data/k", "value": "w"},
            ],
            content_type=kubeapi.JSON_PATCH,
            query={"fieldManager": "transport-test"},
        )
        assert patched["data"] == {"k": "w"}
        merged = kubeapi.request(
            api,
            "PATCH",
            f"{path}/{name}",
            body={"metadata": {"annotations": {"a": "1"}}},
            content_type=kubeapi.MERGE_PATCH,
        )
        assert merged["metadata"]["annotations"] == {"a": "1"}
    listed = {
        api: sorted(
            item["metadata"]["name"]
            for item in kubeapi.request(api, "GET", path, query={"labelSelector": "!missing"})[
                "items"
            ]
        )
        for api in (fast, slow)
    }
    assert listed[fast] == listed[slow] and "by-fast" in listed[fast] and "by-slow" in listed[fast]
    big = {"metadata": {"name": "big"}, "data": {"blob": "x" * 300_000}}
    kubeapi.request(fast, "POST", path, body=big)
    assert kubeapi.request(fast, "GET", f"{path}/big") == kubeapi.request(
        slow, "GET", f"{path}/big"
    )
    assert kubeapi.request(fast, "GET", f"{path}/big", decode=False) is None
    for api in (fast, slow):
        kubeapi.request(api, "DELETE", f"{path}/by-fast" if api is fast else f"{path}/by-slow")


def test_both_paths_fail_alike(both: tuple[k8s.ApiClient, k8s.ApiClient]) -> None:
    fast, slow = both
    namespace = _namespace(fast)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    kubeapi.request(fast, "POST", path, body={"metadata": {"name": "here"}})
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{path}/missing", {}),
        ("POST", path, {"body": {"metadata": {"name": "here"}}}),
        ("POST", path, {"body": {"metadata": {"name": "Not_A_Name"}}}),
        (
            "PATCH",
            f"{path}/here",
            {
                "body": [{"op": "test", "path": "/metadata/name", "value": "other"}],
                "content_type": kubeapi.JSON_PATCH,
            },
        ),
    ]
    for method, where, kwargs in cases:
        got, expected = _error(fast, method, where, **kwargs), _error(slow, method, where, **kwargs)
        assert type(got) is type(expected)
        assert got.status == expected.status and got.reason == expected.reason
        assert _status_body(got) == _status_body(expected)


def _status_body(exc: kubeapi.ApiException) -> dict[str, Any]:
    import json

    body = json.loads(exc.body or "{}")
    body.get("details", {}).pop("uid", None)
    return {k: v for k, v in body.items() if k != "metadata"}


def test_request_all_answers_each_call_in_order_on_both_paths(
    both: tuple[k8s.ApiClient, k8s.ApiClient],
) -> None:
    """Pipelined on the fast path (kube-apiserver answers a connection's requests in order),
    one by one on the other: the same answers, and a failed call does not hide the rest."""
    fast, slow = both
    namespace = _namespace(fast)
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    for api, prefix in ((fast, "fast"), (slow, "slow")):
        calls = [
            kubeapi.Call("POST", path, {"metadata": {"name": f"{prefix}-{i}"}}) for i in range(40)
        ]
        calls.insert(5, kubeapi.Call("GET", f"{path}/missing"))
        calls.insert(7, kubeapi.Call("POST", path, {"metadata": {"name": f"{prefix}-0"}}))
        calls.append(
            kubeapi.Call(
                "PATCH",
                f"{path}/{prefix}-3",
                {"data": {"k": "v"}},
                content_type=kubeapi.MERGE_PATCH,
            )
        )
        got = kubeapi.request_all(api, calls)
        assert len(got) == 43
        assert isinstance(got[5], kubeapi.ApiException) and got[5].status == 404
        assert isinstance(got[7], kubeapi.ApiException) and got[7].status == 409
        made = [answer["metadata"]["name"] for answer in got[:5] + got[6:7] + got[8:42]]
        assert made == [f"{prefix}-{i}" for i in range(40)]
        assert got[42]["data"] == {"k": "v"}
        read = kubeapi.Call("GET", f"{path}/{prefix}-1")
        assert kubeapi.request_all(api, [read, read], decode=False) == [None, None]
    transport = kubeapi._transports[fast]
    assert transport is not None and transport.connections_made == 1


def test_one_connection_carries_many_requests(control_plane: LocalControlPlane) -> None:
    with control_plane.api_client() as api:
        for _ in range(50):
            kubeapi.request(api, "GET", "/api/v1/namespaces/default")
        transport = kubeapi._transports[api]
        assert transport is not None and transport.connections_made == 1


def test_a_bearer_token_is_sent_and_refreshed(control_plane: LocalControlPlane) -> None:
    admin = control_plane.api_client()
    namespace = _namespace(admin)
    for name in ("first", "second"):
        kubeapi.request(
            admin,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            body={"metadata": {"name": name}},
        )

    def token(name: str) -> str:
        answer = kubeapi.request(
            admin,
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
        return str(answer["status"]["token"])

    tokens = {name: token(name) for name in ("first", "second")}
    configuration = k8s.Configuration(host=admin.configuration.host)
    configuration.ssl_ca_cert = admin.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": tokens["first"]}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    refreshed: list[str] = []

    def refresh(config: k8s.Configuration) -> None:
        # What the kubeconfig loader's exec and token-file hooks do: a new token in place.
        if len(refreshed) >= 1:
            config.api_key = {"authorization": tokens["second"]}
        refreshed.append("called")

    configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
    with k8s.ApiClient(configuration) as api:
        for name in ("first", "second"):
            denied = _error(api, "GET", "/api/v1/namespaces/default/secrets")
            assert denied.status == 403
            assert f"system:serviceaccount:{namespace}:{name}" in (denied.body or "")
        assert isinstance(kubeapi._transports[api], FastTransport)
    assert len(refreshed) == 2
