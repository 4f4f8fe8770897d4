"""The route cache on the real API server: the watch keeps RouteStore current through creates,
updates, deletes, a forced 410 re-list and an API server restart; a tick on a stale cache
costs a conflict (retried next tick), never someone else's change; manual controls still act
within a second."""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.analysis.provider import AnalysisRequest, Measurements
from rollout.analysis.verdicts import Measurement
from rollout.config import AIGatewayConfig
from rollout.controller.annotations import ABORT_ANNOTATION, STATE_ANNOTATION
from rollout.controller.reconciler import GatewayChecks, Reconciler
from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.runtime.kube_watch import KubeRouteWatcher
from rollout.controller.scheduler import RolloutController
from rollout.controller.state import DRIFT_REASON, RolloutPhase, RolloutState
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, NotFoundError, WeightedBackend
from rollout.gateway.route_store import RouteStore
from rollout.localcluster import LocalAIGateway, LocalControlPlane
from rollout.policy.loading import load_policy_paths

NO_GATEWAY = GatewayChecks(require_accepted=False, verify_weights=False)


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def gateway_for(api: k8s.ApiClient, namespace: str, store: RouteStore) -> KubeAIGatewayClient:
    config = AIGatewayConfig(enabled=True, default_namespace=namespace)
    return KubeAIGatewayClient(api, config, route_store=store)


def create(gateway: KubeAIGatewayClient, name: str) -> None:
    gateway.create_route(
        AIGatewayRoute(
            name=name,
            model_name=f"m-{name}",
            backends=[
                WeightedBackend(name=f"{name}-v1", weight=100),
                WeightedBackend(name=f"{name}-v2", weight=0),
            ],
        )
    )


def canary(store: RouteStore, namespace: str, name: str) -> int | None:
    """The cached canary weight; None when the cache cannot tell, -1 when it says gone."""
    try:
        snapshot = store.cached_snapshot(namespace, name)
    except NotFoundError:
        return -1
    return None if snapshot is None else snapshot.rules[0].weights[f"{name}-v2"]


def set_weights_behind_our_back(api: k8s.ApiClient, namespace: str, name: str, canary: int) -> None:
    """A person (or a GitOps tool) edits the weights with its own client."""
    other = KubeAIGatewayClient(api, AIGatewayConfig(enabled=True, default_namespace=namespace))
    other.update_traffic_weights(
        namespace, name, {f"{name}-v1": 100 - canary, f"{name}-v2": canary}
    )


class Watching:
    def __init__(self, watcher: KubeRouteWatcher, namespace: str) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=watcher.watch, args=([namespace], lambda _c: None, self.stop), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def watching() -> Iterator[Callable[[KubeRouteWatcher, str], Watching]]:
    started: list[Watching] = []

    def start(watcher: KubeRouteWatcher, namespace: str) -> Watching:
        started.append(Watching(watcher, namespace))
        return started[-1]

    yield start
    for w in started:
        w.close()


def test_cache_follows_creates_updates_and_deletes(
    api_client: k8s.ApiClient, namespace: str, watching: Callable[..., Watching]
) -> None:
    store = RouteStore()
    gateway = gateway_for(api_client, namespace, RouteStore())  # writes not fed: watch only
    create(gateway, "before")
    watching(KubeRouteWatcher(api_client, store=store), namespace)
    assert wait_for(lambda: store.synced(namespace), 5)
    assert canary(store, namespace, "before") == 0  # listed

    create(gateway, "chat")
    assert wait_for(lambda: canary(store, namespace, "chat") == 0, 2)

    set_weights_behind_our_back(api_client, namespace, "chat", 30)
    assert wait_for(lambda: canary(store, namespace, "chat") == 30, 2)
    gateway.set_route_annotations(namespace, "chat", {"team": "ml"})
    assert wait_for(
        lambda: (
            (s := store.cached_snapshot(namespace, "chat")) is not None
            and s.annotations.get("team") == "ml"
        ),
        2,
    )

    gateway.delete_route(namespace, "chat")  # waits out the AI Gateway controller's finalizer
    assert wait_for(lambda: canary(store, namespace, "chat") == -1, 2)
    with pytest.raises(NotFoundError):
        store.cached_snapshot(namespace, "chat")
    assert canary(store, namespace, "before") == 0


