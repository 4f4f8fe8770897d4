"""The canary controller end to end on real components: the local kube-apiserver with the
upstream CRDs, a real Prometheus scraping the simulator's gen_ai_* metrics, and the
controller's real adapters (events, watch, leases)."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.analysis.prometheus import PrometheusMetricsProvider
from rollout.config import AIGatewayConfig
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
    STATE_ANNOTATION,
)
from rollout.controller.reconciler import Reconciler
from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.runtime.kube_lease import KubeLeaseElector
from rollout.controller.runtime.kube_watch import KubeRouteWatcher
from rollout.controller.scheduler import RolloutController
from rollout.controller.state import DRIFT_REASON, RolloutPhase, RolloutState
from rollout.gateway import (
    AIGatewayRoute,
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    FQDNEndpoint,
    KubeAIGatewayClient,
    LLMRequestCost,
    NotFoundError,
    WeightedBackend,
)
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.simulator.metrics import GenAIMetricsExporter
from rollout.simulator.traffic import TrafficSimulator, VariantProfile

ROUTE = "chat"
HEALTHY = VariantProfile(error_rate=0.0)


@pytest.fixture(scope="module")
def exporter() -> Iterator[GenAIMetricsExporter]:
    metrics = GenAIMetricsExporter()
    metrics.start()
    yield metrics
    metrics.stop()


@pytest.fixture(scope="module")
def prometheus(exporter: GenAIMetricsExporter) -> Iterator[LocalPrometheus]:
    with LocalPrometheus(targets=[exporter.target], scrape_interval="1s") as prom:
        prom.wait_for_scrapes(1)
        yield prom


def policy_yaml(
    namespace: str, *, name: str = "chat-canary", metrics: str | None = None, extra: str = ""
) -> str:
    metrics = metrics or "      - kind: error-rate\n        max: 0.05\n"
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata:
          name: {name}
        spec:
          route: {{namespace: {namespace}, name: {ROUTE}}}
          stable: {{backend: llama-v1, modelNameOverride: {namespace}-v1}}
          canary: {{backend: llama-v2, modelNameOverride: {namespace}-v2}}
          steps: [20, 50, 100]
        {textwrap.indent(extra, "  ")}  analysis:
            interval: 2s
            window: 8s
            minRequests: 5
            failureLimit: 1
            inconclusiveLimit: 30
            errorLimit: 30
            metrics:
        """) + textwrap.indent(metrics, "    ")


@dataclass
class Harness:
    namespace: str
    gateway: KubeAIGatewayClient
    api: k8s.ApiClient
    simulator: TrafficSimulator
    policy_dir: Path
    prometheus: LocalPrometheus
    controllers: list[RolloutController]

    def controller(self, *, leader: KubeLeaseElector | None = None) -> RolloutController:
        gateway = KubeAIGatewayClient(self.api, self.gateway.config)
        events = KubeEventRecorder(self.api)
        provider = PrometheusMetricsProvider(self.prometheus.url, timeout=3)
        controller = RolloutController(
            gateway=gateway,
            provider=provider,
            reconciler=Reconciler(gateway, events, leader=leader),
            policy_paths=[self.policy_dir],
            leader=leader,
            watcher=KubeRouteWatcher(self.api),
            watch_namespaces=[self.namespace],
            reload_seconds=0.5,
        )
        controller.start()
        self.controllers.append(controller)
        return controller

    def state(self) -> RolloutState | None:
        raw = self.gateway.get_route_annotations(None, ROUTE).get(STATE_ANNOTATION)
        return None if raw is None else RolloutState.from_annotation(raw)

    def weights(self) -> tuple[int, int]:
        """The route's weights, once the HTTPRoute the AI Gateway controller generated from it
        (what Envoy would serve) carries them too: every outcome is checked on both."""
        route = self.gateway.get_route_snapshot(None, ROUTE)
        ours = route.rules[0].weights["llama-v1"], route.rules[0].weights["llama-v2"]
        deadline = time.monotonic() + 5
        while (served := self.served()) != ours:
            assert time.monotonic() < deadline, f"route {ours}, generated HTTPRoute {served}"
            time.sleep(0.05)
        return ours

    def served(self) -> tuple[int, ...] | None:
        try:
            weights = self.gateway.get_generated_route(None, ROUTE).weights_of_rule(0)
        except NotFoundError:
            return None
        return None if weights is None else tuple(weights)

    def wait_for(
        self, what: str, predicate: Callable[[RolloutState], bool], timeout: float = 60
    ) -> RolloutState:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and predicate(state):
                return state
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}; last state: "
            f"{state.model_dump_json(indent=1) if state else None}"
        )

    def events(self) -> list[dict[str, Any]]:
        listed = kubeapi.request(
            self.api,
            "GET",
            f"/api/v1/namespaces/{self.namespace}/events",
            query={"fieldSelector": f"involvedObject.name={ROUTE}"},
        )
        return list(listed["items"])


