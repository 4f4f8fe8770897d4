"""A real local Kubernetes control plane: etcd + kube-apiserver on loopback ports.

Started with the flags controller-runtime's envtest uses, with RBAC authorization on, so that
the API server's OpenAPI/CEL validation and authorization are the real ones. Used by the
tests, the demo and `rollout cluster start`.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from rollout.localcluster import certs
from rollout.localcluster.binaries import ControlPlaneBinaries, resolve_binaries
from rollout.localcluster.crds import install_crds, load_crd_documents
from rollout.localcluster.errors import StartupError
from rollout.localcluster.process import ManagedProcess, ensure_port_free, free_port

HOST = "127.0.0.1"
ADMIN_USER = "admin"
ADMIN_GROUP = "system:masters"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LocalControlPlane:
    """`with LocalControlPlane(crd_dirs=[...]) as cp: cp.api_client() ...`"""

    def __init__(
        self,
        crd_dirs: Sequence[Path] = (),
        *,
        binaries: ControlPlaneBinaries | None = None,
        port: int | None = None,
        progress: Callable[[str], None] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.crd_dirs = list(crd_dirs)
        self._binaries = binaries
        self._requested_port = port
        self._progress = progress or (lambda _msg: None)
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self.binaries: ControlPlaneBinaries | None = binaries
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self.port: int = 0
        self.ca_pem = b""
        self._admin: certs.KeyPair | None = None
        self._ca: certs.CertificateAuthority | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> LocalControlPlane:
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
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("the control plane is not started")
        return self._workdir

    def start(self) -> None:
        # Every prerequisite is checked before anything starts.
        if self._requested_port is not None:
            ensure_port_free(self._requested_port, "kube-apiserver")
        crds = load_crd_documents(self.crd_dirs, notice=self._progress)
        binaries = self._binaries or resolve_binaries(progress=self._progress)
        self.binaries = binaries
        self._workdir = Path(tempfile.mkdtemp(prefix="rollout-controlplane-"))
        try:
            self._write_certificates()
            self._start_etcd(binaries)
            self._start_apiserver(binaries)
            self._progress(f"kube-apiserver ready at {self.url}; installing {len(crds)} CRDs")
            with self.api_client() as api:
                install_crds(api, crds, timeout=self._startup_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        self._apiserver = self._etcd = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same etcd, port and certificates (a
        watch that breaks, in tests); returns once it answers again."""
        if self._apiserver is None or self.binaries is None:
            raise RuntimeError("the control plane is not running")
        self._apiserver.stop()
        self._start_apiserver(self.binaries, port=self.port)

    def pids(self) -> list[int]:
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.pid]

    # -- start-up steps ---------------------------------------------------------------------
    def _write_certificates(self) -> None:
        d = self.workdir
        self._ca = ca = certs.CertificateAuthority.create("rollout-local-ca")
        self.ca_pem = ca.cert_pem
        (d / "ca.crt").write_bytes(ca.cert_pem)
        # kube-apiserver picks up apiserver.crt/.key from --cert-dir.
        certs.write_pair(ca.issue_serving(HOST), d / "apiserver.crt", d / "apiserver.key")
        self._admin = ca.issue_client(ADMIN_USER, [ADMIN_GROUP])
        sa = certs.service_account_signing_key()
        certs.write_pair(sa, d / "sa.pub", d / "sa.key")

    def _start_etcd(self, binaries: ControlPlaneBinaries) -> None:
        client_port, peer_port = free_port(), free_port()
        self._etcd_url = f"http://{HOST}:{client_port}"
        peer_url = f"http://{HOST}:{peer_port}"
        self._etcd = ManagedProcess(
            "etcd",
            [
                str(binaries.etcd),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",  # test data: durability buys nothing, fsync costs
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self._etcd.start()
        self._wait(self._etcd, self._etcd_healthy, "etcd")

    def _etcd_healthy(self) -> bool:
        conn = http.client.HTTPConnection(HOST, int(self._etcd_url.rsplit(":", 1)[1]), timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _start_apiserver(self, binaries: ControlPlaneBinaries, port: int | None = None) -> None:
        d = self.workdir
        self.port = port or self._requested_port or free_port()
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self._etcd_url}",
                f"--bind-address={HOST}",
                f"--advertise-address={HOST}",
                f"--secure-port={self.port}",
                f"--cert-dir={d}",
                f"--client-ca-file={d / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--service-account-issuer=https://{HOST}:{self.port}/",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                # No controller-manager runs, so no token controller: envtest does the same.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--v=0",
            ],
            d / "kube-apiserver.log",
        )
        self._apiserver.start()
        self._wait(self._apiserver, self._apiserver_ready, "kube-apiserver")

    def _ssl_context(self) -> ssl.SSLContext:
        assert self._admin is not None
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        cert, key = self.workdir / "admin.crt", self.workdir / "admin.key"
        if not cert.exists():
            certs.write_pair(self._admin, cert, key)
        ctx.load_cert_chain(cert, key)
        return ctx

    def _apiserver_ready(self) -> bool:
        conn = http.client.HTTPSConnection(HOST, self.port, timeout=2, context=self._ssl_context())
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _wait(self, proc: ManagedProcess, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while not ready():
            if not proc.running():
                raise StartupError(f"{what} exited during start-up. Its log:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise StartupError(
                    f"{what} was not ready in {self._startup_timeout:.0f}s:\n{proc.log_tail()}"
                )
            time.sleep(0.05)

    # -- clients ----------------------------------------------------------------------------
    def kubeconfig(
        self, user: str = ADMIN_USER, groups: Sequence[str] = (ADMIN_GROUP,)
    ) -> dict[str, Any]:
        """A kubeconfig dict with an embedded client certificate for `user` in `groups`."""
        assert self._ca is not None and self._admin is not None
        pair = (
            self._admin
            if (user, tuple(groups)) == (ADMIN_USER, (ADMIN_GROUP,))
            else self._ca.issue_client(user, list(groups))
        )
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(pair.cert_pem),
                        "client-key-data": _b64(pair.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }

    def write_kubeconfig(self, path: Path, **kwargs: Any) -> Path:
        """Write atomically: a reader never sees a half-written file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(**kwargs)))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def api_client(
        self, user: str = ADMIN_USER, groups: Sequence[str] = (ADMIN_GROUP,)
    ) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        k8s_config.load_kube_config_from_dict(
            self.kubeconfig(user, groups), client_configuration=configuration
        )
        return k8s.ApiClient(configuration)
