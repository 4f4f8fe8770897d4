"""Shared fixtures. Integration fixtures start real components; they never skip.

A missing prerequisite (no Go toolchain to build kube-apiserver or the AI Gateway controller,
no CRD folder, no Prometheus binary) fails the test with instructions instead.

The local control plane always runs with the upstream Envoy AI Gateway controller beside it
(one session-wide instance: its ports are fixed), so every route a test creates is reconciled
by the real owner of everything downstream, as in a cluster.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from rollout.localcluster import LocalAIGateway, LocalControlPlane, default_crd_dirs


def _progress(msg: str) -> None:
    print(f"[control plane] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(crd_dirs=default_crd_dirs(), progress=_progress)
    with plane:
        yield plane


@pytest.fixture(scope="session")
def ai_gateway(control_plane: LocalControlPlane) -> Iterator[LocalAIGateway]:
    """The upstream Envoy AI Gateway controller v1.1.0, reconciling the control plane. Its
    ports are fixed, so a second test session on the machine waits for the first."""
    with LocalAIGateway(control_plane, progress=_progress, lock_wait_seconds=1800) as gateway:
        yield gateway


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