@pytest.fixture
def harness(
    api_client: k8s.ApiClient,
    namespace: str,
    exporter: GenAIMetricsExporter,
    prometheus: LocalPrometheus,
    tmp_path: Path,
) -> Iterator[Harness]:
    gateway = KubeAIGatewayClient(
        api_client, AIGatewayConfig(enabled=True, default_namespace=namespace)
    )
    for variant in ("v1", "v2"):
        gateway.create_backend(
            Backend(
                name=f"llama-{variant}",
                endpoints=[
                    FQDNEndpoint(hostname=f"llama-{variant}.models.svc.cluster.local", port=8080)
                ],
            )
        )
        gateway.create_service_backend(
            AIServiceBackend(
                name=f"llama-{variant}",
                api_schema=APISchema(name="OpenAI"),
                backend_ref=BackendRef(name=f"llama-{variant}"),
            )
        )
    gateway.create_route(
        AIGatewayRoute(
            name=ROUTE,
            model_name="llama-3-8b",
            backends=[
                WeightedBackend(name="llama-v1", weight=100, model_name_override=f"{namespace}-v1"),
                WeightedBackend(name="llama-v2", weight=0, model_name_override=f"{namespace}-v2"),
            ],
        )
    )
    simulator = TrafficSimulator(
        gateway,
        exporter,
        namespace,
        ROUTE,
        {"llama-v1": HEALTHY, "llama-v2": HEALTHY},
        requests_per_second=60,
    )
    simulator.start()
    h = Harness(namespace, gateway, api_client, simulator, tmp_path, prometheus, [])
    yield h
    for controller in h.controllers:
        controller.stop()
    simulator.stop()


def write_policy(h: Harness, text: str) -> None:
    (h.policy_dir / "policy.yaml").write_text(text)


