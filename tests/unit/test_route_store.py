"""RouteStore, the watch-fed cache ticks read: newest resourceVersion wins, deletions are
remembered, and it answers only while its watch is synced."""

from __future__ import annotations

from typing import Any

import pytest

from rollout.gateway.errors import NotFoundError
from rollout.gateway.port import RouteCache
from rollout.gateway.route_store import RouteStore, resource_version_of


def route(
    name: str, rv: str, canary: int = 0, namespace: str = "llm", **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv,
            "managedFields": [{"manager": "x", "fieldsV1": {"f:spec": {}}}],
            **meta,
        },
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "v1", "weight": 100 - canary},
                        {"name": "v2", "weight": canary},
                    ]
                }
            ]
        },
        "status": {"conditions": [{"type": "Accepted", "status": "True", "message": "ok"}]},
    }


def canary_of(store: RouteStore, name: str = "chat", namespace: str = "llm") -> int | None:
    snapshot = store.cached_snapshot(namespace, name)
    return None if snapshot is None else snapshot.rules[0].weights["v2"]


def test_it_is_the_route_cache_port() -> None:
    assert isinstance(RouteStore(), RouteCache)


def test_nothing_is_answered_before_the_scope_is_listed() -> None:
    store = RouteStore()
    store.observe(route("chat", "5"))
    assert store.cached_snapshot("llm", "chat") is None  # a GET must answer
    assert store.manifest("llm", "chat") is not None  # but a patch can be built from it
    store.replace("llm", [route("chat", "5", canary=10)])
    assert canary_of(store) == 0  # same version: the copy held already is as new
    assert store.stats["misses"] == 1 and store.stats["hits"] == 1


def test_the_manifest_is_the_object_without_managed_fields_and_status_and_ours() -> None:
    store = RouteStore()
    obj = route("chat", "7", canary=25, annotations={"a": "é", "b": '{"x": [1.5, null]}'})
    obj["spec"]["big"] = 2**62
    store.observe(obj)
    expected = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"},
        "spec": obj["spec"],
    }
    manifest = store.manifest("llm", "chat")
    assert manifest == expected
    assert manifest is not None
    manifest["spec"]["rules"][0]["backendRefs"][1]["weight"] = 99  # the caller's own copy
    assert store.manifest("llm", "chat") == expected


@pytest.mark.parametrize(
    "annotations",
    [None, {}, {"rollout.model-registry.io/state": "{}", "z": "1", "a": "2"}, {"n": 1}],
    ids=["null", "empty", "several", "not-strings"],
)
def test_the_manifest_keeps_the_annotations_as_read(annotations: object) -> None:
    store = RouteStore()
    obj = route("chat", "7")
    obj["metadata"]["annotations"] = annotations
    obj["metadata"]["labels"] = {"after": "annotations"}
    store.observe(obj)
    manifest = store.manifest("llm", "chat")
    assert manifest is not None
    assert list(manifest["metadata"].items()) == [
        (k, v) for k, v in obj["metadata"].items() if k != "managedFields"
    ]
    if isinstance(annotations, dict):
        assert list(manifest["metadata"]["annotations"].items()) == list(annotations.items())
        manifest["metadata"]["annotations"]["new"] = "x"  # ours: the kept ones stay
        again = store.manifest("llm", "chat")
        assert again is not None and "new" not in again["metadata"]["annotations"]
    store.mark_synced("llm")
    snapshot = store.cached_snapshot("llm", "chat")
    if annotations == {"n": 1}:
        assert snapshot is None  # not a route the snapshot describes: the API answers
    else:
        assert snapshot is not None and dict(snapshot.annotations) == (annotations or {})


def test_a_manifest_json_cannot_hold_is_kept_as_it_is() -> None:
    store = RouteStore()
    obj = route("chat", "7")
    obj["spec"]["huge"] = 2**70  # beyond what orjson writes
    store.observe(obj)
    manifest = store.manifest("llm", "chat")
    assert manifest is not None and manifest["spec"]["huge"] == 2**70
    manifest["spec"]["huge"] = 0
    assert store.manifest("llm", "chat")["spec"]["huge"] == 2**70  # type: ignore[index]


def test_an_older_version_never_replaces_a_newer_one() -> None:
    store = RouteStore()
    store.replace(None, [route("chat", "10")])
    store.observe(route("chat", "12", canary=50))  # the answer of our write
    store.observe(route("chat", "11", canary=10))  # a watch event from before it, late
    assert canary_of(store) == 50
    store.observe(route("chat", "13", canary=75))
    assert canary_of(store) == 75


def test_the_kept_copy_drops_managed_fields_and_status() -> None:
    store = RouteStore()
    store.replace(None, [route("chat", "3")])
    manifest = store.manifest("llm", "chat")
    assert manifest is not None
    assert "managedFields" not in manifest["metadata"] and "status" not in manifest
    snapshot = store.cached_snapshot("llm", "chat")
    assert snapshot is not None and snapshot.status.ready and snapshot.resource_version == "3"


def test_a_deleted_route_is_gone_and_a_late_older_answer_does_not_revive_it() -> None:
    store = RouteStore()
    store.replace("llm", [route("chat", "10")])
    store.delete(route("chat", "20"))
    with pytest.raises(NotFoundError):
        store.cached_snapshot("llm", "chat")
    store.observe(route("chat", "15", canary=50))  # a write answered before the deletion
    with pytest.raises(NotFoundError):
        store.cached_snapshot("llm", "chat")
    store.observe(route("chat", "21", canary=10))  # created again
    assert canary_of(store) == 10


def test_a_relist_drops_what_it_no_longer_shows_in_its_scope_only() -> None:
    store = RouteStore()
    store.replace("llm", [route("chat", "1"), route("code", "2")])
    store.replace("other", [route("chat", "3", namespace="other")])
    store.replace("llm", [route("chat", "4")])
    with pytest.raises(NotFoundError):
        store.cached_snapshot("llm", "code")
    assert canary_of(store, "chat", "other") == 0
    assert len(store) == 2


def test_unsynced_scopes_and_invalidated_copies_send_reads_to_the_api() -> None:
    store = RouteStore()
    store.replace("llm", [route("chat", "7", canary=25)])
    store.mark_unsynced("llm")
    assert store.cached_snapshot("llm", "chat") is None
    store.mark_synced("llm")
    assert canary_of(store) == 25
    store.invalidate("llm", "chat")
    assert store.cached_snapshot("llm", "chat") is None
    assert store.manifest("llm", "chat") is None
    store.observe(route("chat", "7", canary=25))  # a fresh GET of the same version
    assert canary_of(store) == 25


def test_a_cluster_wide_watch_answers_for_every_namespace() -> None:
    store = RouteStore()
    store.replace(None, [route("chat", "1", namespace="a")])
    assert canary_of(store, "chat", "a") == 0
    with pytest.raises(NotFoundError):
        store.cached_snapshot("b", "chat")


def test_resource_versions_that_are_not_integers_are_always_taken() -> None:
    assert resource_version_of(route("x", "abc")) is None
    store = RouteStore()
    store.replace(None, [route("chat", "9", canary=10)])
    store.observe(route("chat", "opaque", canary=30))
    assert canary_of(store) == 30


def test_the_adapter_writes_into_the_store_it_is_given_even_an_empty_one() -> None:
    from rollout.config import AIGatewayConfig
    from rollout.gateway.kube import KubeAIGatewayClient

    store = RouteStore()  # empty, hence falsy: `store or RouteStore()` would drop it
    adapter = KubeAIGatewayClient(None, AIGatewayConfig(), route_store=store)
    assert adapter.route_store is store
