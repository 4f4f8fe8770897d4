"""The upstream Envoy AI Gateway controller (v1.1.0), run out of cluster against a local
control plane: the real owner of everything downstream of our AIGatewayRoutes.

What it needs (shared/ai-gateway/SOURCES.md): its namespace, an inert
MutatingWebhookConfiguration it patches, serving certificates, and a Gateway our routes attach
to. It listens on fixed ports with no flag to move two of them, so one instance runs per
machine: `start()` checks them first and names what holds one. It exits 0 even after a failed
start, so readiness is its own log line "Starting workers" for the AIGatewayRoute controller.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from kubernetes import client as k8s

from rollout.kubeapi import ApiException, request
from rollout.localcluster import certs
from rollout.localcluster.binaries import cache_root, resolve_aigw_controller
from rollout.localcluster.controlplane import HOST, LocalControlPlane
from rollout.localcluster.errors import PrerequisiteError, StartupError
from rollout.localcluster.process import ManagedProcess, ensure_port_free, free_port

CONTROLLER_NAMESPACE: Final = "envoy-ai-gateway-system"
GATEWAY_CLASS: Final = "envoy-ai-gateway"
# The Envoy Gateway controller name: the GatewayClass is Envoy Gateway's, as in a real install.
GATEWAY_CONTROLLER_NAME: Final = "gateway.envoyproxy.io/gatewayclass-controller"
WEBHOOK_CONFIG_PREFIX: Final = "envoy-ai-gateway-gateway-pod-mutator"
FIXED_PORTS: Final[Mapping[int, str]] = {
    8080: "the AI Gateway controller's metrics (fixed, no flag moves it)",
    18002: "the AI Gateway controller's rate-limit xDS server (fixed, no flag moves it)",
    9443: "the AI Gateway controller's webhook server",
}
_READY_LINE = re.compile(r"Starting workers.*aigatewayroute", re.IGNORECASE)


class LocalAIGateway:
    """`with LocalAIGateway(control_plane) as gw: ...` — the controller reconciles our routes."""

    def __init__(
        self,
        control_plane: LocalControlPlane,
        *,
        gateway_name: str = "ai-gateway",
        gateway_namespace: str = "envoy-gateway-system",
        binary: Path | None = None,
        env: Mapping[str, str] = os.environ,
        progress: Callable[[str], None] | None = None,
        startup_timeout: float = 120.0,
        lock_wait_seconds: float = 0.0,
    ) -> None:
        self.control_plane = control_plane
        self.gateway_name = gateway_name
        self.gateway_namespace = gateway_namespace
        self._binary = binary
        self._env = env
        self._progress = progress or (lambda _msg: None)
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._proc: ManagedProcess | None = None
        self._lock_wait = lock_wait_seconds
        self._lock_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LocalAIGateway:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the AI Gateway controller is not started")
        return self._workdir / "aigw-controller.log"

    def start(self) -> None:
        # Every prerequisite is checked before anything is created or started.
        self._lock()
        try:
            self.check_ports()
        except BaseException:
            self._unlock()
            raise
        binary = self._binary or resolve_aigw_controller(self._env, progress=self._progress)
        self._binary = binary
        self._workdir = Path(tempfile.mkdtemp(prefix="rollout-aigw-"))
        try:
            self._write_certificates()
            self.control_plane.write_kubeconfig(self._workdir / "kubeconfig")
            with self.control_plane.api_client() as api:
                self._create_prerequisites(api)
            self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._unlock()

    def _lock(self) -> None:
        """One instance per machine (its ports are fixed): an exclusive lock on a file in the
        cache, waited for up to `lock_wait_seconds` (test sessions queue; a demo says who)."""
        path = machine_lock_path(self._env)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise PrerequisiteError(
                        "another Envoy AI Gateway controller started by this project runs on "
                        f"this machine ({holder or 'unknown holder'}; lock {path}); its ports "
                        "are fixed, so only one can run: stop that one first"
                    ) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def suspend(self) -> None:
        """Stop the controller, keep its set-up: an outage of the gateway's control plane."""
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def resume(self) -> None:
        if self._proc is None:
            self.check_ports()
            self._launch()

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        return self._proc.log_tail(lines) if self._proc is not None else ""

    # -- start-up steps ---------------------------------------------------------------------
    @staticmethod
    def check_ports() -> None:
        """PrerequisiteError naming the port and what holds it, if one of its fixed ports is
        taken (call it before starting anything else, so nothing starts in vain)."""
        for port, what in FIXED_PORTS.items():
            # It binds every address (":8080"), so every address must be free.
            ensure_port_free(port, what, host="0.0.0.0")

    def _write_certificates(self) -> None:
        assert self._workdir is not None
        ca = certs.CertificateAuthority.create("rollout-aigw-webhook-ca")
        tls = self._workdir / "tls"
        tls.mkdir()
        (tls / "ca.crt").write_bytes(ca.cert_pem)
        certs.write_pair(ca.issue_serving(HOST), tls / "tls.crt", tls / "tls.key")

    def _create_prerequisites(self, api: k8s.ApiClient) -> None:
        for namespace in {CONTROLLER_NAMESPACE, self.gateway_namespace}:
            _ensure(
                api,
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        _ensure(
            api,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            inert_webhook_configuration(CONTROLLER_NAMESPACE),
        )
        _ensure(
            api,
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": GATEWAY_CLASS},
                "spec": {"controllerName": GATEWAY_CONTROLLER_NAME},
            },
        )
        _ensure(
            api,
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{self.gateway_namespace}/gateways",
            gateway_manifest(self.gateway_name, self.gateway_namespace),
        )

    def _launch(self) -> None:
        assert self._workdir is not None and self._binary is not None
        argv = [
            str(self._binary),
            f"-tlsCertDir={self._workdir / 'tls'}",
            "-enableLeaderElection=false",
            f"-port={HOST}:{free_port()}",  # its extension server, which Envoy Gateway calls
            f"-envoyGatewayNamespace={self.gateway_namespace}",
        ]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self._workdir),
            "KUBECONFIG": str(self._workdir / "kubeconfig"),
            "POD_NAMESPACE": CONTROLLER_NAMESPACE,
            "DISABLE_PPROF": "1",
        }
        self._proc = ManagedProcess("aigw-controller", argv, self.log_path, env=env)
        self._proc.start()
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                text = self.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if _READY_LINE.search(text):
                self._progress(f"AI Gateway controller running (pid {self._proc.pid})")
                return
            if not self._proc.running():
                # It exits 0 after a failed start: the log says why.
                raise StartupError(
                    f"the AI Gateway controller exited during start-up. Its log:\n"
                    f"{self._proc.log_tail()}"
                )
            if time.monotonic() > deadline:
                tail = self._proc.log_tail()
                raise StartupError(
                    f"the AI Gateway controller did not start its AIGatewayRoute workers in "
                    f"{self._startup_timeout:.0f}s. Its log:\n{tail}"
                )
            time.sleep(0.05)