def test_healthy_canary_is_promoted_step_by_step(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    first = harness.wait_for("the first step", lambda s: s.phase is RolloutPhase.PROGRESSING)
    assert (first.stable_weight, first.canary_weight) == (80, 20)
    done = harness.wait_for("success", lambda s: s.phase is RolloutPhase.SUCCEEDED, 90)
    assert harness.weights() == (0, 100)
    assert done.counters.failed_total == 0 and done.counters.passed_total >= 2
    reasons = [e["reason"] for e in harness.events()]
    assert "StepAdvanced" in reasons and "RolloutSucceeded" in reasons
    assert harness.simulator.sent["llama-v2"] > 0


def test_failing_canary_is_rolled_back(harness: Harness) -> None:
    harness.simulator.profiles["llama-v2"] = VariantProfile(error_rate=0.5)
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    done = harness.wait_for("rollback", lambda s: s.phase is RolloutPhase.ROLLED_BACK, 90)
    assert harness.weights() == (100, 0)
    assert done.last_analysis is not None
    error_rate = done.last_analysis.metrics[0]
    assert error_rate.outcome.value == "Fail" and (error_rate.canary or 0) > 0.05
    rollback = [e for e in harness.events() if e["reason"] == "RolledBack"]
    assert rollback and rollback[0]["type"] == "Warning"


def test_threshold_relative_to_stable_rolls_back_a_slow_canary(harness: Harness) -> None:
    harness.simulator.profiles["llama-v2"] = VariantProfile(time_to_first_token_seconds=0.6)
    metrics = "      - kind: ttft\n        percentile: p95\n        maxRatio: 1.5\n"
    write_policy(harness, policy_yaml(harness.namespace, metrics=metrics))
    harness.controller()
    done = harness.wait_for("rollback", lambda s: s.phase is RolloutPhase.ROLLED_BACK, 90)
    assert done.last_analysis is not None
    ttft = done.last_analysis.metrics[0]
    assert ttft.canary is not None and ttft.stable is not None
    assert ttft.canary / ttft.stable > 1.5
    assert harness.weights() == (100, 0)


def test_pause_freezes_and_resume_continues(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    harness.wait_for("the first step", lambda s: s.phase is RolloutPhase.PROGRESSING)
    harness.gateway.set_route_annotations(None, ROUTE, {PAUSE_ANNOTATION: "true"})
    paused = harness.wait_for("pause", lambda s: s.phase is RolloutPhase.PAUSED, 10)
    frozen = harness.weights()
    time.sleep(5)  # two intervals: nothing moves while paused
    assert harness.weights() == frozen
    assert harness.state() == paused
    harness.gateway.set_route_annotations(None, ROUTE, {PAUSE_ANNOTATION: None})
    harness.wait_for("success", lambda s: s.phase is RolloutPhase.SUCCEEDED, 90)


def test_abort_returns_all_traffic_to_stable_within_seconds(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    harness.wait_for("the first step", lambda s: s.phase is RolloutPhase.PROGRESSING)
    started = time.monotonic()
    harness.gateway.set_route_annotations(None, ROUTE, {ABORT_ANNOTATION: "true"})
    harness.wait_for("abort", lambda s: s.phase is RolloutPhase.ABORTED, 10)
    assert time.monotonic() - started < 5
    assert harness.weights() == (100, 0)


def test_promote_skips_to_the_canary(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    harness.wait_for("the first step", lambda s: s.phase is RolloutPhase.PROGRESSING)
    harness.gateway.set_route_annotations(None, ROUTE, {PROMOTE_ANNOTATION: "true"})
    harness.wait_for("promotion", lambda s: s.phase is RolloutPhase.SUCCEEDED, 10)
    assert harness.weights() == (0, 100)


def test_weights_changed_outside_the_controller_pause_it(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    harness.controller()
    harness.wait_for("the first step", lambda s: s.phase is RolloutPhase.PROGRESSING)
    # A person (or a GitOps tool) writes other weights: never progress, a pause.
    other = KubeAIGatewayClient(harness.api, harness.gateway.config)
    other.update_traffic_weights(None, ROUTE, {"llama-v1": 60, "llama-v2": 40})
    paused = harness.wait_for("drift pause", lambda s: s.phase is RolloutPhase.PAUSED, 10)
    assert paused.pause_reason == DRIFT_REASON or paused.reason.startswith(DRIFT_REASON)
    time.sleep(3)
    assert harness.weights() == (60, 40)
    # A fresh resume token ends the drift pause: the controller re-asserts its step.
    harness.gateway.set_route_annotations(None, ROUTE, {RESUME_ANNOTATION: "t1"})
    harness.wait_for("resume", lambda s: s.phase is RolloutPhase.PROGRESSING, 10)


def test_restarted_controller_resumes_at_the_same_step(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    first = harness.controller()
    before = harness.wait_for(
        "the second step", lambda s: s.phase is RolloutPhase.PROGRESSING and s.step_index == 1
    )
    first.stop()
    harness.controllers.remove(first)
    stopped_at = harness.state()
    assert stopped_at is not None and stopped_at.step_index == 1
    assert harness.weights() == (50, 50)
    harness.controller()
    done = harness.wait_for("success", lambda s: s.phase is RolloutPhase.SUCCEEDED, 90)
    # Nothing repeated, nothing skipped: exactly one more passed check moved 50 -> 100.
    assert done.counters.passed_total == stopped_at.counters.passed_total + 1
    assert done.started_at == before.started_at
    advanced = [e for e in harness.events() if e["reason"] == "StepAdvanced"]
    assert sum(e.get("count", 1) for e in advanced) == 1


def test_two_controllers_one_writer(harness: Harness) -> None:
    write_policy(harness, policy_yaml(harness.namespace))
    lease = f"rollout-{harness.namespace}"

    def elector(identity: str) -> KubeLeaseElector:
        return KubeLeaseElector(
            harness.api,
            harness.namespace,
            name=lease,
            identity=identity,
            lease_duration=4,
            renew_deadline=3,
            retry_period=0.5,
        )

    a, b = elector("replica-a"), elector("replica-b")
    harness.controller(leader=a)
    harness.controller(leader=b)
    writers: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            leaders = [e for e in (a, b) if e.is_leader()]
            assert len(leaders) <= 1
            writers.update("a" if e is a else "b" for e in leaders)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        harness.wait_for("success", lambda s: s.phase is RolloutPhase.SUCCEEDED, 90)
    finally:
        stop.set()
        sampler.join()
    assert len(writers) == 1
    managed = kubeapi.request(
        harness.api,
        "GET",
        f"/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{harness.namespace}/aigatewayroutes/"
        f"{ROUTE}",
    )["metadata"]["managedFields"]
    assert json.dumps(managed).count("model-registry") >= 1


def test_the_policys_tenant_rate_limit_is_applied_through_the_adapter(harness: Harness) -> None:
    route = harness.gateway.get_route(None, ROUTE)
    costs = [LLMRequestCost(metadata_key="llm_total_token", type="TotalToken")]
    harness.gateway.update_route(
        AIGatewayRoute(
            name=route.name,
            namespace=route.namespace,
            model_name=route.model_name,
            backends=route.backends,
            llm_request_costs=costs,
        )
    )
    rate_limit = (
        "  rateLimit: {tenantHeader: x-tenant-id, tokenBudget: 50000, "
        "budgetPeriod: hourly, requestsPerMinute: 120}\n"
    )
    write_policy(harness, policy_yaml(harness.namespace) + rate_limit)
    harness.controller()
    deadline = time.monotonic() + 15
    while True:
        try:
            policy = harness.gateway.get_rate_limit_policy(None, ROUTE)
            break
        except NotFoundError:
            assert time.monotonic() < deadline, "no BackendTrafficPolicy after 15s"
            time.sleep(0.2)
    assert policy.target_name == ROUTE
    assert policy.config.token_budget == 50000 and policy.config.requests_per_min == 120
    assert policy.config.budget_period.value == "hourly"
    assert policy.config.cost_metadata_key == "llm_total_token"
