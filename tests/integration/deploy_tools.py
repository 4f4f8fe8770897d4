"""What the install and image tests share: the real helm and kubectl binaries, and running them.

Nothing here skips: a missing prerequisite fails the test with what to run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
import yaml

from rollout.localcluster import LocalControlPlane

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "envoy-ai-rollout"
KUSTOMIZE_BASE = REPO / "deploy" / "controller"
SCRIPTS = REPO / "scripts"


def run(
    argv: Sequence[str | Path],
    *,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; the caller judges the exit code."""
    return subprocess.run(
        [str(a) for a in argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout, or a failure that shows the command and what it printed."""
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(result.args)}` exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout


def script_output(script: str, env: Mapping[str, str] | None = None, timeout: float = 1800) -> str:
    """Run one of scripts/*.sh, which prints its result on its last stdout line."""
    result = run(["bash", SCRIPTS / script], env=env, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"scripts/{script} failed (exit {result.returncode}); it is what `make deps` runs, "
            f"and it says what is missing:\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout.strip().splitlines()[-1]


def helm_binary() -> Path:
    """helm, built from its Go module once (scripts/helm-binary.sh, `make helm-binary`)."""
    return Path(script_output("helm-binary.sh"))


def kubectl_binary(plane: LocalControlPlane) -> Path:
    kubectl = plane.binaries.kubectl if plane.binaries else None
    if kubectl is None:
        pytest.fail(
            "no kubectl beside kube-apiserver: run `make kube-binaries` "
            "(or set TEST_ASSET_KUBECTL)",
            pytrace=False,
        )
    return kubectl


def documents(text: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def service_account_user(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user name and groups the API server gives a ServiceAccount's token."""
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
    )
