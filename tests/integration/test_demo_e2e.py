"""End to end: the demo's whole stack (local kube-apiserver with the upstream CRDs, the
upstream Envoy AI Gateway controller, real Prometheus, the controller and its adapters, the
data-plane simulator) for each scenario, a Prometheus outage in the middle of a rollout, and an
abort annotation set from outside. Outcomes are checked on the HTTPRoute the AI Gateway
controller generated (what Envoy would serve), not only on our route.

The demo policy is used with shorter intervals (3s instead of 10s) and in the test's own
namespace of the session's control plane; it is otherwise the file `rollout demo` runs.
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client as k8s
from rich.console import Console

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.controller.annotations import ABORT_ANNOTATION, APPROVE_ANNOTATION
from rollout.controller.state import PauseCause, RolloutPhase, RolloutState
from rollout.controller.strategies import generated_cohort_percent
from rollout.demo import DEFAULT_POLICY, DemoEnvironment, DemoOutcome, Scenario, run_demo
from rollout.gateway.errors import NotFoundError
from rollout.gateway.kube import KubeAIGatewayClient
from rollout.localcluster import LocalAIGateway, LocalControlPlane
from rollout.localcluster.process import free_port
from rollout.simulator.traffic import VariantProfile


@dataclass(frozen=True)
class Stack:
    plane: LocalControlPlane
    aigw: LocalAIGateway
    namespace: str
    api: k8s.ApiClient

    def served_weights(self) -> tuple[int, ...]:
        """The weights of the generated HTTPRoute's first rule (stable, canary)."""
        gateway = KubeAIGatewayClient(self.api, AIGatewayConfig(enabled=True))
        weights = gateway.get_generated_route(self.namespace, "demo-llm").weights_of_rule(0)
        assert weights is not None
        return tuple(weights)


@pytest.fixture
def stack(
    control_plane: LocalControlPlane,
    ai_gateway: LocalAIGateway,
    namespace: str,
    api_client: k8s.ApiClient,
) -> Stack:
    return Stack(control_plane, ai_gateway, namespace, api_client)


@pytest.fixture
def fast_policy(tmp_path: Path, namespace: str) -> Path:
    text = DEFAULT_POLICY.read_text()
    assert "interval: 10s" in text and "window: 30s" in text
    assert "namespace: default" in text
    path = tmp_path / "demo.yaml"
    path.write_text(
        text.replace("interval: 10s", "interval: 3s")
        .replace("window: 30s", "window: 9s")
        .replace("namespace: default", f"namespace: {namespace}")
    )
    return path


def demo(scenario: Scenario, policy: Path, stack: Stack, **kwargs: object) -> DemoOutcome:
    return run_demo(
        scenario,
        policy_path=policy,
        live=False,
        console=quiet(),
        timeout=150,
        existing_plane=stack.plane,
        existing_aigw=stack.aigw,
        **kwargs,  # type: ignore[arg-type]
    )


