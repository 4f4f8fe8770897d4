"""The `rollout` command line against the local kube-apiserver with the upstream CRDs: the
manual controls, `rollout status`, and `rollout run` as an operator starts it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome, MetricVerdict
from rollout.cli import app
from rollout.config import AIGatewayConfig
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
    STATE_ANNOTATION,
)
from rollout.controller.state import CheckCounters, RolloutPhase, RolloutState
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, WeightedBackend
from rollout.localcluster import LocalControlPlane
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from tests.integration.chain import create_chain

ROUTE = "chat"
STABLE, CANARY = "llama-v1", "llama-v2"
# Variables of the developer's shell that would change what the commands do.
FOREIGN_ENV = ("AIGATEWAY_", "ROLLOUT_", "KUBECONFIG")


@pytest.fixture
def kubeconfig(control_plane: LocalControlPlane, tmp_path: Path) -> Path:
    return control_plane.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def gateway(api_client: k8s.ApiClient, namespace: str) -> KubeAIGatewayClient:
    return KubeAIGatewayClient(
        api_client, AIGatewayConfig(enabled=True, default_namespace=namespace)
    )


def create_route(
    gateway: KubeAIGatewayClient, name: str = ROUTE, weights: tuple[int, int] = (90, 10)
) -> None:
    namespace = gateway.config.default_namespace
    create_chain(gateway, [STABLE, CANARY])  # so that the AI Gateway controller accepts it
    gateway.create_route(
        AIGatewayRoute(
            name=name,
            model_name="llama-3-8b",
            backends=[
                WeightedBackend(
                    name=STABLE, weight=weights[0], model_name_override=f"{namespace}-v1"
                ),
                WeightedBackend(
                    name=CANARY, weight=weights[1], model_name_override=f"{namespace}-v2"
                ),
            ],
        )
    )


@pytest.fixture
def route(gateway: KubeAIGatewayClient) -> str:
    create_route(gateway)
    return ROUTE


def clean_env(**extra: str) -> dict[str, str | None]:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(FOREIGN_ENV)}
    return {**unset, "COLUMNS": "80", **extra}


def cli(*args: str | Path, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        app, [str(a) for a in args], prog_name="rollout", env=clean_env(**(env or {}))
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


# ---- manual controls ----------------------------------------------------------------------------


def test_pause_and_resume(
    gateway: KubeAIGatewayClient, route: str, namespace: str, kubeconfig: Path
) -> None:
    target = [route, "-n", namespace, "--kubeconfig", kubeconfig]
    out = ok(cli("pause", *target))
    assert out.strip() == f"aigatewayroute {namespace}/{route}: paused ({PAUSE_ANNOTATION}=true)"
    assert gateway.get_route_annotations(None, route)[PAUSE_ANNOTATION] == "true"

    before = datetime.now(UTC)
    out = ok(cli("resume", *target))
    annotations = gateway.get_route_annotations(None, route)
    assert PAUSE_ANNOTATION not in annotations
    token = annotations[RESUME_ANNOTATION]
    assert (
        out.strip() == f"aigatewayroute {namespace}/{route}: resumed ({RESUME_ANNOTATION}={token})"
    )
    written = datetime.strptime(token, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= written <= datetime.now(UTC)
    # Every resume hands the controller a token it has not seen, even with nothing paused.
    ok(cli("resume", *target))
    assert gateway.get_route_annotations(None, route)[RESUME_ANNOTATION] != token
    # The weights are the controller's business, never the CLI's.
    snapshot = gateway.get_route_snapshot(None, route)
    assert snapshot.rules[0].weights == {STABLE: 90, CANARY: 10}


@pytest.mark.parametrize(
    ("command", "annotation", "said"),
    [
        ("abort", ABORT_ANNOTATION, "abort requested"),
        ("promote", PROMOTE_ANNOTATION, "promotion requested"),
    ],
)
def test_abort_and_promote_set_and_clear(
    command: str,
    annotation: str,
    said: str,
    gateway: KubeAIGatewayClient,
    route: str,
    namespace: str,
    kubeconfig: Path,
) -> None:
    gateway.set_route_annotations(None, route, {"team": "ml"})
    target = [route, "-n", namespace, "--kubeconfig", kubeconfig]
    out = ok(cli(command, *target))
    assert out.strip() == f"aigatewayroute {namespace}/{route}: {said} ({annotation}=true)"
    assert gateway.get_route_annotations(None, route)[annotation] == "true"
    ok(cli(command, *target))  # idempotent
    out = ok(cli(command, *target, "--clear"))
    assert out.strip() == f"aigatewayroute {namespace}/{route}: {command} cleared"
    annotations = gateway.get_route_annotations(None, route)
    assert annotation not in annotations
    assert annotations["team"] == "ml"  # other annotations are left alone
    ok(cli(command, *target, "--clear"))  # clearing twice is fine


def test_the_namespace_and_kubeconfig_come_from_the_environment(
    gateway: KubeAIGatewayClient, route: str, namespace: str, kubeconfig: Path
) -> None:
    env = {"AIGATEWAY_DEFAULT_NAMESPACE": namespace, "KUBECONFIG": str(kubeconfig)}
    out = ok(cli("pause", route, env=env))
    assert f"{namespace}/{route}: paused" in out
    assert gateway.get_route_annotations(None, route)[PAUSE_ANNOTATION] == "true"
    env = {"AIGATEWAY_DEFAULT_NAMESPACE": namespace, "AIGATEWAY_KUBECONFIG": str(kubeconfig)}
    ok(cli("abort", route, env=env))
    assert gateway.get_route_annotations(None, route)[ABORT_ANNOTATION] == "true"


def test_a_missing_route_is_a_clear_not_found_error(namespace: str, kubeconfig: Path) -> None:
    for command in (["status", "nope"], ["pause", "nope"], ["promote", "nope", "--clear"]):
        line = one_line_error(cli(*command, "-n", namespace, "--kubeconfig", kubeconfig))
        assert line.startswith(f"error: AIGatewayRoute {namespace}/nope: "), line
        assert line.endswith('"nope" not found'), line


# ---- status -------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 15, 4, 5, tzinfo=UTC)


def progressing_state() -> RolloutState:
    return RolloutState(
        policy_name="chat-canary",
        policy_hash="0123456789abcdef",
        stable_backend=STABLE,
        canary_backend=CANARY,
        phase=RolloutPhase.PROGRESSING,
        step_index=1,
        stable_weight=90,
        canary_weight=10,
        counters=CheckCounters(passed_total=3, failed_total=1, inconclusive_total=2),
        reason="advanced to step 2 of 5 (10%): every check passed",
        last_transition_time=NOW,
        started_at=NOW - timedelta(minutes=3),
        step_started_at=NOW,
        last_analysis_at=NOW,
        last_analysis=AnalysisVerdict(
            outcome=CheckOutcome.FAIL,
            reason="ttft-p95: canary 1.9 > 1.5",
            metrics=(
                MetricVerdict(
                    metric="error-rate",
                    outcome=CheckOutcome.PASS,
                    canary=0.0123,
                    stable=0.01,
                    threshold="canary <= 0.02, canary-stable <= 0.005",
                    reason="within thresholds",
                ),
                MetricVerdict(
                    metric="ttft-p95",
                    outcome=CheckOutcome.FAIL,
                    canary=1.9,
                    stable=None,
                    threshold="canary <= 1.5, canary/stable <= 1.2",
                    reason="canary 1.9 > 1.5",
                ),
            ),
        ),
    )


def test_status_of_a_route_without_state_explains(
    route: str, namespace: str, kubeconfig: Path
) -> None:
    line = one_line_error(cli("status", route, "-n", namespace, "--kubeconfig", kubeconfig))
    assert line == (
        f"error: aigatewayroute {namespace}/{route} has no rollout state yet (no controller "
        "has acted on it)"
    )
    out = ok(cli("status", "-n", namespace, "--kubeconfig", kubeconfig))
    assert out.strip() == "no rollouts found"


def test_status_shows_phase_step_weights_reason_and_each_metric_against_its_threshold(
    gateway: KubeAIGatewayClient, route: str, namespace: str, kubeconfig: Path
) -> None:
    gateway.set_route_annotations(
        None, route, {STATE_ANNOTATION: progressing_state().to_annotation()}
    )
    ok(cli("pause", route, "-n", namespace, "--kubeconfig", kubeconfig))
    out = ok(cli("status", route, "-n", namespace, "--kubeconfig", kubeconfig))
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[:4] == [
        f"{namespace}/{route}  rollout chat-canary",
        "  phase    Progressing  (step 2)",
        f"  weights  {STABLE}=90 {CANARY}=10  (controller wants 90%/10%)",
        "  reason   advanced to step 2 of 5 (10%): every check passed",
    ]
    # What the AI Gateway controller says of the route (Accepted once it reconciled it).
    assert re.fullmatch(r"  gateway  (Accepted|not reconciled yet).*", lines[4]), lines[4]
    assert lines[5:8] == [
        "  controls pause set on the route",
        "  checks   passed 3, failed 1, inconclusive 2, errors 0",
        f"last analysis: Fail at {NOW.isoformat()}",
    ]
    header = next(line for line in lines if "metric" in line)
    assert re.search(r"metric\W+outcome\W+canary\W+stable\W+unit\W+threshold", header)
    # One row per metric, the whole threshold on the row even in 80 columns (a pipe).
    [error_rate] = [line for line in lines if "error-rate" in line]
    assert re.search(
        r"error-rate\W+Pass\W+0\.0123\W+0\.01\W+canary <= 0\.02, canary-stable <= 0\.005",
        error_rate,
    ), error_rate
    [ttft] = [line for line in lines if "ttft-p95" in line]
    assert re.search(r"ttft-p95\W+Fail\W+1\.9\W+—\W+canary <= 1\.5, canary/stable <= 1\.2", ttft)


def test_status_of_a_paused_rollout_shows_why(
    gateway: KubeAIGatewayClient, route: str, namespace: str, kubeconfig: Path
) -> None:
    state = progressing_state().model_copy(
        update={
            "phase": RolloutPhase.PAUSED,
            "pause_reason": "3 inconclusive checks in a row (limit 3)",
            "last_analysis": None,
            "last_analysis_at": None,
        }
    )
    gateway.set_route_annotations(None, route, {STATE_ANNOTATION: state.to_annotation()})
    out = ok(cli("status", route, "-n", namespace, "--kubeconfig", kubeconfig))
    assert "  phase    Paused  (step 2)" in out
    assert "  paused   3 inconclusive checks in a row (limit 3)" in out
    assert "  analysis none yet" in out


def test_status_lists_the_rollouts_of_a_namespace(
    gateway: KubeAIGatewayClient, route: str, namespace: str, kubeconfig: Path
) -> None:
    gateway.set_route_annotations(
        None, route, {STATE_ANNOTATION: progressing_state().to_annotation()}
    )
    create_route(gateway, "no-state")
    create_route(gateway, "broken")
    gateway.set_route_annotations(None, "broken", {STATE_ANNOTATION: '{"phase": "Sideways"}'})
    result = cli("status", "-n", namespace, "--kubeconfig", kubeconfig)
    out = ok(result)
    assert f"{namespace}/{route}  rollout chat-canary" in out
    assert "error-rate" in out and "ttft-p95" in out
    assert "no-state" not in out + result.stderr  # nothing to show, no complaint
    [complaint] = result.stderr.strip().splitlines()
    assert complaint.startswith(f"{namespace}/broken: unreadable state annotation: ")
    # -A: every namespace; ours is among them.
    out = ok(cli("status", "-A", "--kubeconfig", kubeconfig))
    assert f"{namespace}/{route}  rollout chat-canary" in out


# ---- rollout run --------------------------------------------------------------------------------


def policy_yaml(namespace: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata:
          name: cli-canary
        spec:
          route: {{namespace: {namespace}, name: {ROUTE}}}
          stable: {{backend: {STABLE}, modelNameOverride: {namespace}-v1}}
          canary: {{backend: {CANARY}, modelNameOverride: {namespace}-v2}}
          steps: [10, 50]
          analysis:
            interval: 2s
            window: 10s
            minRequests: 5
            inconclusiveLimit: 100
            metrics:
              - kind: error-rate
                max: 0.05
        """)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str, labels: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """Samples carrying `labels`, keyed by (name, the value of their one other label or "")."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if labels.items() <= sample.labels.items():
                extra = [v for k, v in sample.labels.items() if k not in labels]
                found[(sample.name, extra[0] if extra else "")] = sample.value
    return found


def wait_until(
    what: str, check: Callable[[], Any], proc: subprocess.Popen[bytes], logs: Path, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"rollout run exited {proc.returncode}:\n{logs.read_text()}"
        try:
            found = check()
        except (OSError, AssertionError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{logs.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def prometheus() -> Iterator[LocalPrometheus]:
    with LocalPrometheus(targets=[]) as prom:  # no data: every check is inconclusive
        yield prom


@pytest.mark.timeout(120)
def test_run_serves_health_and_metrics_starts_the_rollout_logs_json_and_stops_on_sigterm(
    gateway: KubeAIGatewayClient,
    namespace: str,
    kubeconfig: Path,
    prometheus: LocalPrometheus,
    tmp_path: Path,
) -> None:
    create_route(gateway, weights=(100, 0))
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "chat.yaml").write_text(policy_yaml(namespace))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update(AIGATEWAY_DEFAULT_NAMESPACE=namespace, ROLLOUT_NAMESPACES=f'["{namespace}"]')
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rollout",
                "run",
                "--policies",
                str(policies),
                "--kubeconfig",
                str(kubeconfig),
                "--prometheus-url",
                prometheus.url,
                "--no-leader-election",
                "--metrics-port",
                str(port),
                "--log-format",
                "json",
            ],
            stdout=out,
            stderr=err,
            env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        wait_until(
            "/healthz 200", lambda: http_get(f"{base}/healthz") == (200, "ok\n"), proc, stderr, 15
        )

        def first_step() -> RolloutState | None:
            raw = gateway.get_route_annotations(None, ROUTE).get(STATE_ANNOTATION)
            state = None if raw is None else RolloutState.from_annotation(raw)
            return state if state is not None and state.phase is RolloutPhase.PROGRESSING else None

        state = wait_until("state annotation", first_step, proc, stderr, 15)
        assert (state.policy_name, state.step_index) == ("cli-canary", 0)
        assert (state.stable_weight, state.canary_weight) == (90, 10)
        assert gateway.get_route_snapshot(None, ROUTE).rules[0].weights == {
            STABLE: 90,
            CANARY: 10,
        }

        ours = {"namespace": namespace, "rollout": "cli-canary", "route": ROUTE}

        def metrics_show_the_rollout() -> dict[tuple[str, str], float] | None:
            status, text = http_get(f"{base}/metrics")
            found = samples(text, ours) if status == 200 else {}
            return found if found.get(("rollout_canary_weight", "")) == 10 else None

        metrics = wait_until("rollout metrics", metrics_show_the_rollout, proc, stderr, 15)
        assert time.monotonic() - started < 15
        assert metrics[("rollout_phase", "Progressing")] == 1
        assert metrics[("rollout_phase", "Pending")] == 0
        assert metrics[("rollout_step_index", "")] == 0
        assert metrics[("rollout_api_writes_total", "weights")] >= 1
        _, text = http_get(f"{base}/metrics")
        assert "rollout_policy_errors 0.0" in text and "rollout_leader 1.0" in text

        # The CLI steers the running controller through the route's annotations.
        ok(cli("pause", ROUTE, "-n", namespace, "--kubeconfig", kubeconfig))

        def paused() -> RolloutState | None:
            raw = gateway.get_route_annotations(None, ROUTE)[STATE_ANNOTATION]
            state = RolloutState.from_annotation(raw)
            return state if state.phase is RolloutPhase.PAUSED else None

        wait_until("pause", paused, proc, stderr, 10)
        out = ok(cli("status", ROUTE, "-n", namespace, "--kubeconfig", kubeconfig))
        assert "phase    Paused  (step 1)" in out and f"{STABLE}=90 {CANARY}=10" in out

        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        assert proc.wait(timeout=10) == 0, stderr.read_text()
        assert time.monotonic() - stopping < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    lines = [line for line in (stdout.read_text() + stderr.read_text()).splitlines() if line]
    assert lines
    events = []
    for line in lines:
        record = json.loads(line)  # every line is JSON, not a console message
        assert isinstance(record, dict) and "event" in record, line
        events.append(record["event"])
    for expected in (
        "metrics_serving",
        "policy_loaded",
        "controller_started",
        "controller_stopped",
    ):
        assert expected in events, events