def machine_lock_path(env: Mapping[str, str] = os.environ) -> Path:
    return cache_root(env) / "aigw-controller.lock"


def inert_webhook_configuration(controller_namespace: str) -> dict[str, Any]:
    """The MutatingWebhookConfiguration the controller insists on (it patches its caBundle):
    one webhook that matches no object and whose failures are ignored, so it never acts."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"{WEBHOOK_CONFIG_PREFIX}.{controller_namespace}"},
        "webhooks": [
            {
                "name": "gateway-pod-mutator.aigateway.envoyproxy.io",
                "clientConfig": {"url": f"https://{HOST}:9443/mutate"},
                "objectSelector": {
                    "matchLabels": {"rollout.model-registry.io/never-matches": "true"}
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def gateway_manifest(name: str, namespace: str) -> dict[str, Any]:
    """The Gateway our routes attach to: one HTTP listener that admits routes from every
    namespace (Envoy Gateway refuses routes of other namespaces otherwise)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [
                {
                    "name": "http",
                    "protocol": "HTTP",
                    "port": 80,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def _ensure(api: k8s.ApiClient, collection: str, obj: dict[str, Any]) -> None:
    """Create `obj` unless an object of its name exists (set-up is idempotent)."""
    try:
        request(api, "POST", collection, body=obj)
    except ApiException as exc:
        if exc.status != 409:
            name = obj["metadata"]["name"]
            raise StartupError(f"creating {obj['kind']} {name} failed: {exc.body}") from exc
