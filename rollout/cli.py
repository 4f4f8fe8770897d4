"""The `rollout` command line: run the controller, check policies, steer rollouts."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from rollout.config import AIGatewayConfig, ControllerSettings
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
    control_changes,
)
from rollout.controller.state import PauseCause, RolloutState
from rollout.gateway.errors import AIGatewayError
from rollout.gateway.kube import KubeAIGatewayClient
from rollout.gateway.models import RouteSnapshot
from rollout.localcluster import (
    CRDS_ENV,
    LocalAIGateway,
    LocalControlPlane,
    PrerequisiteError,
    StartupError,
    default_crd_dirs,
)
from rollout.policy.loading import load_policy_paths
from rollout.policy.schema import RolloutPolicy, policy_json_schema

app = typer.Typer(
    help="Progressive delivery of LLM model versions behind Envoy AI Gateway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(
    help="A local Kubernetes control plane (etcd + kube-apiserver).", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")

out = Console(soft_wrap=True)
# soft_wrap: error messages stay one line, so they can be grepped and copied.
err = Console(stderr=True, soft_wrap=True)

KUBECONFIG_OPTION = typer.Option(
    None,
    "--kubeconfig",
    help="Kubeconfig file (default: AIGATEWAY_KUBECONFIG, $KUBECONFIG, ~/.kube/config).",
)
NAMESPACE_OPTION = typer.Option(
    None, "--namespace", "-n", help="The route's namespace (default: AIGATEWAY_DEFAULT_NAMESPACE)."
)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _gateway_config(kubeconfig: Path | None, in_cluster: bool = False) -> AIGatewayConfig:
    """The environment's AIGATEWAY_* settings, enabled, with the command line's overrides."""
    try:
        if kubeconfig is not None:
            return AIGatewayConfig(enabled=True, in_cluster=in_cluster, kubeconfig=str(kubeconfig))
        if in_cluster:
            return AIGatewayConfig(enabled=True, in_cluster=True)
        return AIGatewayConfig(enabled=True)
    except ValidationError as exc:
        raise fail(str(exc)) from None


def _check_kubeconfig(config: AIGatewayConfig) -> None:
    """One-line errors for the kubeconfig mistakes the client library reports badly: a missing
    file ("Invalid kube-config file. No configuration found.") and a file that is not YAML or
    not a mapping (a bare yaml/TypeError traceback)."""
    path = config.kubeconfig_path()
    if path is None:
        return
    files = [Path(part) for part in path.split(os.pathsep) if Path(part).exists()]
    if not files:
        raise fail(
            f"kubeconfig {path} does not exist (pass --kubeconfig, or set "
            "AIGATEWAY_KUBECONFIG or KUBECONFIG)"
        )
    for file in files:
        try:
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise fail(f"cannot read the kubeconfig {file}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc
            raise fail(f"kubeconfig {file}{line} is not valid YAML: {problem}") from None
        if content is not None and not isinstance(content, dict):
            raise fail(
                f"kubeconfig {file} is not a kubeconfig: expected a mapping, got "
                f"{type(content).__name__}"
            )


def _gateway(kubeconfig: Path | None) -> KubeAIGatewayClient:
    config = _gateway_config(kubeconfig)
    _check_kubeconfig(config)
    try:
        return KubeAIGatewayClient.from_config(config)
    except AIGatewayError as exc:
        raise fail(str(exc)) from None


# ---- policies ---------------------------------------------------------------------------


@app.command()
def validate(paths: list[Path] = typer.Argument(..., help="Policy files or folders.")) -> None:
    """Check rollout policy files; print every error with file, policy and field; exit 1 on any."""
    result = load_policy_paths(paths)
    for error in result.errors:
        err.print(f"[red]✗[/] {error}", highlight=False)
    for policy in result.policies:
        out.print(
            f'[green]✓[/] {result.sources[policy.name]}: policy "{policy.name}" '
            f"({policy.spec.route.namespace}/{policy.spec.route.name}, steps "
            f"{list(policy.spec.weights)})",
            highlight=False,
        )
    if not result.ok:
        raise typer.Exit(1)
    if not result.policies:
        raise fail(f"no policies found in {', '.join(str(p) for p in paths)}")


@app.command()
def schema() -> None:
    """Print the RolloutPolicy JSON Schema (for editors and CI validation)."""
    print(json.dumps(policy_json_schema(), indent=2))


# ---- manual control ----------------------------------------------------------------------


def _annotate(
    route: str,
    namespace: str | None,
    kubeconfig: Path | None,
    changes: dict[str, str | None],
    done: str,
) -> None:
    gateway = _gateway(kubeconfig)
    try:
        gateway.set_route_annotations(namespace, route, changes)
    except AIGatewayError as exc:
        raise fail(str(exc)) from None
    ns = namespace or gateway.config.default_namespace
    out.print(f"aigatewayroute {ns}/{route}: {done}", highlight=False)


@app.command()
def approve(
    route: str,
    namespace: str | None = NAMESPACE_OPTION,
    kubeconfig: Path | None = KUBECONFIG_OPTION,
    step: str | None = typer.Option(
        None,
        "--step",
        help='The step to approve: its number ("3") or weight ("50%"). Default: the step '
        "the rollout is waiting at.",
    ),
) -> None:
    """Approve a step that waits for approval (`{weight: 50, approve: true}` in the policy):
    sets the approve annotation; the rollout then goes on to its next step."""
    if step is None:
        gateway = _gateway(kubeconfig)
        try:
            snapshot = gateway.get_route_snapshot(namespace, route)
        except AIGatewayError as exc:
            raise fail(str(exc)) from None
        state = _state_of(snapshot)
        if not isinstance(state, RolloutState) or state.pause_cause is not (
            PauseCause.AWAITING_APPROVAL
        ):
            where = state.reason if isinstance(state, RolloutState) else (state or "no rollout")
            raise fail(
                f"the rollout on {route} is not waiting for approval ({where}); pass --step "
                "to approve a step ahead"
            )
        step = f"step {state.step_index + 1}"
    _annotate(
        route,
        namespace,
        kubeconfig,
        control_changes("approve", step=step),
        f"approved {step} ({APPROVE_ANNOTATION}={step})",
    )


@app.command()
def pause(
    route: str,
    namespace: str | None = NAMESPACE_OPTION,
    kubeconfig: Path | None = KUBECONFIG_OPTION,
) -> None:
    """Freeze the rollout on ROUTE at its current weights (sets the pause annotation)."""
    _annotate(
        route,
        namespace,
        kubeconfig,
        control_changes("pause"),
        f"paused ({PAUSE_ANNOTATION}=true)",
    )


@app.command()
def resume(
    route: str,
    namespace: str | None = NAMESPACE_OPTION,
    kubeconfig: Path | None = KUBECONFIG_OPTION,
) -> None:
    """Resume the rollout on ROUTE: clears a manual pause, and hands the controller a fresh
    resume token, which also ends a pause caused by failed/inconclusive checks or drift."""
    changes = control_changes("resume")
    _annotate(
        route,
        namespace,
        kubeconfig,
        changes,
        f"resumed ({RESUME_ANNOTATION}={changes[RESUME_ANNOTATION]})",
    )


@app.command()
def abort(
    route: str,
    namespace: str | None = NAMESPACE_OPTION,
    kubeconfig: Path | None = KUBECONFIG_OPTION,
    clear: bool = typer.Option(False, "--clear", help="Remove the abort annotation."),
) -> None:
    """Send all traffic back to stable at once, whatever the analysis says (ends Aborted).

    The annotation stays until cleared: a new rollout on the route is aborted too until you
    run `rollout abort ROUTE --clear`."""
    if clear:
        _annotate(
            route, namespace, kubeconfig, control_changes("abort", clear=True), "abort cleared"
        )
    else:
        _annotate(
            route,
            namespace,
            kubeconfig,
            control_changes("abort"),
            f"abort requested ({ABORT_ANNOTATION}=true)",
        )


@app.command()
def promote(
    route: str,
    namespace: str | None = NAMESPACE_OPTION,
    kubeconfig: Path | None = KUBECONFIG_OPTION,
    clear: bool = typer.Option(False, "--clear", help="Remove the promote annotation."),
) -> None:
    """Skip the remaining steps: all traffic to the canary at once (ends Succeeded)."""
    if clear:
        _annotate(
            route, namespace, kubeconfig, control_changes("promote", clear=True), "promote cleared"
        )
    else:
        _annotate(
            route,
            namespace,
            kubeconfig,
            control_changes("promote"),
            f"promotion requested ({PROMOTE_ANNOTATION}=true)",
        )


# ---- status -------------------------------------------------------------------------------


def _state_of(snapshot: RouteSnapshot) -> RolloutState | str | None:
    try:
        return RolloutState.from_route_annotations(snapshot.annotations)
    except ValidationError as exc:
        return f"unreadable state annotation: {exc.errors()[0]['msg']}"


def _weights_text(snapshot: RouteSnapshot, state: RolloutState) -> str:
    for rule in snapshot.rules:
        if state.stable_backend in rule.weights and state.canary_backend in rule.weights:
            return (
                f"{state.stable_backend}={rule.weights[state.stable_backend]} "
                f"{state.canary_backend}={rule.weights[state.canary_backend]}"
            )
    return "backends not in route"


def render_status(snapshot: RouteSnapshot, state: RolloutState) -> None:
    out.print(
        f"[bold]{snapshot.namespace}/{snapshot.name}[/]  rollout [bold]{state.policy_name}[/]",
        highlight=False,
    )
    # 1-based, as in the reasons and Events ("step 2 of 5 (10%)").
    out.print(f"  phase    {state.phase.value}  (step {state.step_index + 1})", highlight=False)
    out.print(
        f"  weights  {_weights_text(snapshot, state)}  (controller wants "
        f"{state.stable_percent:g}%/{state.canary_percent:g}%)",
        highlight=False,
    )
    out.print(f"  reason   {state.reason}", highlight=False)
    if state.pause_reason:
        out.print(f"  paused   {state.pause_reason}", highlight=False)
    if state.hold_reason:
        out.print(f"  held     {state.hold_reason}", highlight=False)
    gateway = snapshot.status
    accepted = (
        "Accepted"
        if gateway.ready
        else (f"NotAccepted: {gateway.rejection}" if gateway.reconciled else "not reconciled yet")
    )
    verified = (
        "awaiting the generated HTTPRoute"
        if state.awaiting_verification
        else ("verified on the generated HTTPRoute" if state.weights_verified_at else "")
    )
    out.print(
        f"  gateway  {accepted}" + (f"; weights {verified}" if verified else ""), highlight=False
    )
    if snapshot.cohort_percent is not None:
        out.print(
            f"  cohort   {snapshot.cohort_percent:.4g}% of sessions ({snapshot.cohort_header}) "
            f"on {snapshot.cohort_backend}",
            highlight=False,
        )
    if snapshot.opt_in_values:
        out.print(
            f"  opt-in   {snapshot.opt_in_header} = {', '.join(snapshot.opt_in_values)} on "
            f"{snapshot.opt_in_backend}",
            highlight=False,
        )
    if state.gate_waiting is not None:
        gate, _, step = state.gate_waiting.partition("@")
        out.print(
            f"  gate     waiting for gate {gate} (before step {int(step) + 1})"
            + (
                f", called again after {state.gate_retry_after.isoformat()}"
                if state.gate_retry_after
                else ""
            ),
            highlight=False,
        )
    if state.gates_passed:
        out.print(f"  gates    passed: {', '.join(state.gates_passed)}", highlight=False)
    if state.pause_cause is PauseCause.AWAITING_APPROVAL:
        out.print(
            f"  approve  step {state.step_index + 1} waits: rollout approve {snapshot.name} "
            f"-n {snapshot.namespace}",
            highlight=False,
        )
    controls = [
        k.rsplit("/", 1)[1]
        for k in (PAUSE_ANNOTATION, ABORT_ANNOTATION, PROMOTE_ANNOTATION)
        if k in snapshot.annotations
    ]
    if controls:
        out.print(f"  controls {', '.join(controls)} set on the route", highlight=False)
    c = state.counters
    out.print(
        f"  checks   passed {c.passed_total}, failed {c.failed_total}, inconclusive "
        f"{c.inconclusive_total}, errors {c.errors_total}",
        highlight=False,
    )
    verdict = state.last_analysis
    if verdict is None:
        out.print("  analysis none yet")
        return
    when = state.last_analysis_at.isoformat() if state.last_analysis_at else "?"
    table = Table(title=f"last analysis: {verdict.outcome.value} at {when}", title_justify="left")
    for column in ("metric", "outcome", "canary", "stable", "unit", "threshold"):
        table.add_column(column)
    for m in verdict.metrics:
        failing = [t.tenant for t in m.tenants if t.failed]
        threshold = f"{m.threshold}; failing: {', '.join(failing)}" if failing else m.threshold
        table.add_row(m.metric, m.outcome.value, _num(m.canary), _num(m.stable), m.unit, threshold)
    _print_table(table)


def _print_table(table: Table) -> None:
    # A pipe has no width and rich would assume 80 columns, wrapping thresholds over several
    # lines; print whole rows there so that `rollout status | grep ttft` shows the threshold.
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
    Console(file=out.file, width=max(width, out.width)).print(table)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


@app.command()
def status(
    route: str | None = typer.Argument(None, help="A route; omitted: every rollout."),
    namespace: str | None = NAMESPACE_OPTION,
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
    kubeconfig: Path | None = KUBECONFIG_OPTION,
) -> None:
    """Phase, step, weights, last analysis (each value against its threshold) and the reason
    of the last transition, read from the route's state annotation."""
    gateway = _gateway(kubeconfig)
    try:
        if route is not None:
            snapshots = [gateway.get_route_snapshot(namespace, route)]
        else:
            ns = None if all_namespaces else (namespace or gateway.config.default_namespace)
            snapshots = gateway.list_route_snapshots(ns)
    except AIGatewayError as exc:
        raise fail(str(exc)) from None
    shown = 0
    for snapshot in snapshots:
        state = _state_of(snapshot)
        if state is None:
            if route is not None:
                raise fail(
                    f"aigatewayroute {snapshot.namespace}/{snapshot.name} has no "
                    "rollout state yet (no controller has acted on it)"
                )
            continue
        if isinstance(state, str):
            err.print(f"{snapshot.namespace}/{snapshot.name}: {state}", highlight=False)
            continue
        render_status(snapshot, state)
        shown += 1
    if shown == 0 and route is None:
        out.print("no rollouts found")