def wait_served(stack: Stack, weights: tuple[int, ...], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while stack.served_weights() != weights:
        assert time.monotonic() < deadline, f"HTTPRoute shows {stack.served_weights()}"
        time.sleep(0.05)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def wait_for(
    env: DemoEnvironment, what: str, predicate: Callable[[RolloutState], bool], timeout: float = 60
) -> RolloutState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = env.state()
        if state is not None and predicate(state):
            return state
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {env.state()}")


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (Scenario.HEALTHY, RolloutPhase.SUCCEEDED),
        (Scenario.BAD_CANARY, RolloutPhase.ROLLED_BACK),
        (Scenario.SLOW_CANARY, RolloutPhase.ROLLED_BACK),
        (Scenario.NO_TRAFFIC, RolloutPhase.PAUSED),
        (Scenario.GATEWAY_REJECTS, RolloutPhase.SUCCEEDED),
        (Scenario.EXPENSIVE_CANARY, RolloutPhase.ROLLED_BACK),
        (Scenario.COLD_START_CANARY, RolloutPhase.SUCCEEDED),
        (Scenario.ONE_TENANT_BROKEN, RolloutPhase.ROLLED_BACK),
    ],
)
def test_scenario_ends_as_expected(
    scenario: Scenario, expected: RolloutPhase, fast_policy: Path, stack: Stack
) -> None:
    outcome = demo(scenario, fast_policy, stack)
    assert outcome.phase is expected, outcome.state
    state = outcome.state
    assert state is not None
    wait_served(stack, (state.stable_weight, state.canary_weight))
    if expected is RolloutPhase.SUCCEEDED:
        assert state.canary_weight == 100 and state.counters.failed_total == 0
    if expected is RolloutPhase.ROLLED_BACK:
        assert state.canary_weight == 0 and state.last_analysis is not None
        failed = [m.metric for m in state.last_analysis.failed_metrics()]
        assert (
            failed
            == {
                Scenario.BAD_CANARY: ["error-rate"],
                Scenario.SLOW_CANARY: ["ttft-p95"],
                Scenario.EXPENSIVE_CANARY: ["cost-per-request"],
                Scenario.ONE_TENANT_BROKEN: ["per-tenant"],
            }[scenario]
        )
        if scenario is Scenario.EXPENSIVE_CANARY:
            [cost] = state.last_analysis.failed_metrics()
            assert cost.unit == "USD/request" and cost.canary and cost.stable
            assert 1.8 < cost.canary / cost.stable < 2.2  # twice the prices, same tokens
        if scenario is Scenario.ONE_TENANT_BROKEN:
            assert '"acme"' in state.reason  # the verdict names the tenant
            [tenants] = state.last_analysis.failed_metrics()
            assert [t.tenant for t in tenants.tenants if t.failed] == ["acme"]
            [aggregate] = [m for m in state.last_analysis.metrics if m.metric == "error-rate"]
            assert aggregate.outcome.value == "Pass"  # the aggregate alone would promote it
        if scenario is Scenario.SLOW_CANARY:
            ttft = state.last_analysis.metrics[1]
            assert ttft.canary and ttft.stable and ttft.canary / ttft.stable > 1.5
    if expected is RolloutPhase.PAUSED:
        assert state.counters.inconclusive_total >= 6 and state.counters.passed_total == 0
        assert state.canary_weight == 10  # never promoted beyond the first step


def run_healthy_demo_while(
    policy: Path,
    stack: Stack,
    action: Callable[[DemoEnvironment], None],
    policy_edits: Sequence[Callable[[dict[str, Any]], None]] = (),
) -> tuple[DemoOutcome, list[BaseException]]:
    """Run the healthy demo and, beside it in a thread, `action` (an outage, an annotation).

    Returns the outcome and what `action` raised: its assertions must not be lost in a thread.
    """
    failures: list[BaseException] = []

    def start_action(env: DemoEnvironment) -> None:
        def run() -> None:
            try:
                action(env)
            except BaseException as exc:
                failures.append(exc)

        threading.Thread(target=run, daemon=True).start()

    outcome = demo(
        Scenario.HEALTHY, policy, stack, on_started=start_action, policy_edits=policy_edits
    )
    return outcome, failures


def test_prometheus_outage_holds_the_rollout_and_it_resumes(
    fast_policy: Path, stack: Stack
) -> None:
    # A restarted Prometheus replays its WAL for a few seconds: allow 6 errors in a row (18s)
    # so that this outage is one the policy rides out (a longer one pauses: unit-tested).
    text = fast_policy.read_text()
    assert "errorLimit: 3" in text
    fast_policy.write_text(text.replace("errorLimit: 3", "errorLimit: 6"))
    observed: dict[str, object] = {}

    def outage(env: DemoEnvironment) -> None:
        before = wait_for(
            env,
            "the second step",
            lambda s: s.phase is RolloutPhase.PROGRESSING and s.step_index >= 1,
        )
        weights = env.weights()
        env.prometheus.suspend()
        held = wait_for(
            env, "an error check", lambda s: s.counters.errors_total > before.counters.errors_total
        )
        observed["held"] = held
        observed["weights_during"] = (weights, env.weights())
        time.sleep(1.0)
        env.prometheus.resume()

    outcome, failures = run_healthy_demo_while(fast_policy, stack, outage)
    assert failures == []
    held = observed["held"]
    assert isinstance(held, RolloutState)
    assert held.phase is RolloutPhase.PROGRESSING  # held, not rolled back
    assert held.last_analysis is not None and held.last_analysis.outcome.value == "Error"
    before, during = observed["weights_during"]  # type: ignore[misc]
    assert before == during
    assert outcome.phase is RolloutPhase.SUCCEEDED
    assert outcome.state is not None and outcome.state.counters.failed_total == 0
    wait_served(stack, (0, 100))


