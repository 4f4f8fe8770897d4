"""Shared fixtures. Integration fixtures start real components; they never skip.

A missing prerequisite (no Go toolchain to build kube-apiserver, no CRD folder, no
Prometheus binary) fails the test with instructions instead.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s

from rollout.localcluster import LocalControlPlane, default_crd_dirs


@pytest.fixture(scope="session")
def control_plane() -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(
        crd_dirs=default_crd_dirs(),
        progress=lambda msg: print(f"[control plane] {msg}", file=sys.stderr, flush=True),
    )
    with plane:
        yield plane


@pytest.fixture(scope="session")
def api_client(control_plane: LocalControlPlane) -> Iterator[k8s.ApiClient]:
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