# ---- the dashboard --------------------------------------------------------------------------


@app.command()
def dashboard(
    kubeconfig: Path | None = KUBECONFIG_OPTION,
    prometheus_url: str | None = typer.Option(
        None, help="Prometheus that scrapes the controller: charts reach back before start-up."
    ),
    port: int = typer.Option(8090, help="Port to serve on (0: a free one)."),
    host: str = typer.Option("127.0.0.1", help="Address to serve on (default: this machine)."),
    allow_actions: bool = typer.Option(
        False,
        "--allow-actions",
        help="Show pause/resume/abort/promote buttons (they set the same annotations as the "
        "commands, after a confirmation). Off: read-only, the action endpoint answers 403.",
    ),
    policies: list[Path] = typer.Option(
        None, "--policies", "-p", help="Policy files or folders, to show each rollout's policy."
    ),
    namespace: list[str] = typer.Option(
        None, "--namespace", "-n", help="Only these namespaces (repeatable; default: all)."
    ),
) -> None:
    """A web dashboard of every rollout, live: weights and checks over time, Events, policy."""
    from rollout.dashboard.app import DashboardApp, DashboardServer
    from rollout.dashboard.source import DashboardSource

    loaded: dict[str, RolloutPolicy] = {}
    if policies:
        result = load_policy_paths(policies)
        for error in result.errors:
            err.print(f"[yellow]![/] {error}", highlight=False)
        loaded = {p.name: p for p in result.policies}
    source = DashboardSource(
        _gateway(kubeconfig),
        prometheus_url=prometheus_url,
        namespaces=list(namespace) or None,
        policies=(lambda: loaded) if policies else None,
    )
    try:
        server = DashboardServer(DashboardApp(source, allow_actions=allow_actions), host, port)
    except OSError as exc:
        raise fail(f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mode = "actions allowed" if allow_actions else "read-only"
    err.print(f"dashboard on {server.url}/ ({mode}); Ctrl-C stops it", highlight=False)
    with server:
        stop.wait()


# ---- the controller -------------------------------------------------------------------------


@app.command()
def run(
    policies: list[Path] = typer.Option(
        ..., "--policies", "-p", help="Policy files or folders (re-read on change)."
    ),
    prometheus_url: str | None = typer.Option(None, help="Default: ROLLOUT_PROMETHEUS_URL."),
    kubeconfig: Path | None = KUBECONFIG_OPTION,
    in_cluster: bool = typer.Option(False, help="Use the pod's service account."),
    metrics_port: int | None = typer.Option(
        None,
        help=(
            "/metrics and /healthz port (default: ROLLOUT_METRICS_PORT, 8089; not 8080, "
            "which the AI Gateway controller holds)."
        ),
    ),
    leader_election: bool | None = typer.Option(
        None,
        "--leader-election/--no-leader-election",
        help="Default: on (ROLLOUT_LEADER_ELECTION).",
    ),
    log_format: str = typer.Option("json", help="json or console."),
) -> None:
    """Run the canary controller until Ctrl-C / SIGTERM."""
    import structlog

    from rollout.app import build_controller  # the adapters are only needed here
    from rollout.logging import configure_logging

    configure_logging(json=log_format == "json")
    log = structlog.get_logger("rollout.cli")
    overrides: dict[str, object] = {}
    if prometheus_url is not None:
        overrides["prometheus_url"] = prometheus_url
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    if leader_election is not None:
        overrides["leader_election"] = leader_election
    try:
        settings = ControllerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail(str(exc)) from None
    gateway_config = _gateway_config(kubeconfig, in_cluster)
    _check_kubeconfig(gateway_config)
    missing = [p for p in policies if not p.exists()]
    if missing:
        raise fail(f"policy path(s) not found: {', '.join(str(p) for p in missing)}")
    try:
        running = build_controller(policies, settings, gateway_config)
    except AIGatewayError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # the /metrics port is taken, or the host is not ours
        raise fail(
            f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: "
            f"{exc.strerror or exc}"
        ) from None
    if not running.gateway.is_available():
        if running.metrics_server is not None:
            running.metrics_server.stop()  # bound, not started: release the port
        raise fail(
            "the Kubernetes API does not answer or does not serve the AI Gateway CRDs "
            "(aigateway.envoyproxy.io); check the kubeconfig and that Envoy AI Gateway "
            "is installed"
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if running.metrics_server is not None:
        running.metrics_server.start()
        # A log event, not a console line: with --log-format json every line must be JSON.
        log.info(
            "metrics_serving", port=running.metrics_server.port, paths=["/metrics", "/healthz"]
        )
    tune_garbage_collector()
    running.controller.start()
    # What start-up loaded (policies, modules, the route cache's first LIST) lives as long as
    # the process: out of the collector's sight, a collection at 10,000 rollouts no longer
    # walks it all (about a fifth of a step tick's CPU there).
    gc.freeze()
    try:
        stop.wait()
    finally:
        running.stop()


# The cyclic collector's thresholds for `rollout run` (CPython's defaults: 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 50)


def tune_garbage_collector() -> None:
    """Run the cyclic garbage collector ~14x less often. With the defaults it ran ~100 times
    in a tick of 1000 rollouts, and every few ticks a full collection walked every object made
    since start-up (~0.1 s per 1000 rollouts, landing in whichever tick allocated then): a
    fifth to a third of a tick's CPU, at random. Nearly everything a tick makes is freed by
    reference counting, not by the collector; the young generation it still collects holds at
    most 10,000 objects."""
    gc.set_threshold(*GC_THRESHOLDS)


# ---- the demo ----------------------------------------------------------------------------------


@app.command()
def demo(
    scenario: str = typer.Option(
        "healthy",
        "--scenario",
        "-s",
        help="healthy (promotion), bad-canary (error spike: rollback), slow-canary (TTFT "
        "regression against stable: rollback), no-traffic (inconclusive: paused), "
        "gateway-rejects (the gateway refuses the route: held, then completed), "
        "expensive-canary (cost per request: rollback), cold-start-canary (slow after each "
        "weight change: promoted thanks to the warm-up), one-tenant-broken (one tenant fails: "
        "rollback naming it).",
    ),
    policy: Path | None = typer.Option(None, help="Default: policies/demo.yaml."),
    live: bool = typer.Option(True, "--live/--no-live", help="Live view, or one line per change."),
    log_file: Path | None = typer.Option(None, help="Keep the controller's JSON log here."),
    timeout: float = typer.Option(300, help="Give up after this many seconds."),
    ai_gateway: bool = typer.Option(
        True,
        "--ai-gateway/--no-ai-gateway",
        help="Run the upstream Envoy AI Gateway controller (needs ports 8080, 18002, 9443).",
    ),
) -> None:
    """A whole canary rollout on this machine: local kube-apiserver with the upstream CRDs, the
    upstream Envoy AI Gateway controller, Prometheus, the controller, and a data-plane
    SIMULATOR standing in for Envoy and the model servers. Exits 0 when the rollout ends as
    the scenario expects."""
    from rollout.demo import DEFAULT_POLICY, Scenario, run_demo

    try:
        chosen = Scenario(scenario)
    except ValueError:
        raise fail(
            f"unknown scenario {scenario!r}; choose one of {', '.join(s.value for s in Scenario)}"
        ) from None
    try:
        outcome = run_demo(
            chosen,
            policy_path=policy or DEFAULT_POLICY,
            live=live,
            timeout=timeout,
            log_file=log_file,
            console=out,
            ai_gateway=ai_gateway,
        )
    except (PrerequisiteError, StartupError, ValueError) as exc:
        raise fail(str(exc)) from None
    if not outcome.as_expected:
        raise typer.Exit(1)


# ---- the local control plane ------------------------------------------------------------------


@cluster_app.command("start")
def cluster_start(
    kubeconfig: Path = typer.Option(
        ..., "--kubeconfig", help="Where to write the admin kubeconfig once the cluster is ready."
    ),
    crds: list[Path] = typer.Option(
        None, "--crds", help=f"CRD folder (repeatable). Default: ${CRDS_ENV} or ../shared/crds."
    ),
    port: int | None = typer.Option(None, help="kube-apiserver port (default: a free one)."),
    ai_gateway: bool = typer.Option(
        False,
        "--ai-gateway",
        help=(
            "Also run the upstream Envoy AI Gateway controller (built once from "
            "../shared/ai-gateway/src, or ROLLOUT_AIGW_CONTROLLER), with the Gateway named by "
            "AIGATEWAY_GATEWAY_NAME/AIGATEWAY_GATEWAY_NAMESPACE. Needs ports 8080, 18002, 9443."
        ),
    ),
) -> None:
    """Start etcd + kube-apiserver with the CRDs installed; run until Ctrl-C / SIGTERM.

    The kubeconfig file is written only once the API server is ready, every CRD is established
    and, with --ai-gateway, the AI Gateway controller's route workers have started, so
    `until [ -f KUBECONFIG ]; do sleep 1; done` is a readiness check.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    progress = lambda msg: err.print(f"[dim]{msg}[/]", highlight=False)  # noqa: E731
    plane = LocalControlPlane(crd_dirs=crds or default_crd_dirs(), port=port, progress=progress)
    gateway: LocalAIGateway | None = None
    try:
        if ai_gateway:
            LocalAIGateway.check_ports()  # before anything starts
            config = AIGatewayConfig()
            gateway = LocalAIGateway(
                plane,
                gateway_name=config.gateway_name,
                gateway_namespace=config.gateway_namespace,
                progress=progress,
            )
        plane.start()
        if gateway is not None:
            gateway.start()
    except (PrerequisiteError, StartupError, ValidationError) as exc:
        plane.stop()
        raise fail(str(exc)) from None
    try:
        plane.write_kubeconfig(kubeconfig)
        with_gateway = (
            f"\n  AI Gateway controller: pid {gateway.pid}, Gateway "
            f"{gateway.gateway_namespace}/{gateway.gateway_name}"
            if gateway is not None
            else ""
        )
        err.print(
            f"[green]ready[/] in {time.monotonic() - started:.1f}s: {plane.url}{with_gateway}\n"
            f"  export KUBECONFIG={kubeconfig.resolve()}\n"
            "  Ctrl-C stops the cluster and removes its data.",
            highlight=False,
        )
        stop.wait()
    finally:
        if gateway is not None:
            gateway.stop()
        plane.stop()
        kubeconfig.unlink(missing_ok=True)
        err.print("stopped")


def main() -> None:
    app(prog_name="rollout")
