"""Launchers for local components: our own etcd + kube-apiserver, the upstream Envoy AI
Gateway controller, and Prometheus.

Contract: every process started here is stopped by the launcher's `stop()` (or dies with
us via PR_SET_PDEATHSIG), and every temporary folder is removed.
"""

from rollout.localcluster.aigateway import LocalAIGateway
from rollout.localcluster.binaries import (
    ControlPlaneBinaries,
    resolve_aigw_controller,
    resolve_binaries,
)
from rollout.localcluster.controlplane import LocalControlPlane
from rollout.localcluster.crds import CRDS_ENV, default_crd_dirs
from rollout.localcluster.errors import PrerequisiteError, StartupError

__all__ = [
    "CRDS_ENV",
    "ControlPlaneBinaries",
    "LocalAIGateway",
    "LocalControlPlane",
    "PrerequisiteError",
    "StartupError",
    "default_crd_dirs",
    "resolve_aigw_controller",
    "resolve_binaries",
]