def test_a_forced_410_relists_and_drops_what_was_deleted_unseen(
    api_client: k8s.ApiClient,
    namespace: str,
    watching: Callable[..., Watching],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = gateway_for(api_client, namespace, RouteStore())
    create(gateway, "stays")
    create(gateway, "goes")
    original = KubeRouteWatcher._list
    lists: list[str | None] = []

    def list_then_lose_track(self: KubeRouteWatcher, scope: Any, session: Any) -> None:
        original(self, scope, session)
        lists.append(scope.resource_version)
        if len(lists) == 1:
            # Deleted after the LIST, and the watch resumes from a compacted version: the
            # server answers 410 Gone, so the DELETED event is never delivered; only the
            # re-LIST can tell.
            gateway.delete_route(namespace, "goes")
            scope.resource_version = "1"

    monkeypatch.setattr(KubeRouteWatcher, "_list", list_then_lose_track)
    store = RouteStore()
    watching(KubeRouteWatcher(api_client, store=store), namespace)
    assert wait_for(lambda: len(lists) >= 2, 15)
    assert wait_for(lambda: store.synced(namespace), 2)
    assert canary(store, namespace, "goes") == -1
    assert canary(store, namespace, "stays") == 0
    create(gateway, "after")
    assert wait_for(lambda: canary(store, namespace, "after") == 0, 2)


def test_a_stale_cache_costs_a_conflict_never_someone_elses_change(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    store = RouteStore()
    gateway = gateway_for(api_client, namespace, store)
    create(gateway, "chat")
    (tmp_path / "p.yaml").write_text(policy("chat", namespace, "2s"))
    (policy_obj,) = load_policy_paths([tmp_path]).policies
    reconciler = Reconciler(
        gateway, KubeEventRecorder(api_client), routes=store, gateway_checks=NO_GATEWAY
    )

    # The cache as a LIST left it, and then no watch: it goes stale.
    store.replace(namespace, list_manifests(api_client, namespace))
    now = time_now()
    started = reconciler.tick(policy_obj, now, None)
    assert started.wrote and live_canary(gateway, namespace, "chat") == 20
    set_weights_behind_our_back(api_client, namespace, "chat", 40)
    assert canary(store, namespace, "chat") == 20  # the cache has not seen it

    later = now + timedelta(seconds=3)  # the step's check is due: it passes and would step
    stepped = reconciler.tick(policy_obj, later, passing)
    assert stepped.skipped == "weights changed between read and write"
    assert live_canary(gateway, namespace, "chat") == 40  # not overwritten
    # The conflict sent the next read to the API: the next tick sees the change as drift.
    retried = reconciler.tick(policy_obj, later + timedelta(seconds=1), passing)
    assert retried.decision is not None
    assert retried.decision.state.phase is RolloutPhase.PAUSED
    assert DRIFT_REASON in (retried.decision.state.reason or "")
    assert live_canary(gateway, namespace, "chat") == 40


def test_after_a_write_the_cache_holds_its_answer(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path, ai_gateway: LocalAIGateway
) -> None:
    # Comparing resourceVersions needs a route nobody else writes meanwhile: the AI Gateway
    # controller would add its finalizer and status after our write (the cache follows those
    # through the watch, which this test does not run).
    ai_gateway.suspend()
    try:
        _check_the_cache_holds_the_write(api_client, namespace, tmp_path)
    finally:
        ai_gateway.resume()


def _check_the_cache_holds_the_write(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    store = RouteStore()
    gateway = gateway_for(api_client, namespace, store)
    create(gateway, "chat")
    (tmp_path / "p.yaml").write_text(policy("chat", namespace, "2s"))
    (policy_obj,) = load_policy_paths([tmp_path]).policies
    reconciler = Reconciler(
        gateway, KubeEventRecorder(api_client), routes=store, gateway_checks=NO_GATEWAY
    )
    store.replace(namespace, list_manifests(api_client, namespace))
    result = reconciler.tick(policy_obj, time_now(), None)
    assert result.wrote and result.decision is not None
    assert result.decision.state.phase is RolloutPhase.PROGRESSING
    cached = store.cached_snapshot(namespace, "chat")
    assert cached is not None and cached.rules[0].weights["chat-v2"] == 20
    assert STATE_ANNOTATION in cached.annotations
    live = gateway.get_route_snapshot(namespace, "chat")
    assert cached.resource_version == live.resource_version


def test_manual_controls_act_within_a_second(
    api_client: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    store = RouteStore()
    gateway = gateway_for(api_client, namespace, store)
    create(gateway, "chat")
    (tmp_path / "p.yaml").write_text(policy("chat", namespace, "1h"))
    controller = RolloutController(
        gateway=gateway,
        provider=NoMetrics(),
        reconciler=Reconciler(
            gateway,
            KubeEventRecorder(api_client, workers=2),
            routes=store,
            gateway_checks=NO_GATEWAY,
        ),
        policy_paths=[tmp_path],
        watcher=KubeRouteWatcher(api_client, store=store),
        watch_namespaces=[namespace],
        reload_seconds=60,
        tick_workers=4,
    )
    controller.start()
    try:
        assert wait_for(lambda: live_canary(gateway, namespace, "chat") == 20, 5, every=0.05)
        other = KubeAIGatewayClient(
            api_client, AIGatewayConfig(enabled=True, default_namespace=namespace)
        )
        started = time.monotonic()
        other.set_route_annotations(namespace, "chat", {ABORT_ANNOTATION: "true"})
        assert wait_for(lambda: live_canary(gateway, namespace, "chat") == 0, 5, every=0.02)
        took = time.monotonic() - started
        assert took < 1.0, f"abort took {took:.2f}s"
        state = RolloutState.from_annotation(
            gateway.get_route_annotations(namespace, "chat")[STATE_ANNOTATION]
        )
        assert state.phase is RolloutPhase.ABORTED
    finally:
        controller.stop()


def test_a_watch_broken_by_an_api_server_restart_relists_and_carries_on(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    store = RouteStore()
    with control_plane.api_client() as api:
        gateway = gateway_for(api_client, namespace, RouteStore())
        create(gateway, "chat")
        stop = threading.Event()
        watcher = KubeRouteWatcher(api, store=store, min_backoff=0.2, max_backoff=0.5)
        thread = threading.Thread(
            target=watcher.watch, args=([namespace], lambda _c: None, stop), daemon=True
        )
        thread.start()
        try:
            assert wait_for(lambda: canary(store, namespace, "chat") == 0, 5)
            control_plane.restart_apiserver()
            # While it was down the watch broke: the cache stopped answering until it was back.
            assert wait_for(lambda: store.synced(namespace), 20, every=0.1)
            set_weights_behind_our_back(api_client, namespace, "chat", 60)
            create(gateway, "after")
            assert wait_for(lambda: canary(store, namespace, "chat") == 60, 5)
            assert wait_for(lambda: canary(store, namespace, "after") == 0, 5)
        finally:
            stop.set()
            thread.join(10)


# --- helpers ----------------------------------------------------------------------------------


class NoMetrics:
    """Reactions and the first step never ask for measurements."""

    def measure(self, requests: Sequence[AnalysisRequest]) -> Measurements:
        raise AssertionError("no analysis expected")

    def is_online(self) -> bool:
        return True


def policy(route: str, namespace: str, interval: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {{name: {route}-{uuid.uuid4().hex[:6]}}}
        spec:
          route: {{namespace: {namespace}, name: {route}}}
          stable: {{backend: {route}-v1, modelNameOverride: {namespace}-{route}-v1}}
          canary: {{backend: {route}-v2, modelNameOverride: {namespace}-{route}-v2}}
          steps: [20, 50]
          analysis:
            interval: {interval}
            window: {interval}
            minRequests: 1
            metrics: [{{kind: error-rate, max: 0.05}}]
        """)


def time_now() -> datetime:
    return datetime.now(UTC)


def passing(*_: object) -> dict[str, Measurement]:
    return {
        "error-rate": Measurement(metric="error-rate", canary=0.0, stable=0.0, canary_requests=100)
    }


def list_manifests(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    path = f"/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{namespace}/aigatewayroutes"
    listed = kubeapi.request(api, "GET", path)
    items: list[dict[str, Any]] = listed["items"]
    for item in items:
        item.setdefault("apiVersion", listed["apiVersion"])
        item.setdefault("kind", "AIGatewayRoute")
    return items


def live_canary(gateway: KubeAIGatewayClient, namespace: str, name: str) -> int:
    path = f"/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{namespace}/aigatewayroutes/{name}"
    obj = kubeapi.request(gateway.api_client, "GET", path)
    refs = {r["name"]: r.get("weight", 1) for r in obj["spec"]["rules"][0]["backendRefs"]}
    return int(refs[f"{name}-v2"])
