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

from rollout.localcluster import LocalControlPlane


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
