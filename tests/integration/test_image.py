"""The controller image, built here from the Containerfile and run with podman.

These machines reach no image registry, so the base is made from Debian packages
(scripts/image-base.sh: debootstrap --variant=minbase with python3, `podman import`, cached)
and passed as BASE to the same build `make image` runs (scripts/image-build.sh). In the
container: `rollout --help`, `rollout validate` on the example policies, bad input (one clear
line, no traceback), and the Helm chart's own Deployment run the way a kubelet would run it:
its args and env, as its non-root user, read-only root with only /tmp writable, no
capabilities, the policies from its ConfigMap, and the ServiceAccount's token and CA at the
in-cluster paths, against the local kube-apiserver (with the upstream AI Gateway controller
accepting the route and generating its HTTPRoute) and a real Prometheus, until a short
rollout is promoted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.controller.state import RolloutPhase, RolloutState
from rollout.demo import DEFAULT_POLICY
from rollout.gateway import (
    AIGatewayRoute,
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    FQDNEndpoint,
    KubeAIGatewayClient,
    WeightedBackend,
)
from rollout.localcluster import LocalAIGateway, LocalControlPlane
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.simulator.metrics import GenAIMetricsExporter
from rollout.simulator.traffic import TrafficSimulator, VariantProfile
from tests.integration.deploy_tools import (
    CHART,
    REPO,
    helm_binary,
    kubectl_binary,
    ok,
    run,
    script_output,
)

pytestmark = pytest.mark.integration

IMAGE = "localhost/envoy-ai-rollout:test"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def podman() -> list[str]:
    """podman as it works on this project's machines: runc (crun fails on hybrid cgroups)."""
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed: run `make image-tools` "
            "(Debian: apt-get install podman runc debootstrap)",
            pytrace=False,
        )
    runtime = ["--runtime", "/usr/sbin/runc"] if os.access("/usr/sbin/runc", os.X_OK) else []
    return ["podman", *runtime]


# Podman on these hosts refuses the default ulimits; explicit ones are accepted.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman_run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([*podman(), "run", "--rm", *ULIMITS, *args], timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built by the script `make image` runs, on a base made from Debian packages."""
    podman()
    base = script_output("image-base.sh")
    started = time.monotonic()
    built = script_output("image-build.sh", env={"BASE": base, "IMAGE": IMAGE})
    print(f"[image] {built} built in {time.monotonic() - started:.0f}s")
    return built


def readable(path: Path) -> Path:
    """The container's user (65532) reads what the test mounts."""
    path.chmod(0o755 if path.is_dir() else 0o644)
    return path


