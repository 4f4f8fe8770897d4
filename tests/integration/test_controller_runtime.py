"""The controller's Kubernetes adapters (Events, Lease election, route watch) against a real
kube-apiserver with RBAC and the upstream AI Gateway CRDs."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s
from structlog.testing import capture_logs

from rollout import kubeapi
from rollout.controller.annotations import PAUSE_ANNOTATION
from rollout.controller.ports import ObjectRef, RouteChange
from rollout.controller.runtime import KubeEventRecorder, KubeLeaseElector, KubeRouteWatcher
from rollout.controller.state import EventReason, EventType
from rollout.localcluster import LocalAIGateway, LocalControlPlane

EVENTS = "/api/v1/namespaces/{ns}/events"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}"
ROUTES = "/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{ns}/aigatewayroutes"
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SECONDS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# Short timings keep the election tests fast; the ordering is what matters.
LEASE_DURATION = 2.0
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.2


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Ticking:
    """A wall clock that moves one second per call, so timestamps differ visibly."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 11, 27, 15, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


# ---- Events -------------------------------------------------------------------------------


def route_ref(namespace: str, name: str = "chat") -> ObjectRef:
    return ObjectRef(
        api_version="aigateway.envoyproxy.io/v1beta1",
        kind="AIGatewayRoute",
        namespace=namespace,
        name=name,
        uid="2f4c1f38-5f0e-4f7e-9d59-0c6a7a9f3b11",
    )


