"""Shared fixtures. Integration fixtures start real components; they never skip.

A missing prerequisite (no Go toolchain to build kube-apiserver or the AI Gateway controller,
no CRD folder, no Prometheus binary) fails the test with instructions instead.

The local control plane always runs with the upstream Envoy AI Gateway controller beside it
(one session-wide instance: its ports are fixed), so every route a test creates is reconciled
by the real owner of everything downstream, as in a cluster.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from rollout.localcluster import LocalAIGateway, LocalControlPlane, default_crd_dirs
from rollout.localcluster.binaries import cache_root


def _progress(msg: str) -> None:
    print(f"[control plane] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(crd_dirs=default_crd_dirs(), progress=_progress)
    with plane:
        yield plane


def _machine_lock(path: Path, wait_seconds: float) -> int:
    """An exclusive lock held while this session runs the AI Gateway controller: a second test
    session on the machine waits for it instead of failing on the controller's fixed ports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"another test session holds {path} (it runs the AI Gateway controller, "
                    f"whose ports are fixed) for more than {wait_seconds:.0f}s"
                ) from None
            time.sleep(1)


@pytest.fixture(scope="session")
def ai_gateway(control_plane: LocalControlPlane) -> Iterator[LocalAIGateway]:
    """The upstream Envoy AI Gateway controller v1.1.0, reconciling the control plane."""
    fd = _machine_lock(cache_root() / "aigw-test-session.lock", wait_seconds=1800)
    try:
        with LocalAIGateway(control_plane, progress=_progress) as gateway:
            yield gateway
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def api_client(
    control_plane: LocalControlPlane, ai_gateway: LocalAIGateway
) -> Iterator[k8s.ApiClient]:
    with control_plane.api_client() as client:
        yield client


@pytest.fixture
def namespace(api_client: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace per test (no namespace controller runs, so deletion just marks it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