def mkdir_readable(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return readable(path)


# ---- the image itself -------------------------------------------------------------------


def test_the_image_runs_rollout_as_a_numeric_non_root_user_with_oci_labels(image: str) -> None:
    [info] = json.loads(ok(run([*podman(), "image", "inspect", image])))
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["rollout"]
    labels = config["Labels"]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert {"source", "licenses", "revision", "title"} <= {
        key.removeprefix("org.opencontainers.image.") for key in labels
    }
    uid = ok(podman_run("--entrypoint", "python3", image, "-c", "import os; print(os.getuid())"))
    assert uid.strip() == "65532"


def test_rollout_help_runs_with_a_read_only_root_and_no_network(image: str) -> None:
    out = ok(podman_run("--read-only", "--network", "none", image, "--help"))
    assert "Usage: rollout" in out and "run" in out and "validate" in out


def test_rollout_validate_accepts_the_example_policies(image: str, tmp_path: Path) -> None:
    policies = mkdir_readable(tmp_path / "policies")
    for source in sorted((REPO / "policies").glob("*.yaml")):
        (policies / source.name).write_text(source.read_text())
        readable(policies / source.name)
    result = podman_run(
        "--read-only",
        "--network",
        "none",
        "-v",
        f"{policies}:/policies:ro",
        image,
        "validate",
        "/policies",
    )
    out = ok(result)
    names = sorted(p.stem for p in (REPO / "policies").glob("*.yaml"))
    assert len([line for line in out.splitlines() if line.startswith("✓")]) == len(names), out


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0, lines
    assert "Traceback" not in result.stdout + result.stderr, lines
    assert len(lines) == 1, f"expected one clear line, got {len(lines)}: {lines}"
    return lines[0]


def test_a_missing_policy_folder_exits_non_zero_with_one_line(
    image: str, control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    kubeconfig = readable(control_plane.write_kubeconfig(tmp_path / "kubeconfig"))
    result = podman_run(
        "--read-only",
        "--network",
        "host",
        "-v",
        f"{kubeconfig}:/etc/rollout/kubeconfig:ro",
        image,
        "run",
        "--policies",
        "/etc/rollout/policies",
        "--kubeconfig",
        "/etc/rollout/kubeconfig",
    )
    line = one_line_error(result)
    assert "policy path(s) not found: /etc/rollout/policies" in line


def test_an_unreachable_api_server_exits_non_zero_with_one_line(
    image: str, control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    config = control_plane.kubeconfig()
    closed = free_port()  # nothing listens there
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    readable(kubeconfig)
    policies = mkdir_readable(tmp_path / "policies")
    result = podman_run(
        "--read-only",
        "--network",
        "host",
        "-v",
        f"{kubeconfig}:/etc/rollout/kubeconfig:ro",
        "-v",
        f"{policies}:/etc/rollout/policies:ro",
        image,
        "run",
        "--policies",
        "/etc/rollout/policies",
        "--kubeconfig",
        "/etc/rollout/kubeconfig",
        "--metrics-port",
        str(free_port()),
    )
    line = one_line_error(result)
    assert "Kubernetes API does not answer" in line


# ---- the chart's Deployment, run by podman as a kubelet would -------------------------------


def fast_demo_policy(namespace: str) -> str:
    """The demo policy, on a route in `namespace`, with 3s checks over a 9s window."""
    text = DEFAULT_POLICY.read_text()
    for old, new in (
        ("namespace: default", f"namespace: {namespace}"),
        ("interval: 10s", "interval: 3s"),
        ("window: 30s", "window: 9s"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


def create_route(gateway: KubeAIGatewayClient, namespace: str) -> None:
    """Backend -> AIServiceBackend -> AIGatewayRoute for demo-llm v1 (stable) and v2 (canary)."""
    for version in ("v1", "v2"):
        name = f"demo-llm-{version}"
        gateway.apply_backend(
            Backend(
                name=name,
                namespace=namespace,
                endpoints=[FQDNEndpoint(hostname=f"{name}.{namespace}.svc.cluster.local", port=80)],
            )
        )
        gateway.apply_service_backend(
            AIServiceBackend(
                name=name,
                namespace=namespace,
                api_schema=APISchema(name="OpenAI", version="v1"),
                backend_ref=BackendRef(name=name),
            )
        )
    gateway.apply_route(
        AIGatewayRoute(
            name="demo-llm",
            namespace=namespace,
            model_name="demo-llm",
            backends=[
                WeightedBackend(
                    name="demo-llm-v1",
                    weight=100,
                    variant_tag="stable",
                    model_name_override="demo-llm-v1",
                ),
                WeightedBackend(
                    name="demo-llm-v2",
                    weight=0,
                    variant_tag="canary",
                    model_name_override="demo-llm-v2",
                ),
            ],
        )
    )


def pod_run_args(
    deployment: dict[str, Any], config_map: dict[str, Any], files: Path, namespace: str
) -> list[str]:
    """`podman run` options and arguments for the Deployment's pod, as a kubelet reads it."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    security, pod_security = container["securityContext"], pod["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert not security["allowPrivilegeEscalation"]
    args = [
        "--read-only",
        "--read-only-tmpfs=false",  # nothing writable but the volumes below
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
        "--network",
        "host",
    ]
    for env in container["env"]:
        if "valueFrom" in env:
            assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", env
            args += ["-e", f"{env['name']}={namespace}"]
        else:
            args += ["-e", f"{env['name']}={env['value']}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            folder = mkdir_readable(files / "configmap")
            for name, text in config_map["data"].items():
                (folder / name).write_text(text)
                readable(folder / name)
            args += ["-v", f"{folder}:{mount['mountPath']}:ro"]
        elif "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:rw,size=64m,mode=1777"]
        else:
            raise AssertionError(f"a volume the test does not emulate: {volume}")
    return args


def wait_until(what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(
        f"timed out after {timeout:.0f}s waiting for {what}; "
        f"the container's log:\n{logs()[-6000:]}",
        pytrace=False,
    )


@pytest.fixture
def telemetry() -> Iterator[tuple[GenAIMetricsExporter, LocalPrometheus]]:
    exporter = GenAIMetricsExporter()
    exporter.start()
    try:
        with LocalPrometheus(targets=[exporter.target], scrape_interval="1s") as prometheus:
            yield exporter, prometheus
    finally:
        exporter.stop()


def test_the_charts_deployment_runs_in_the_image_until_a_rollout_is_promoted(
    image: str,
    control_plane: LocalControlPlane,
    ai_gateway: LocalAIGateway,
    api_client: k8s.ApiClient,
    namespace: str,
    telemetry: tuple[GenAIMetricsExporter, LocalPrometheus],
    tmp_path: Path,
) -> None:
    exporter, prometheus = telemetry
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "admin-kubeconfig")
    kubectl = kubectl_binary(control_plane)
    release = f"envoy-ai-rollout-{uuid.uuid4().hex[:6]}"
    policy = tmp_path / "demo.yaml"
    policy.write_text(fast_demo_policy(namespace))
    metrics_port = free_port()
    repository, tag = image.rsplit(":", 1)

    # A real `helm install` of the chart: the Deployment, ConfigMap and RBAC in the API server.
    helm_env = {
        "KUBECONFIG": str(kubeconfig),
        **{
            f"HELM_{d.upper()}_HOME": str(tmp_path / f"helm-{d}")
            for d in ("config", "cache", "data")
        },
    }
    ok(
        run(
            [
                helm_binary(),
                "install",
                release,
                CHART,
                "-n",
                namespace,
                "--set",
                f"image.repository={repository}",
                "--set",
                f"image.tag={tag}",
                "--set",
                f"prometheus.url={prometheus.url}",
                "--set",
                f"metrics.port={metrics_port}",
                "--set-file",
                f"policies.files.demo\\.yaml={policy}",
            ],
            env=helm_env,
        )
    )

    def get(kind: str, name: str) -> dict[str, Any]:
        out = ok(
            run(
                [
                    kubectl,
                    "--kubeconfig",
                    kubeconfig,
                    "get",
                    kind,
                    name,
                    "-n",
                    namespace,
                    "-o",
                    "json",
                ]
            )
        )
        return dict(json.loads(out))

    deployment = get("deployment", release)
    config_map = get("configmap", f"{release}-policies")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]

    # What a kubelet mounts for the pod's ServiceAccount: a token (TokenRequest), the CA and
    # the namespace; the pod finds the API server through KUBERNETES_SERVICE_HOST/PORT.
    token = ok(
        run(
            [
                kubectl,
                "--kubeconfig",
                kubeconfig,
                "create",
                "token",
                account,
                "-n",
                namespace,
                "--duration",
                "1h",
            ]
        )
    )
    sa_files = mkdir_readable(tmp_path / "serviceaccount")
    for file, content in (
        ("token", token.strip()),
        ("ca.crt", control_plane.ca_pem.decode()),
        ("namespace", namespace),
    ):
        (sa_files / file).write_text(content)
        readable(sa_files / file)

    name = f"rollout-{uuid.uuid4().hex[:8]}"
    args = pod_run_args(deployment, config_map, tmp_path, namespace)
    args += [
        "-v",
        f"{sa_files}:{SA_DIR}:ro",
        "-e",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "-e",
        f"KUBERNETES_SERVICE_PORT={control_plane.port}",
    ]
    gateway = KubeAIGatewayClient(
        api_client, AIGatewayConfig(enabled=True, default_namespace=namespace)
    )
    create_route(gateway, namespace)
    healthy = VariantProfile(error_rate=0.002)
    simulator = TrafficSimulator(
        gateway, exporter, namespace, "demo-llm", {"demo-llm-v1": healthy, "demo-llm-v2": healthy}
    )

    def logs() -> str:
        result = run([*podman(), "logs", name])
        return result.stdout + result.stderr

    def state() -> RolloutState | None:
        snapshot = gateway.get_route_snapshot(namespace, "demo-llm")
        return RolloutState.from_route_annotations(snapshot.annotations)

    def running() -> bool:
        out = run([*podman(), "inspect", name, "--format", "{{.State.Running}}"]).stdout.strip()
        return out == "true"

    simulator.start()
    try:
        prometheus.wait_for_scrapes()
        podman_args = [*podman(), "run", "-d", "--name", name, *ULIMITS, *args]
        ok(run([*podman_args, container["image"], *container["args"]]))
        began = time.monotonic()

        def healthz() -> bool:
            if not running():
                pytest.fail(f"the container exited; its log:\n{logs()[-6000:]}", pytrace=False)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/healthz", timeout=2
                ) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until("/healthz (the chart's readiness probe)", healthz, 60, logs)

        def finished() -> RolloutState | None:
            if not running():
                pytest.fail(f"the container exited; its log:\n{logs()[-6000:]}", pytrace=False)
            current = state()
            return (
                current
                if current and (current.phase.is_terminal or current.phase is RolloutPhase.PAUSED)
                else None
            )

        final = wait_until("the rollout to end", finished, 150, logs)
        elapsed = time.monotonic() - began
        assert final.phase is RolloutPhase.SUCCEEDED, f"{final}\n{logs()}"
        assert final.canary_weight == 100 and final.counters.failed_total == 0
        snapshot = gateway.get_route_snapshot(namespace, "demo-llm")
        assert snapshot.rule_for(["demo-llm-v1", "demo-llm-v2"]).weights == {
            "demo-llm-v1": 0,
            "demo-llm-v2": 100,
        }
        # ... and reached the HTTPRoute the upstream AI Gateway controller generates, which the
        # controller (as its ServiceAccount) read back to verify each step.
        generated = gateway.get_generated_route(namespace, "demo-llm")
        assert generated.weights_of_rule(0) == [0, 100], generated
        print(f"[image] rollout promoted {elapsed:.0f}s after the container started")

        # Its leader-election Lease, written with the Role in its own namespace.
        lease = kubeapi.request(
            api_client,
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/envoy-ai-rollout",
        )
        assert lease["spec"].get("holderIdentity"), lease
        # Its Events on the route, and /metrics served from the image.
        events = kubeapi.request(
            api_client,
            "GET",
            f"/api/v1/namespaces/{namespace}/events",
            query={"fieldSelector": "involvedObject.name=demo-llm"},
        )
        assert events["items"], "no Events on the route"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "rollout_phase" in metrics and "rollout_leader" in metrics
        # --log-format json (the chart's default): every line is a JSON event, and none is
        # an error (a 403 from too little RBAC would be one).
        logged = [json.loads(line) for line in logs().splitlines() if line.strip()]
        errors = [e for e in logged if e.get("level") in {"error", "critical"}]
        assert errors == [], errors
        assert "forbidden" not in json.dumps(logged).lower()

        # SIGTERM, as a kubelet stops a pod: the controller ends cleanly.
        ok(run([*podman(), "stop", "--time", "20", name], timeout=60))
        code = run([*podman(), "inspect", name, "--format", "{{.State.ExitCode}}"]).stdout.strip()
        assert code == "0", f"exit code {code} after SIGTERM; log:\n{logs()}"
    finally:
        simulator.stop()
        run([*podman(), "rm", "-f", name], timeout=60)