def events_about(api: k8s.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = kubeapi.request(
        api,
        "GET",
        EVENTS.format(ns=namespace),
        query={"fieldSelector": f"involvedObject.name={name}"},
    )
    items: list[dict[str, Any]] = listed["items"]
    return sorted(items, key=lambda e: e["metadata"]["name"])


def test_recorded_event_is_visible_with_its_object_reason_and_type(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    recorder = KubeEventRecorder(api_client, host="replica-0")
    recorder.record(
        route_ref(namespace), EventReason.STEP_ADVANCED, "canary at 10%", EventType.NORMAL
    )
    [event] = events_about(api_client, namespace, "chat")
    assert event["involvedObject"] == {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "namespace": namespace,
        "name": "chat",
        "uid": "2f4c1f38-5f0e-4f7e-9d59-0c6a7a9f3b11",
    }
    assert (event["reason"], event["type"], event["message"]) == (
        "StepAdvanced",
        "Normal",
        "canary at 10%",
    )
    assert event["count"] == 1
    assert event["source"] == {"component": "rollout-controller", "host": "replica-0"}
    assert (event["reportingComponent"], event["reportingInstance"]) == (
        "rollout-controller",
        "replica-0",
    )
    assert SECONDS_TIME.match(event["firstTimestamp"])
    assert event["firstTimestamp"] == event["lastTimestamp"]
    assert re.fullmatch(r"chat\.[0-9a-f]+", event["metadata"]["name"])


def test_repeated_identical_event_increments_count(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    recorder = KubeEventRecorder(api_client, now=Ticking())
    ref = route_ref(namespace)
    for _ in range(3):
        recorder.record(ref, EventReason.ANALYSIS_FAILED, "error rate 7%", EventType.WARNING)
    recorder.record(ref, EventReason.ANALYSIS_FAILED, "error rate 9%", EventType.WARNING)

    events = events_about(api_client, namespace, "chat")
    assert sorted((e["message"], e["count"], e["type"]) for e in events) == [
        ("error rate 7%", 3, "Warning"),
        ("error rate 9%", 1, "Warning"),
    ]
    repeated = next(e for e in events if e["message"] == "error rate 7%")
    assert repeated["firstTimestamp"] == "2026-11-27T15:00:01Z"
    assert repeated["lastTimestamp"] == "2026-11-27T15:00:03Z"


def test_identical_event_after_the_window_is_a_new_event(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    clock = FakeClock(100.0)
    recorder = KubeEventRecorder(api_client, clock=clock)
    ref = route_ref(namespace)
    recorder.record(ref, EventReason.PAUSED, "paused by annotation", EventType.NORMAL)
    clock.advance(599.0)
    recorder.record(ref, EventReason.PAUSED, "paused by annotation", EventType.NORMAL)
    clock.advance(601.0)
    recorder.record(ref, EventReason.PAUSED, "paused by annotation", EventType.NORMAL)
    assert [e["count"] for e in events_about(api_client, namespace, "chat")] == [2, 1]


def test_event_deleted_meanwhile_is_created_again(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    recorder = KubeEventRecorder(api_client)
    ref = route_ref(namespace)
    recorder.record(ref, EventReason.ROLLED_BACK, "rolled back", EventType.WARNING)
    [first] = events_about(api_client, namespace, "chat")
    kubeapi.request(
        api_client, "DELETE", f"{EVENTS.format(ns=namespace)}/{first['metadata']['name']}"
    )
    recorder.record(ref, EventReason.ROLLED_BACK, "rolled back", EventType.WARNING)
    [second] = events_about(api_client, namespace, "chat")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert second["count"] == 1


def test_a_burst_of_events_goes_out_pipelined_with_repeats_counted(
    api_client: k8s.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What queues while a sender writes goes out in one pipelined write; an Event repeated
    within a burst still counts up the first one (it waits for the first one's answer)."""
    sizes: list[int] = []
    real = kubeapi.request_all

    def spy(api: k8s.ApiClient, calls: list[kubeapi.Call], **kwargs: Any) -> list[Any]:
        sizes.append(len(calls))
        return real(api, calls, **kwargs)

    monkeypatch.setattr(kubeapi, "request_all", spy)
    recorder = KubeEventRecorder(api_client, workers=1, now=Ticking())
    for i in range(30):
        recorder.record(
            route_ref(namespace, f"r{i}"), EventReason.STEP_ADVANCED, f"step {i}", EventType.NORMAL
        )
    for _ in range(3):
        recorder.record(
            route_ref(namespace, "r0"),
            EventReason.ANALYSIS_FAILED,
            "error rate 7%",
            EventType.WARNING,
        )
    assert recorder.flush(10.0)
    recorder.close()
    assert max(sizes) > 1 and sum(sizes) == 33, sizes
    for i in range(1, 30):
        [event] = events_about(api_client, namespace, f"r{i}")
        assert (event["message"], event["count"]) == (f"step {i}", 1)
    assert sorted(
        (e["message"], e["count"]) for e in events_about(api_client, namespace, "r0")
    ) == [
        ("error rate 7%", 3),
        ("step 0", 1),
    ]


def test_long_message_is_cut_at_1024_bytes_without_splitting_a_character(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    recorder = KubeEventRecorder(api_client)
    recorder.record(route_ref(namespace), "Long", "é" * 2000, EventType.NORMAL)
    [event] = events_about(api_client, namespace, "chat")
    message: str = event["message"]
    assert message.endswith("...")
    assert len(message.encode("utf-8")) <= 1024
    assert set(message[:-3]) == {"é"}
    assert len(message) == 3 + (1024 - 3) // 2


def test_event_name_stays_valid_for_a_maximal_route_name(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    name = "r" * 253
    KubeEventRecorder(api_client).record(route_ref(namespace, name), "Long", "x", EventType.NORMAL)
    [event] = events_about(api_client, namespace, name)
    assert len(event["metadata"]["name"]) <= 253


def test_forbidden_recorder_logs_and_does_not_raise(
    control_plane: LocalControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    with (
        control_plane.api_client(user="nobody", groups=()) as forbidden,
        capture_logs() as logs,
    ):
        KubeEventRecorder(forbidden).record(
            route_ref(namespace), EventReason.PAUSED, "paused", EventType.NORMAL
        )
    assert events_about(api_client, namespace, "chat") == []
    [failure] = [entry for entry in logs if entry["event"] == "event_not_recorded"]
    assert (failure["status"], failure["error_type"]) == (403, "ForbiddenError")


def test_unreachable_api_server_does_not_raise(namespace: str) -> None:
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:1"
    with k8s.ApiClient(configuration) as unreachable, capture_logs() as logs:
        KubeEventRecorder(unreachable, request_timeout=2.0).record(
            route_ref(namespace), EventReason.PAUSED, "paused", EventType.NORMAL
        )
    assert [entry["error_type"] for entry in logs if entry["event"] == "event_not_recorded"] == [
        "UnavailableError"
    ]


# ---- Lease election -----------------------------------------------------------------------


def elector(api: k8s.ApiClient, namespace: str, identity: str, **kwargs: Any) -> KubeLeaseElector:
    return KubeLeaseElector(
        api,
        namespace,
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=RETRY_PERIOD,
        **kwargs,
    )


def get_lease(api: k8s.ApiClient, namespace: str, name: str = "envoy-ai-rollout") -> Any:
    return kubeapi.request(api, "GET", LEASE.format(ns=namespace, name=name))


class Running:
    """Electors running in threads, each with its own stop event; all stopped at the end."""

    def __init__(self) -> None:
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def start(self, candidate: KubeLeaseElector) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=candidate.run, args=(stop,), daemon=True)
        thread.start()
        self.threads[candidate.identity] = (thread, stop)

    def stop(self, candidate: KubeLeaseElector, timeout: float = 5.0) -> float:
        thread, stop = self.threads.pop(candidate.identity)
        started = time.monotonic()
        stop.set()
        thread.join(timeout)
        assert not thread.is_alive(), f"{candidate.identity} did not stop"
        return time.monotonic() - started

    def stop_all(self) -> None:
        for _, stop in self.threads.values():
            stop.set()
        for thread, _ in self.threads.values():
            thread.join(5.0)
        self.threads.clear()


@pytest.fixture
def running() -> Iterator[Running]:
    electors = Running()
    yield electors
    electors.stop_all()


def test_two_electors_have_exactly_one_leader_and_hand_over_on_stop(
    api_client: k8s.ApiClient, namespace: str, running: Running
) -> None:
    calls: list[str] = []
    a = elector(
        api_client,
        namespace,
        "replica-a",
        on_started_leading=lambda: calls.append("a started"),
        on_stopped_leading=lambda: calls.append("a stopped"),
    )
    b = elector(
        api_client,
        namespace,
        "replica-b",
        on_started_leading=lambda: calls.append("b started"),
        on_stopped_leading=lambda: calls.append("b stopped"),
    )
    running.start(a)
    running.start(b)
    assert wait_for(lambda: a.is_leader() or b.is_leader(), timeout=5.0)

    # Several renewals' worth of samples: never two leaders, never none.
    deadline = time.monotonic() + 2 * LEASE_DURATION
    while time.monotonic() < deadline:
        assert [a.is_leader(), b.is_leader()].count(True) == 1
        time.sleep(0.01)

    leader, follower = (a, b) if a.is_leader() else (b, a)
    lease = get_lease(api_client, namespace)
    assert lease["spec"]["holderIdentity"] == leader.identity
    assert lease["spec"]["leaseDurationSeconds"] == 2
    assert MICROTIME.match(lease["spec"]["renewTime"])
    assert MICROTIME.match(lease["spec"]["acquireTime"])
    transitions = lease["spec"]["leaseTransitions"]

    running.stop(leader)
    assert not leader.is_leader()
    handed_over = time.monotonic()
    # The stopped leader released the Lease: no waiting out the lease duration.
    assert wait_for(follower.is_leader, timeout=LEASE_DURATION)
    assert time.monotonic() - handed_over < LEASE_DURATION
    lease = get_lease(api_client, namespace)
    assert lease["spec"]["holderIdentity"] == follower.identity
    assert lease["spec"]["leaseTransitions"] == transitions + 1

    running.stop(follower)
    assert get_lease(api_client, namespace)["spec"]["holderIdentity"] == ""
    first = leader.identity[-1]
    second = follower.identity[-1]
    assert calls == [
        f"{first} started",
        f"{first} stopped",
        f"{second} started",
        f"{second} stopped",
    ]


def test_leader_whose_lease_is_taken_over_stops_within_renew_deadline(
    api_client: k8s.ApiClient, namespace: str, running: Running
) -> None:
    a = elector(api_client, namespace, "replica-a")
    running.start(a)
    assert wait_for(a.is_leader, timeout=5.0)

    # Another holder writes the Lease behind a's back (a renews concurrently: retry on 409).
    for _ in range(50):
        lease = get_lease(api_client, namespace)
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            kubeapi.request(
                api_client,
                "PUT",
                LEASE.format(ns=namespace, name=lease["metadata"]["name"]),
                body=lease,
            )
            break
        except kubeapi.ApiException as exc:
            assert exc.status == 409
    else:
        pytest.fail("could not take the lease over")
    taken = time.monotonic()
    assert wait_for(lambda: not a.is_leader(), timeout=RENEW_DEADLINE)
    assert time.monotonic() - taken < RENEW_DEADLINE

    # The intruder's Lease is valid for its duration as a observes it: a keeps off it ...
    deadline = taken + LEASE_DURATION * 0.5
    while time.monotonic() < deadline:
        assert not a.is_leader()
        time.sleep(0.02)
    assert get_lease(api_client, namespace)["spec"]["holderIdentity"] == "intruder"
    # ... and takes it back once the intruder has not renewed for that long.
    assert wait_for(a.is_leader, timeout=LEASE_DURATION + 2.0)
    assert get_lease(api_client, namespace)["spec"]["holderIdentity"] == "replica-a"


def test_leader_that_does_not_renew_stops_leading_at_renew_deadline(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    clock = FakeClock(1000.0)
    a = elector(api_client, namespace, "replica-a", clock=clock)
    assert not a.is_leader()
    assert a.try_acquire_or_renew()
    assert a.is_leader()
    clock.advance(RENEW_DEADLINE - 0.01)
    assert a.is_leader()
    clock.advance(0.01)
    assert not a.is_leader()
    # A renewal restores it.
    assert a.try_acquire_or_renew()
    assert a.is_leader()


def test_expiry_is_judged_on_the_local_clock_since_the_record_last_changed(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    # Clocks far apart: nothing compares one replica's clock with another's timestamps.
    clock_a, clock_b = FakeClock(10.0), FakeClock(987654.0)
    a = elector(api_client, namespace, "replica-a", clock=clock_a)
    b = elector(api_client, namespace, "replica-b", clock=clock_b)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first observes the record now
    clock_b.advance(LEASE_DURATION - 0.5)
    assert a.try_acquire_or_renew()  # a renews: the record changes
    clock_b.advance(1.0)
    assert not b.try_acquire_or_renew()  # a changed record: b's observation restarts
    clock_b.advance(LEASE_DURATION - 0.1)
    assert not b.try_acquire_or_renew()
    clock_b.advance(0.2)
    assert b.try_acquire_or_renew()  # unchanged for a whole lease duration: expired
    assert b.is_leader()
    lease = get_lease(api_client, namespace)
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == (
        "replica-b",
        1,
    )
    # a's next attempt sees b's record and stops claiming leadership at once.
    assert not a.try_acquire_or_renew()
    assert not a.is_leader()


def test_simultaneous_contenders_never_both_win(api_client: k8s.ApiClient, namespace: str) -> None:
    candidates = [elector(api_client, namespace, f"replica-{i}") for i in range(4)]
    for _ in range(5):  # the first round races on create, the others on update
        barrier = threading.Barrier(len(candidates))
        results: dict[str, bool] = {}

        def contend(
            candidate: KubeLeaseElector,
            barrier: threading.Barrier = barrier,
            results: dict[str, bool] = results,
        ) -> None:
            barrier.wait()
            results[candidate.identity] = candidate.try_acquire_or_renew()

        threads = [threading.Thread(target=contend, args=(c,)) for c in candidates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10.0)
        winners = [identity for identity, won in results.items() if won]
        assert len(results) == len(candidates)
        assert len(winners) == 1, results
        assert [c.is_leader() for c in candidates].count(True) == 1
        assert get_lease(api_client, namespace)["spec"]["holderIdentity"] == winners[0]
        winner = next(c for c in candidates if c.identity == winners[0])
        assert winner.release()
        assert not winner.is_leader()


def test_timings_must_be_ordered(api_client: k8s.ApiClient) -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        KubeLeaseElector(api_client, "default", lease_duration=10, renew_deadline=10)


# ---- route watch --------------------------------------------------------------------------


def route_manifest(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1beta1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [
                {
                    "name": "gw",
                    "namespace": namespace,
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                }
            ],
            "rules": [
                {
                    "matches": [
                        {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "m"}]}
                    ],
                    "backendRefs": [{"name": "b", "weight": 1}],
                }
            ],
        },
    }


def create_route(api: k8s.ApiClient, namespace: str, name: str) -> None:
    kubeapi.request(api, "POST", ROUTES.format(ns=namespace), body=route_manifest(namespace, name))


def annotate(api: k8s.ApiClient, namespace: str, name: str, annotations: dict[str, Any]) -> None:
    kubeapi.request(
        api,
        "PATCH",
        f"{ROUTES.format(ns=namespace)}/{name}",
        body={"metadata": {"annotations": annotations}},
        content_type=kubeapi.MERGE_PATCH,
    )


def delete_route(api: k8s.ApiClient, namespace: str, name: str) -> None:
    kubeapi.request(api, "DELETE", f"{ROUTES.format(ns=namespace)}/{name}")


class Changes:
    def __init__(self) -> None:
        self.seen: list[RouteChange] = []
        self._cond = threading.Condition()

    def __call__(self, change: RouteChange) -> None:
        with self._cond:
            self.seen.append(change)
            self._cond.notify_all()

    def wait(
        self, predicate: Callable[[RouteChange], bool], timeout: float, since: int = 0
    ) -> RouteChange:
        """The latest change from position `since` on that matches, waiting for one."""
        with self._cond:
            found: list[RouteChange] = []

            def match() -> bool:
                found[:] = [c for c in self.seen[since:] if predicate(c)]
                return bool(found)

            if not self._cond.wait_for(match, timeout):
                pytest.fail(f"no matching change within {timeout}s; seen: {self.seen}")
            return found[-1]


class Watching:
    def __init__(self, watcher: KubeRouteWatcher, namespaces: list[str] | None) -> None:
        self.changes = Changes()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=watcher.watch, args=(namespaces, self.changes, self.stop), daemon=True
        )
        self.thread.start()

    def stop_and_join(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self.thread.join(10.0)
        assert not self.thread.is_alive(), "watch did not return after stop"
        return time.monotonic() - started


@pytest.fixture
def watching() -> Iterator[Callable[..., Watching]]:
    started: list[Watching] = []

    def start(watcher: KubeRouteWatcher, namespaces: list[str] | None) -> Watching:
        started.append(Watching(watcher, namespaces))
        return started[-1]

    yield start
    for w in started:
        w.stop.set()
        w.thread.join(10.0)


def test_watch_delivers_existing_routes_changes_and_deletion(
    api_client: k8s.ApiClient, namespace: str, watching: Callable[..., Watching]
) -> None:
    create_route(api_client, namespace, "existing")
    w = watching(KubeRouteWatcher(api_client, timeout_seconds=30), [namespace])
    changes = w.changes
    # A (re)started controller hears about routes that already exist.
    changes.wait(lambda c: c.name == "existing" and not c.deleted, timeout=5.0)

    create_route(api_client, namespace, "chat")
    changes.wait(lambda c: (c.namespace, c.name, c.deleted) == (namespace, "chat", False), 2.0)

    annotate(api_client, namespace, "chat", {PAUSE_ANNOTATION: "true"})
    paused = changes.wait(lambda c: c.name == "chat" and PAUSE_ANNOTATION in c.annotations, 2.0)
    assert paused.annotations[PAUSE_ANNOTATION] == "true"
    assert not paused.deleted

    unpaused_from = len(changes.seen)
    annotate(api_client, namespace, "chat", {PAUSE_ANNOTATION: None})
    changes.wait(
        lambda c: c.name == "chat" and PAUSE_ANNOTATION not in c.annotations, 2.0, unpaused_from
    )

    delete_route(api_client, namespace, "chat")
    gone = changes.wait(lambda c: c.name == "chat" and c.deleted, 2.0)
    assert gone.namespace == namespace
    assert not any(c.name == "existing" and c.deleted for c in changes.seen)

    assert w.stop_and_join() < 5.0


def test_cluster_wide_and_multi_namespace_watches(
    api_client: k8s.ApiClient, namespace: str, watching: Callable[..., Watching]
) -> None:
    other = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=other)))
    try:
        watcher = KubeRouteWatcher(api_client, version_resolver=lambda: "v1beta1")
        everywhere = watching(watcher, None)
        both = watching(watcher, [namespace, other, namespace])
        time.sleep(0.5)  # let both LISTs finish so the routes arrive as watch events
        create_route(api_client, namespace, "one")
        create_route(api_client, other, "two")
        for w in (everywhere, both):
            w.changes.wait(lambda c: (c.namespace, c.name) == (namespace, "one"), 2.0)
            w.changes.wait(lambda c: (c.namespace, c.name) == (other, "two"), 2.0)
        delete_route(api_client, other, "two")
        both.changes.wait(lambda c: (c.namespace, c.name, c.deleted) == (other, "two", True), 2.0)
        assert both.stop_and_join() < 5.0
        assert everywhere.stop_and_join() < 5.0
    finally:
        core.delete_namespace(other)


def test_watch_relists_after_its_resource_version_expired(
    api_client: k8s.ApiClient,
    namespace: str,
    watching: Callable[..., Watching],
    monkeypatch: pytest.MonkeyPatch,
    ai_gateway: LocalAIGateway,
) -> None:
    original = KubeRouteWatcher._list
    lists: list[str | None] = []

    def list_then_forget(self: KubeRouteWatcher, scope: Any, session: Any) -> None:
        original(self, scope, session)
        lists.append(scope.resource_version)
        if len(lists) == 1:
            scope.resource_version = "1"  # long compacted: the server answers 410 Gone

    monkeypatch.setattr(KubeRouteWatcher, "_list", list_then_forget)
    # Counting deliveries needs a route nobody else changes: the AI Gateway controller would
    # add its finalizer and status (more MODIFIED events) while it runs.
    ai_gateway.suspend()
    try:
        create_route(api_client, namespace, "before")
        with capture_logs() as logs:
            w = watching(KubeRouteWatcher(api_client), [namespace])
            assert wait_for(lambda: len(lists) >= 2, timeout=5.0)
            create_route(api_client, namespace, "after")
            w.changes.wait(lambda c: c.name == "after", 2.0)
            assert w.stop_and_join() < 5.0
    finally:
        ai_gateway.resume()
    assert any(entry["event"] == "route_watch_expired" for entry in logs)
    # Each LIST delivered the existing route again, so nothing was missed in between.
    assert [c.name for c in w.changes.seen].count("before") == 2


def test_forbidden_watch_backs_off_and_still_stops_promptly(
    control_plane: LocalControlPlane, namespace: str, watching: Callable[..., Watching]
) -> None:
    with (
        control_plane.api_client(user="nobody", groups=()) as forbidden,
        capture_logs() as logs,
    ):
        w = watching(KubeRouteWatcher(forbidden, version_resolver=lambda: "v1beta1"), [namespace])
        assert wait_for(
            lambda: any(entry["event"] == "route_watch_failed" for entry in logs), timeout=5.0
        )
        assert w.stop_and_join() < 2.0
    failure = next(entry for entry in logs if entry["event"] == "route_watch_failed")
    assert (failure["status"], failure["error_type"]) == (403, "ForbiddenError")
    assert w.changes.seen == []


def test_unreachable_api_server_is_retried_and_watch_still_stops_promptly(
    namespace: str, watching: Callable[..., Watching]
) -> None:
    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:1"
    with k8s.ApiClient(configuration) as unreachable, capture_logs() as logs:
        watcher = KubeRouteWatcher(unreachable, min_backoff=0.1, max_backoff=0.2)
        w = watching(watcher, [namespace])
        assert wait_for(
            lambda: [e["event"] for e in logs].count("route_watch_failed") >= 3, timeout=5.0
        )
        assert w.stop_and_join() < 2.0
    failures = [e for e in logs if e["event"] == "route_watch_failed"]
    assert {e["error_type"] for e in failures} == {"UnavailableError"}
    assert [e["retry_in"] for e in failures[:3]] == [0.1, 0.2, 0.2]
