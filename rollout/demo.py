"""`rollout demo`: a whole canary rollout on one machine, on real components.

A real kube-apiserver + etcd with the upstream CRDs, the upstream Envoy AI Gateway controller
(which accepts or rejects our route and generates the HTTPRoute Envoy would be configured
from), a real Prometheus, the real controller with its real adapters, and one stand-in: the
data-plane SIMULATOR (rollout.simulator) in the place of Envoy and the model servers, which
splits synthetic chat traffic by the generated HTTPRoute's weights and exports the gateway's
gen_ai_* metrics. Each scenario gives the canary a behaviour; the controller has to find out
for itself.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rollout import kubeapi
from rollout.analysis.prometheus import PrometheusMetricsProvider
from rollout.config import AIGatewayConfig
from rollout.controller.gate_tracker import GateTracker
from rollout.controller.observability import ControllerMetrics, MetricsServer
from rollout.controller.reconciler import GatewayChecks, Reconciler
from rollout.controller.runtime.http_gates import HttpGateRunner, HttpWebhookMetricSource
from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.runtime.kube_watch import KubeRouteWatcher
from rollout.controller.scheduler import RolloutController
from rollout.controller.state import PauseCause, RolloutPhase, RolloutState
from rollout.gateway import (
    AIGatewayRoute,
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    BudgetPeriod,
    FQDNEndpoint,
    KubeAIGatewayClient,
    LLMRequestCost,
    LLMRequestCostType,
    RateLimitConfig,
    WeightedBackend,
)
from rollout.gateway.errors import AIGatewayError
from rollout.localcluster import LocalAIGateway, LocalControlPlane, default_crd_dirs
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.logging import configure_logging
from rollout.policy.loading import load_policy_paths
from rollout.policy.schema import RolloutPolicy, parse_duration
from rollout.simulator.metrics import TENANT_LABEL, GenAIMetricsExporter
from rollout.simulator.traffic import TrafficSimulator, VariantProfile

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "demo.yaml"
MODEL = "demo-llm"


class Scenario(StrEnum):
    HEALTHY = "healthy"
    BAD_CANARY = "bad-canary"
    SLOW_CANARY = "slow-canary"
    NO_TRAFFIC = "no-traffic"
    GATEWAY_REJECTS = "gateway-rejects"
    EXPENSIVE_CANARY = "expensive-canary"
    COLD_START_CANARY = "cold-start-canary"
    ONE_TENANT_BROKEN = "one-tenant-broken"


@dataclass(frozen=True)
class ScenarioSpec:
    description: str
    canary: VariantProfile
    expected: RolloutPhase
    requests_per_second: float = 40.0
    # The canary's AIServiceBackend is created only once the rollout has been seen holding
    # on the gateway's refusal (the AI Gateway controller is needed for that).
    canary_backend_late: bool = False
    # How the scenario changes policies/demo.yaml (its YAML, as a dict), if at all.
    policy_edit: Callable[[dict[str, Any]], None] | None = None
    # The canary's time to first token is slow for this many analysis intervals after every
    # weight change (cold caches); 0: never.
    cold_start_intervals: float = 0.0


def _double_canary_prices(policy: dict[str, Any]) -> None:
    canary = policy["spec"]["canary"]
    canary["pricing"] = {k: v * 2 for k, v in canary["pricing"].items()}


def _warm_up_two_and_a_half_intervals(policy: dict[str, Any]) -> None:
    analysis = policy["spec"]["analysis"]
    interval = parse_duration(analysis["interval"]).total_seconds()
    analysis["warmup"] = f"{math.ceil(interval * 2.5)}s"


def _judge_each_tenant(policy: dict[str, Any]) -> None:
    # The aggregate error rate of a canary that fails one 10% tenant is ~10%: the aggregate
    # threshold tolerates that, each tenant on its own does not.
    analysis = policy["spec"]["analysis"]
    analysis["perTenant"] = {"label": TENANT_LABEL, "minRequests": 8}
    for check in analysis["metrics"]:
        if check["kind"] == "error-rate":
            check["max"] = 0.3


SCENARIOS: dict[Scenario, ScenarioSpec] = {
    Scenario.HEALTHY: ScenarioSpec(
        "the canary behaves like stable: promoted step by step",
        VariantProfile(),
        RolloutPhase.SUCCEEDED,
    ),
    Scenario.BAD_CANARY: ScenarioSpec(
        "the canary fails 25% of requests: rolled back",
        VariantProfile(error_rate=0.25),
        RolloutPhase.ROLLED_BACK,
    ),
    Scenario.SLOW_CANARY: ScenarioSpec(
        "the canary's time to first token is 4x stable's: rolled back (relative threshold)",
        VariantProfile(time_to_first_token_seconds=0.48),
        RolloutPhase.ROLLED_BACK,
    ),
    Scenario.NO_TRAFFIC: ScenarioSpec(
        "no requests reach the model: nothing can be judged, so it is never promoted (paused)",
        VariantProfile(),
        RolloutPhase.PAUSED,
        requests_per_second=0.0,
    ),
    Scenario.GATEWAY_REJECTS: ScenarioSpec(
        "the canary's AIServiceBackend is missing: the gateway rejects the route and the "
        "rollout holds without moving traffic; once the backend exists it completes",
        VariantProfile(),
        RolloutPhase.SUCCEEDED,
        canary_backend_late=True,
    ),
    Scenario.EXPENSIVE_CANARY: ScenarioSpec(
        "the canary's tokens cost twice as much: rolled back on cost per request",
        VariantProfile(),
        RolloutPhase.ROLLED_BACK,
        policy_edit=_double_canary_prices,
    ),
    Scenario.COLD_START_CANARY: ScenarioSpec(
        "time to first token is 3x for two intervals after each weight change (cold caches): "
        "promoted, because the warm-up keeps that traffic out of the checks",
        VariantProfile(cold_start_ttft_factor=3.0),
        RolloutPhase.SUCCEEDED,
        policy_edit=_warm_up_two_and_a_half_intervals,
        cold_start_intervals=2.0,
    ),
    Scenario.ONE_TENANT_BROKEN: ScenarioSpec(
        "the canary fails every request of one tenant (10% of traffic): rolled back naming it, "
        "though the aggregate error rate passes",
        VariantProfile(tenant_error_rates=(("acme", 1.0),)),
        RolloutPhase.ROLLED_BACK,
        requests_per_second=120.0,
        policy_edit=_judge_each_tenant,
    ),
}
# How long the gateway-rejects scenario lets the hold be seen before creating the backend.
LATE_BACKEND_AFTER_SECONDS = 4.0
STABLE_PROFILE = VariantProfile(error_rate=0.002)


@dataclass
class DemoOutcome:
    scenario: Scenario
    expected: RolloutPhase
    state: RolloutState | None
    seconds: float

    @property
    def phase(self) -> RolloutPhase | None:
        return self.state.phase if self.state else None

    @property
    def as_expected(self) -> bool:
        return self.phase is self.expected


def load_demo_policy(path: Path) -> RolloutPolicy:
    result = load_policy_paths([path])
    if not result.ok or len(result.policies) != 1:
        problems = "; ".join(str(e) for e in result.errors) or "expected exactly one policy"
        raise ValueError(f"{path}: {problems}")
    return result.policies[0]


@dataclass
class DemoEnvironment:
    """Everything the demo runs, started in order and stopped in reverse (no orphans)."""

    scenario: Scenario
    policy_path: Path = DEFAULT_POLICY
    progress: Callable[[str], None] = lambda _msg: None
    # The upstream AI Gateway controller: on by default; off, the controller does not consult
    # the gateway and the simulator follows the AIGatewayRoute's own weights.
    ai_gateway: bool = True
    # A control plane (and AI Gateway controller) that is already running, to use instead of
    # starting new ones (the end-to-end tests share one per session).
    existing_plane: LocalControlPlane | None = None
    existing_aigw: LocalAIGateway | None = None
    # More changes to the policy (tests: e.g. the same scenario without its warm-up), and
    # another canary behaviour than the scenario's.
    policy_edits: Sequence[Callable[[dict[str, Any]], None]] = ()
    canary_profile: VariantProfile | None = None
    policy: RolloutPolicy = field(init=False)
    canary_backend_created: bool = field(init=False, default=True)
    _stack: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        spec = SCENARIOS[self.scenario]
        edits = [e for e in (spec.policy_edit, *self.policy_edits) if e is not None]
        if edits:
            # The controller reads policies from files, as in a cluster: the edited copy lives
            # in a folder of the environment's, removed with it.
            document = yaml.safe_load(self.policy_path.read_text())
            for edit in edits:
                edit(document)
            folder = Path(tempfile.mkdtemp(prefix="rollout-demo-policy-"))
            self._stack.callback(shutil.rmtree, folder, True)
            edited = folder / self.policy_path.name
            edited.write_text(yaml.safe_dump(document, sort_keys=False))
            self.policy_path = edited
        self.policy = load_demo_policy(self.policy_path)
        if SCENARIOS[self.scenario].canary_backend_late and not self.ai_gateway:
            raise ValueError(
                f"scenario {self.scenario.value} needs the AI Gateway controller (drop "
                "--no-ai-gateway): without it nobody rejects the route"
            )

    def __enter__(self) -> DemoEnvironment:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        spec, route = SCENARIOS[self.scenario], self.policy.spec.route
        if self.ai_gateway and self.existing_aigw is None:
            LocalAIGateway.check_ports()  # before anything starts
        if self.existing_plane is not None:
            self.plane = self.existing_plane
        else:
            self.progress("starting the local control plane (etcd + kube-apiserver, upstream CRDs)")
            self.plane = self._stack.enter_context(
                LocalControlPlane(crd_dirs=default_crd_dirs(), progress=self.progress)
            )
        self.api = self._stack.enter_context(self.plane.api_client())
        config = AIGatewayConfig(enabled=True, default_namespace=route.namespace)
        self.aigw: LocalAIGateway | None = self.existing_aigw if self.ai_gateway else None
        if self.ai_gateway and self.aigw is None:
            self.progress(
                "starting the upstream Envoy AI Gateway controller v1.1.0 (built once from "
                "shared/ai-gateway/src)"
            )
            self.aigw = self._stack.enter_context(
                LocalAIGateway(
                    self.plane,
                    gateway_name=config.gateway_name,
                    gateway_namespace=config.gateway_namespace,
                    progress=self.progress,
                )
            )
        self.exporter = GenAIMetricsExporter()
        self.exporter.start()
        self._stack.callback(self.exporter.stop)
        self.progress("starting Prometheus (scraping the data-plane simulator every second)")
        self.prometheus = self._stack.enter_context(
            LocalPrometheus(targets=[self.exporter.target], scrape_interval="1s")
        )
        self._ensure_namespace(route.namespace)
        self.gateway = KubeAIGatewayClient(self.api, config)
        self.progress(
            "creating Backend -> AIServiceBackend -> AIGatewayRoute for stable and "
            "canary, with token costs and a tenant rate limit"
        )
        self._create_chain()
        self.simulator = TrafficSimulator(
            self.gateway,
            self.exporter,
            route.namespace,
            route.name,
            {
                self.policy.spec.stable.backend: STABLE_PROFILE,
                self.policy.spec.canary.backend: self._canary_profile(),
            },
            requests_per_second=spec.requests_per_second,
            follow_generated_route=self.ai_gateway,
        )
        self.simulator.start()
        self._stack.callback(self.simulator.stop)
        metrics = ControllerMetrics()
        provider = PrometheusMetricsProvider(
            self.prometheus.url, timeout=3, on_query=lambda _e: metrics.prometheus_queries.inc()
        )
        checks = GatewayChecks(
            require_accepted=self.ai_gateway,
            verify_weights=self.ai_gateway,
            verification_timeout=timedelta(seconds=10),
        )
        gates = GateTracker(HttpGateRunner())
        reconciler = Reconciler(
            self.gateway,
            KubeEventRecorder(self.api),
            metrics=metrics,
            gateway_checks=checks,
            gates=gates,
            webhook_metrics=HttpWebhookMetricSource(),
        )
        self.controller = RolloutController(
            gateway=self.gateway,
            provider=provider,
            reconciler=reconciler,
            policy_paths=[self.policy_path],
            watcher=KubeRouteWatcher(self.api),
            watch_namespaces=[route.namespace],
            metrics=metrics,
            reload_seconds=2,
        )
        self.metrics_server = MetricsServer(
            metrics, self.controller.healthy, "127.0.0.1", free_port()
        )
        self.metrics_server.start()
        self._stack.callback(self.metrics_server.stop)
        self.progress(
            f"starting the controller with {self.policy_path.name} "
            f"(metrics on http://127.0.0.1:{self.metrics_server.port}/metrics)"
        )
        gates.on_answer = self.controller.request_tick
        self.controller.start()
        self._stack.callback(self.controller.stop)
        self._stack.callback(gates.stop)

    def _canary_profile(self) -> VariantProfile:
        spec = SCENARIOS[self.scenario]
        profile = self.canary_profile or spec.canary
        if spec.cold_start_intervals and not profile.cold_start_seconds:
            interval = self.policy.spec.analysis.interval.total_seconds()
            profile = replace(profile, cold_start_seconds=spec.cold_start_intervals * interval)
        return profile

    def _ensure_namespace(self, namespace: str) -> None:
        with contextlib.suppress(kubeapi.ApiException):  # "default" already exists
            kubeapi.request(
                self.api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}}
            )

    def _create_chain(self) -> None:
        spec = self.policy.spec
        late = SCENARIOS[self.scenario].canary_backend_late
        for variant in (spec.stable, spec.canary):
            self.gateway.apply_backend(
                Backend(
                    name=variant.backend,
                    endpoints=[
                        FQDNEndpoint(
                            hostname=f"{variant.backend}-predictor.{spec.route.namespace}.svc.cluster.local",
                            port=80,
                        )
                    ],
                )
            )
            if variant is spec.canary and late:
                self.canary_backend_created = False
                continue
            self._create_service_backend(variant.backend)
        self.gateway.apply_route(
            AIGatewayRoute(
                name=spec.route.name,
                namespace=spec.route.namespace,
                model_name=MODEL,
                backends=[
                    WeightedBackend(
                        name=spec.stable.backend,
                        weight=100,
                        variant_tag="stable",
                        model_name_override=spec.stable.model_name_override,
                    ),
                    WeightedBackend(
                        name=spec.canary.backend,
                        weight=0,
                        variant_tag="canary",
                        model_name_override=spec.canary.model_name_override,
                    ),
                ],
                llm_request_costs=[
                    LLMRequestCost(
                        metadata_key="llm_total_token", type=LLMRequestCostType.TOTAL_TOKEN
                    ),
                    LLMRequestCost(
                        metadata_key="llm_input_token", type=LLMRequestCostType.INPUT_TOKEN
                    ),
                    LLMRequestCost(
                        metadata_key="llm_output_token", type=LLMRequestCostType.OUTPUT_TOKEN
                    ),
                ],
                rate_limit=RateLimitConfig(
                    tenant_header="x-tenant-id",
                    token_budget=1_000_000,
                    budget_period=BudgetPeriod.DAILY,
                    requests_per_min=600,
                ),
                labels={"app.kubernetes.io/part-of": "rollout-demo"},
            )
        )

    def _create_service_backend(self, name: str) -> None:
        self.gateway.apply_service_backend(
            AIServiceBackend(
                name=name,
                api_schema=APISchema(name="OpenAI", version="v1"),
                backend_ref=BackendRef(name=name),
            )
        )

    def create_late_canary_backend(self) -> None:
        """gateway-rejects: the missing AIServiceBackend appears (someone fixed the mistake)."""
        self._create_service_backend(self.policy.spec.canary.backend)
        self.canary_backend_created = True

    # ---- reading what happened ------------------------------------------------------------
    def state(self) -> RolloutState | None:
        route = self.policy.spec.route
        snapshot = self.gateway.get_route_snapshot(route.namespace, route.name)
        return RolloutState.from_route_annotations(snapshot.annotations)

    def weights(self) -> dict[str, int]:
        route = self.policy.spec.route
        snapshot = self.gateway.get_route_snapshot(route.namespace, route.name)
        return snapshot.rule_for(
            [self.policy.spec.stable.backend, self.policy.spec.canary.backend]
        ).weights

    def gateway_view(self) -> tuple[str, dict[str, int] | None]:
        """The route's condition as the AI Gateway controller wrote it, and the weights of the
        HTTPRoute it generated (what Envoy would serve), by AIServiceBackend name."""
        route = self.policy.spec.route
        snapshot = self.gateway.get_route_snapshot(route.namespace, route.name)
        status = snapshot.status
        condition = (
            "Accepted"
            if status.ready
            else (f"NotAccepted: {status.rejection}" if status.reconciled else "no condition yet")
        )
        try:
            generated = self.gateway.get_generated_route(route.namespace, route.name)
        except AIGatewayError:
            return condition, None
        names = list(snapshot.rules[0].weights) if snapshot.rules else []
        return condition, generated.weights_by_backend(0, names)

    def events(self) -> list[dict[str, Any]]:
        route = self.policy.spec.route
        listed = kubeapi.request(
            self.api,
            "GET",
            f"/api/v1/namespaces/{route.namespace}/events",
            query={"fieldSelector": f"involvedObject.name={route.name}"},
        )
        items: list[dict[str, Any]] = listed.get("items", [])
        return sorted(items, key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))


def is_outcome(state: RolloutState | None) -> bool:
    """Terminal, or paused for a reason other than an approval (which someone may give)."""
    return state is not None and (
        state.phase.is_terminal
        or (
            state.phase is RolloutPhase.PAUSED
            and state.pause_cause is not PauseCause.AWAITING_APPROVAL
        )
    )


def render(env: DemoEnvironment, state: RolloutState | None, started: float) -> Group:
    spec = env.policy.spec
    stable, canary = spec.stable.backend, spec.canary.backend
    weights = env.weights()
    header = Text.assemble(
        ("rollout demo ", "bold"),
        (f"scenario {env.scenario.value}", "cyan"),
        f"  {SCENARIOS[env.scenario].description}\n",
        f"route {spec.route.namespace}/{spec.route.name}  model {MODEL}  "
        f"elapsed {time.monotonic() - started:5.1f}s",
    )
    bar_width = 40
    canary_cells = round(weights[canary] / 100 * bar_width)
    bar = Text.assemble(("█" * (bar_width - canary_cells), "blue"), ("█" * canary_cells, "yellow"))
    traffic = Table.grid(padding=(0, 2))
    traffic.add_row(
        Text(f"stable {stable}", style="blue"),
        f"{weights[stable]:>3}%",
        f"{env.simulator.sent[stable]} requests",
    )
    traffic.add_row(
        Text(f"canary {canary}", style="yellow"),
        f"{weights[canary]:>3}%",
        f"{env.simulator.sent[canary]} requests",
    )
    parts: list[Any] = [header, bar, traffic]
    if env.ai_gateway:
        condition, served = env.gateway_view()
        parts.append(
            Text.assemble(
                ("gateway ", "bold"),
                (condition, "green" if condition == "Accepted" else "yellow"),
                "  generated HTTPRoute weights ",
                str(served) if served is not None else "— (no HTTPRoute yet)",
            )
        )
    if state is not None:
        steps = list(spec.weights)
        parts.append(
            Text.assemble(
                ("phase ", "bold"),
                (state.phase.value, _phase_style(state.phase)),
                f"  step {state.step_index + 1}/{len(steps)} {steps}  ",
                f"checks: {state.counters.passed_total} passed, {state.counters.failed_total} "
                f"failed, {state.counters.inconclusive_total} inconclusive, "
                f"{state.counters.errors_total} errors\n",
                ("reason ", "bold"),
                state.reason,
            )
        )
        if state.last_analysis is not None:
            table = Table(title="last analysis", title_justify="left", expand=False)
            for column in ("metric", "canary", "stable", "threshold", "outcome"):
                table.add_column(column)
            for m in state.last_analysis.metrics:
                table.add_row(
                    m.metric,
                    _num(m.canary),
                    _num(m.stable),
                    m.threshold,
                    Text(m.outcome.value, style=_outcome_style(m.outcome.value)),
                )
            parts.append(table)
    events = Table(title="Kubernetes Events on the route", title_justify="left", expand=True)
    for column in ("type", "reason", "message"):
        events.add_column(column, overflow="fold")
    for event in env.events()[-6:]:
        events.add_row(
            event.get("type", ""), event.get("reason", ""), (event.get("message") or "")[:240]
        )
    parts.append(events)
    return Group(*parts)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _phase_style(phase: RolloutPhase) -> str:
    return {
        RolloutPhase.SUCCEEDED: "bold green",
        RolloutPhase.ROLLED_BACK: "bold red",
        RolloutPhase.ABORTED: "bold red",
        RolloutPhase.PAUSED: "bold yellow",
    }.get(phase, "")


def _outcome_style(outcome: str) -> str:
    return {"Pass": "green", "Fail": "red", "Inconclusive": "yellow", "Error": "magenta"}.get(
        outcome, ""
    )


@contextlib.contextmanager
def demo_logging(log_file: Path | None) -> Iterator[Path]:
    """Controller logs go to a file: the terminal belongs to the live view."""
    with tempfile.TemporaryDirectory(prefix="rollout-demo-") as folder:
        path = log_file or Path(folder) / "controller.log"
        with path.open("a") as stream:
            configure_logging(json=True, level="info", stream=stream)
            try:
                yield path
            finally:
                structlog.reset_defaults()


def run_demo(
    scenario: Scenario,
    *,
    policy_path: Path = DEFAULT_POLICY,
    console: Console | None = None,
    live: bool = True,
    timeout: float = 300.0,
    log_file: Path | None = None,
    on_started: Callable[[DemoEnvironment], None] | None = None,
    ai_gateway: bool = True,
    existing_plane: LocalControlPlane | None = None,
    existing_aigw: LocalAIGateway | None = None,
    policy_edits: Sequence[Callable[[dict[str, Any]], None]] = (),
    canary_profile: VariantProfile | None = None,
) -> DemoOutcome:
    console = console or Console()
    spec = SCENARIOS[scenario]
    with (
        demo_logging(log_file),
        DemoEnvironment(
            scenario,
            policy_path,
            progress=lambda msg: console.print(f"[dim]· {msg}[/]", highlight=False),
            ai_gateway=ai_gateway,
            existing_plane=existing_plane,
            existing_aigw=existing_aigw,
            policy_edits=policy_edits,
            canary_profile=canary_profile,
        ) as env,
    ):
        started = time.monotonic()
        if on_started is not None:
            on_started(env)
        state = None
        last_reason = None
        held_since: float | None = None
        with (
            Live(console=console, refresh_per_second=4, transient=False)
            if live
            else (contextlib.nullcontext()) as view
        ):
            while time.monotonic() - started < timeout:
                state = env.state()
                if view is not None:
                    view.update(render(env, state, started))
                elif state is not None and state.reason != last_reason:
                    last_reason = state.reason
                    weights = env.weights()
                    served = ""
                    if env.ai_gateway:
                        condition, generated = env.gateway_view()
                        served = f"  gateway {condition.split(':')[0]}, HTTPRoute {generated}"
                    console.print(
                        f"{time.monotonic() - started:6.1f}s  {state.phase.value:<11} "
                        f"weights {weights}{served}  {state.reason}",
                        highlight=False,
                    )
                if (
                    not env.canary_backend_created
                    and state is not None
                    and state.hold_reason is not None
                    and "does not accept" in state.hold_reason
                ):
                    held_since = held_since or time.monotonic()
                    if time.monotonic() - held_since >= LATE_BACKEND_AFTER_SECONDS:
                        console.print(
                            f"[dim]· creating the missing AIServiceBackend "
                            f"{env.policy.spec.canary.backend}[/]",
                            highlight=False,
                        )
                        env.create_late_canary_backend()
                if is_outcome(state):
                    break
                time.sleep(0.5)
        outcome = DemoOutcome(scenario, spec.expected, state, time.monotonic() - started)
        verdict = "as expected" if outcome.as_expected else f"expected {spec.expected.value}"
        console.print(
            f"\n[bold]outcome:[/] {outcome.phase.value if outcome.phase else 'none'} "
            f"after {outcome.seconds:.0f}s ({verdict}); stopping everything",
            highlight=False,
        )
    return outcome