def test_kubectl_annotate_abort_returns_all_traffic_to_stable_within_seconds(
    fast_policy: Path, tmp_path: Path, stack: Stack
) -> None:
    timing: dict[str, float] = {}

    def abort(env: DemoEnvironment) -> None:
        wait_for(env, "the rollout to progress", lambda s: s.phase is RolloutPhase.PROGRESSING)
        route = env.policy.spec.route
        kubectl = env.plane.binaries.kubectl if env.plane.binaries else None
        assert kubectl is not None, "kubectl missing: run scripts/kube-binaries.sh"
        kubeconfig = env.plane.write_kubeconfig(tmp_path / "kubeconfig")
        subprocess.run(
            [
                str(kubectl),
                "--kubeconfig",
                str(kubeconfig),
                "annotate",
                "aigatewayroute",
                route.name,
                "-n",
                route.namespace,
                f"{ABORT_ANNOTATION}=true",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        started = time.monotonic()
        wait_for(env, "abort", lambda s: s.phase is RolloutPhase.ABORTED, 15)
        wait_served(stack, (100, 0))  # what Envoy would serve, too
        timing["seconds"] = time.monotonic() - started
        timing["canary"] = env.weights()[env.policy.spec.canary.backend]

    outcome, failures = run_healthy_demo_while(fast_policy, stack, abort)
    assert failures == []
    assert outcome.phase is RolloutPhase.ABORTED
    assert timing["seconds"] < 5 and timing["canary"] == 0


def _without(*path: str) -> Callable[[dict[str, object]], None]:
    def edit(policy: dict[str, object]) -> None:
        node: Any = policy
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def test_the_cold_start_canary_is_rolled_back_without_the_warm_up(
    fast_policy: Path, stack: Stack
) -> None:
    outcome = demo(
        Scenario.COLD_START_CANARY,
        fast_policy,
        stack,
        policy_edits=[_without("spec", "analysis", "warmup")],
    )
    assert outcome.phase is RolloutPhase.ROLLED_BACK, outcome.state
    assert outcome.state is not None and outcome.state.last_analysis is not None
    assert [m.metric for m in outcome.state.last_analysis.failed_metrics()] == ["ttft-p95"]


def test_one_broken_tenant_is_promoted_without_per_tenant_verdicts(
    fast_policy: Path, stack: Stack
) -> None:
    outcome = demo(
        Scenario.ONE_TENANT_BROKEN,
        fast_policy,
        stack,
        policy_edits=[_without("spec", "analysis", "perTenant")],
    )
    assert outcome.phase is RolloutPhase.SUCCEEDED, outcome.state


def test_answers_40_percent_shorter_are_rolled_back_by_token_drift(
    fast_policy: Path, stack: Stack
) -> None:
    outcome = demo(
        Scenario.HEALTHY, fast_policy, stack, canary_profile=VariantProfile(output_tokens=90)
    )
    assert outcome.phase is RolloutPhase.ROLLED_BACK, outcome.state
    assert outcome.state is not None and outcome.state.last_analysis is not None
    [drift] = outcome.state.last_analysis.failed_metrics()
    assert drift.metric.startswith("tokens-per-request") and drift.unit == "tokens/request"
    assert drift.canary and drift.stable and drift.canary / drift.stable < 0.7


def test_the_statistical_judge_rolls_back_a_slow_canary(fast_policy: Path, stack: Stack) -> None:
    def judge_ttft(policy: dict[str, Any]) -> None:
        checks = policy["spec"]["analysis"]["metrics"]
        checks[:] = [c for c in checks if c["kind"] != "ttft"]
        checks.append(
            {"kind": "ttft", "judge": {"test": "mann-whitney", "confidence": 0.99, "maxShift": 0.1}}
        )

    outcome = demo(Scenario.SLOW_CANARY, fast_policy, stack, policy_edits=[judge_ttft])
    assert outcome.phase is RolloutPhase.ROLLED_BACK, outcome.state
    assert outcome.state is not None and outcome.state.last_analysis is not None
    [ttft] = outcome.state.last_analysis.failed_metrics()
    assert ttft.judge is not None and ttft.judge.relative_shift is not None
    assert ttft.judge.relative_shift > 1.0 and ttft.judge.p_value is not None


def _approve_second_step(policy: dict[str, Any]) -> None:
    steps = policy["spec"]["steps"]
    steps[1] = {"weight": steps[1], "approve": True}


@pytest.mark.parametrize("how", ["cli", "kubectl"])
def test_an_approval_step_waits_until_approved_by_the_cli_or_kubectl(
    how: str, fast_policy: Path, stack: Stack, tmp_path: Path
) -> None:
    observed: dict[str, object] = {}

    def approve(env: DemoEnvironment) -> None:
        waiting = wait_for(
            env,
            "the approval wait",
            lambda s: s.phase is RolloutPhase.PAUSED and s.reason.startswith("waiting for"),
            90,
        )
        observed["waiting"] = waiting
        route = env.policy.spec.route
        kubeconfig = env.plane.write_kubeconfig(tmp_path / "kubeconfig")
        if how == "cli":
            command = [
                sys.executable, "-m", "rollout", "approve", route.name,
                "-n", route.namespace, "--kubeconfig", str(kubeconfig),
            ]  # fmt: skip
        else:
            kubectl = env.plane.binaries.kubectl if env.plane.binaries else None
            assert kubectl is not None
            command = [
                str(kubectl), "--kubeconfig", str(kubeconfig), "annotate", "aigatewayroute",
                route.name, "-n", route.namespace,
                f"{APPROVE_ANNOTATION}={waiting.step_index + 1}",
            ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    outcome, failures = run_healthy_demo_while(fast_policy, stack, approve, [_approve_second_step])
    assert failures == []
    waiting = observed["waiting"]
    assert isinstance(waiting, RolloutState) and waiting.step_index == 1
    assert outcome.phase is RolloutPhase.SUCCEEDED, outcome.state
    wait_served(stack, (0, 100))


def test_gradual_rollback_steps_the_canary_down(fast_policy: Path, stack: Stack) -> None:
    def step_down(policy: dict[str, Any]) -> None:
        policy["spec"]["onFailure"] = {"rollback": {"steps": [5, 0], "interval": "4s"}}

    seen: list[tuple[str, int]] = []

    def watch(env: DemoEnvironment) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = env.state()
            if state is not None:
                seen.append((state.phase.value, state.canary_weight))
                if state.phase.is_terminal:
                    return
            time.sleep(0.2)

    outcome = demo(
        Scenario.BAD_CANARY,
        fast_policy,
        stack,
        policy_edits=[step_down],
        on_started=_in_thread(watch),
    )
    assert outcome.phase is RolloutPhase.ROLLED_BACK, outcome.state
    assert ("RollingBack", 5) in seen  # stepped down, not snapped to 0
    wait_served(stack, (100, 0))


def _in_thread(action: Callable[[DemoEnvironment], None]) -> Callable[[DemoEnvironment], None]:
    def start(env: DemoEnvironment) -> None:
        threading.Thread(target=action, args=(env,), daemon=True).start()

    return start


def test_a_sticky_rollout_keeps_every_session_on_its_model_version(
    fast_policy: Path, stack: Stack
) -> None:
    def sticky(policy: dict[str, Any]) -> None:
        policy["spec"]["stickiness"] = {"header": "x-session-id"}

    seen: dict[str, Any] = {"shares": set()}

    def watch(env: DemoEnvironment) -> None:
        seen["env"] = env
        gateway = KubeAIGatewayClient(stack.api, AIGatewayConfig(enabled=True))
        route = env.policy.spec.route
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                generated = gateway.get_generated_route(route.namespace, route.name)
            except NotFoundError:
                generated = None
            if generated is not None:
                share = generated_cohort_percent(generated, "x-session-id")
                if share is not None:
                    seen["shares"].add(round(share))
            state = env.state()
            if state is not None and state.phase.is_terminal:
                return
            time.sleep(0.2)

    outcome = demo(
        Scenario.HEALTHY, fast_policy, stack, policy_edits=[sticky], on_started=_in_thread(watch)
    )
    assert outcome.phase is RolloutPhase.SUCCEEDED, outcome.state
    # Each step was a share of sessions in the HTTPRoute the AI Gateway generated ...
    assert {10, 25, 50} <= seen["shares"]
    # ... and promotion ends with the canary at 100% and the cohort rule removed.
    wait_served(stack, (0, 100))
    gateway = KubeAIGatewayClient(stack.api, AIGatewayConfig(enabled=True))
    snapshot = gateway.get_route_snapshot(stack.namespace, "demo-llm")
    assert snapshot.cohort_percent is None and len(snapshot.rules) == 1
    env: DemoEnvironment = seen["env"]
    stable, canary = env.policy.spec.stable.backend, env.policy.spec.canary.backend
    histories = env.simulator.session_history
    assert len(histories) > 100
    # A session that reached the canary never went back; none flipped to and fro.
    assert all(h in ([stable], [canary], [stable, canary]) for h in histories.values())
    assert sum(h == [stable, canary] for h in histories.values()) > 10


def test_tenant_opt_in_comes_first_and_only_those_tenants_see_the_canary(
    fast_policy: Path, stack: Stack
) -> None:
    def opt_in(policy: dict[str, Any]) -> None:
        policy["spec"]["optIn"] = {"header": "x-tenant-id", "values": ["acme"]}

    seen: dict[str, Any] = {}

    def watch(env: DemoEnvironment) -> None:
        seen["env"] = env
        first = wait_for(env, "the opt-in phase", lambda s: s.phase is RolloutPhase.PROGRESSING)
        seen["first"] = first
        gateway = KubeAIGatewayClient(stack.api, AIGatewayConfig(enabled=True))
        route = env.policy.spec.route
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the generated HTTPRoute carries the tenant rule
            rules = gateway.get_generated_route(route.namespace, route.name).rules
            tenants = [
                h["value"]
                for r in rules
                for m in r.header_matches
                for h in m
                if h.get("name") == "x-tenant-id"
            ]
            if tenants:
                seen["tenants"] = tenants
                break
            time.sleep(0.1)
        time.sleep(2)
        # While the weighted rule is 100% stable, only acme's sessions reach the canary.
        canary = env.policy.spec.canary.backend
        seen["canary_sessions"] = [
            s for s, variants in env.simulator.session_variants.items() if canary in variants
        ]
        seen["tenants_of"] = dict(env.simulator.session_tenants)

    outcome = demo(
        Scenario.HEALTHY, fast_policy, stack, policy_edits=[opt_in], on_started=_in_thread(watch)
    )
    assert outcome.phase is RolloutPhase.SUCCEEDED, outcome.state
    first: RolloutState = seen["first"]
    assert first.canary_weight == 0 and "opt-in tenants only" in first.reason
    assert seen["tenants"] == ["acme"]
    assert seen["canary_sessions"]
    assert {seen["tenants_of"][s] for s in seen["canary_sessions"]} == {"acme"}
    wait_served(stack, (0, 100))
    gateway = KubeAIGatewayClient(stack.api, AIGatewayConfig(enabled=True))
    assert gateway.get_route_snapshot(stack.namespace, "demo-llm").opt_in_values == []


class _GateHandler(http.server.BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.calls.append({"path": self.path, **body})
        if self.path == "/hang":
            time.sleep(6)
        status, answer = {
            "/pass": (200, {"message": "50 of 50 golden prompts passed"}),
            "/fail": (422, {"message": "3 of 50 golden prompts failed"}),
        }.get(self.path, (200, {}))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def gate_server() -> Iterator[str]:
    _GateHandler.calls.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GateHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "expected", "event"),
    [
        ("/pass", RolloutPhase.SUCCEEDED, "GatePassed"),
        ("/fail", RolloutPhase.ROLLED_BACK, "GateFailed"),
        ("/hang", RolloutPhase.PAUSED, "GateError"),
        ("unreachable", RolloutPhase.PAUSED, "GateError"),
    ],
)
def test_a_pre_rollout_webhook_gate_passes_fails_hangs_or_is_unreachable(
    path: str,
    expected: RolloutPhase,
    event: str,
    fast_policy: Path,
    stack: Stack,
    gate_server: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/run" if path == "unreachable" else gate_server + path

    def with_gate(policy: dict[str, Any]) -> None:
        policy["spec"]["gates"] = [
            {"name": "evals", "url": url, "when": "pre-rollout", "timeout": "2s"}
        ]

    outcome = demo(Scenario.HEALTHY, fast_policy, stack, policy_edits=[with_gate])
    assert outcome.phase is expected, outcome.state
    assert outcome.state is not None
    listed = kubeapi.request(
        stack.api,
        "GET",
        f"/api/v1/namespaces/{stack.namespace}/events",
        query={"fieldSelector": "involvedObject.name=demo-llm"},
    )
    reasons = [e["reason"] for e in listed["items"]]
    assert event in reasons, reasons
    if path != "unreachable":
        call = _GateHandler.calls[0]
        assert call["kind"] == "gate" and call["gate"] == {"name": "evals", "when": "pre-rollout"}
        assert call["route"]["namespace"] == stack.namespace
        assert call["canary"]["backend"] == "demo-llm-v2"
    if expected is not RolloutPhase.SUCCEEDED:
        # The gate guards the first traffic to the canary: none ever moved.
        assert outcome.state.canary_weight == 0
        wait_served(stack, (100, 0))
    if path == "/fail":
        [failed] = [e for e in listed["items"] if e["reason"] == "GateFailed"]
        assert "3 of 50 golden prompts failed" in failed["message"]
    if expected is RolloutPhase.PAUSED:
        assert outcome.state.pause_cause is PauseCause.PROVIDER_ERRORS  # held, never rolled back
