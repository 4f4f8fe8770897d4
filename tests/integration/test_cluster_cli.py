"""`rollout cluster start` as a user runs it: kubeconfig only once ready, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from rollout.config import AIGatewayConfig
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, WeightedBackend
from rollout.localcluster import LocalAIGateway, LocalControlPlane
from tests.integration.chain import create_chain


def test_cluster_start_writes_a_working_kubeconfig_and_stops_on_sigterm(
    tmp_path: Path, control_plane: LocalControlPlane
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rollout", "cluster", "start", "--kubeconfig", str(kubeconfig)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not kubeconfig.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no kubeconfig after 120s"
            time.sleep(0.2)
        config = k8s.Configuration()
        k8s_config.load_kube_config_from_dict(
            yaml.safe_load(kubeconfig.read_text()), client_configuration=config
        )
        with k8s.ApiClient(config) as api:
            names = {
                crd.metadata.name
                for crd in k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items
            }
        assert "aigatewayroutes.aigateway.envoyproxy.io" in names
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not kubeconfig.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_start_with_a_missing_crd_folder_fails_with_instructions(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout",
            "cluster",
            "start",
            "--kubeconfig",
            str(tmp_path / "k"),
            "--crds",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "ROLLOUT_CRDS_DIRS" in result.stderr
    assert not (tmp_path / "k").exists()


def _children_of(pid: int) -> list[int]:
    """Every live descendant process of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def test_cluster_start_ai_gateway_refuses_when_its_fixed_ports_are_taken(
    tmp_path: Path, ai_gateway: LocalAIGateway
) -> None:
    # The session's AI Gateway controller holds 8080, 18002 and 9443: nothing may start.
    kubeconfig = tmp_path / "kubeconfig"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rollout",
            "cluster",
            "start",
            "--ai-gateway",
            "--kubeconfig",
            str(kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "port 8080" in result.stderr and "already in use by pid" in result.stderr
    assert "aigw-controller" in result.stderr
    assert "Traceback" not in result.stderr
    assert not kubeconfig.exists()


def test_cluster_start_ai_gateway_runs_the_real_controller_and_leaves_no_process(
    tmp_path: Path, ai_gateway: LocalAIGateway
) -> None:
    ai_gateway.stop()  # its ports (fixed) and its machine lock are needed by the one under test
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollout",
            "cluster",
            "start",
            "--ai-gateway",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not kubeconfig.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no kubeconfig after 120s"
            time.sleep(0.2)
        children = _children_of(proc.pid)
        assert len(children) >= 3  # etcd, kube-apiserver, the AI Gateway controller
        config = k8s.Configuration()
        k8s_config.load_kube_config_from_dict(
            yaml.safe_load(kubeconfig.read_text()), client_configuration=config
        )
        with k8s.ApiClient(config) as api:
            gateway = KubeAIGatewayClient(
                api, AIGatewayConfig(enabled=True, default_namespace="default")
            )
            listener = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", "envoy-gateway-system", "gateways", "ai-gateway"
            )["spec"]["listeners"][0]
            assert listener["allowedRoutes"] == {"namespaces": {"from": "All"}}
            create_chain(gateway, ["v1"])
            gateway.create_route(
                AIGatewayRoute(
                    name="r", model_name="m", backends=[WeightedBackend(name="v1", weight=100)]
                )
            )
            deadline = time.monotonic() + 30
            while not gateway.get_route_status(None, "r").ready:
                assert time.monotonic() < deadline, gateway.get_route_status(None, "r")
                time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not kubeconfig.exists()
        time.sleep(0.5)
        alive = [pid for pid in children if _running(pid)]
        assert alive == [], f"left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ai_gateway.start()
