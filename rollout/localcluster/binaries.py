"""Find (or build) the kube-apiserver and etcd binaries of the local control plane.

Order: TEST_ASSET_KUBE_APISERVER / TEST_ASSET_ETCD, then KUBEBUILDER_ASSETS (envtest's
conventions, so users with envtest binaries build nothing), then our cache, filled on demand
by scripts/kube-binaries.sh from the Go module proxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rollout.localcluster.errors import PrerequisiteError

KUBE_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
_BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "kube-binaries.sh"


@dataclass(frozen=True)
class ControlPlaneBinaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path | None = None  # for people and end-to-end tests; the product never runs it


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("ROLLOUT_CACHE_DIR"):
        return Path(env["ROLLOUT_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "envoy-ai-rollout"


def cached_binaries_dir(env: Mapping[str, str] = os.environ) -> Path:
    return cache_root(env) / "kube" / f"{KUBE_VERSION}-etcd-{ETCD_VERSION}"


def _executable(path: Path, origin: str) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise PrerequisiteError(f"{origin} points at {path}, which is not an executable file")
    return path


def binaries_from_env(env: Mapping[str, str] = os.environ) -> ControlPlaneBinaries | None:
    """The binaries the environment names, or None when it names none."""
    apiserver = env.get("TEST_ASSET_KUBE_APISERVER")
    etcd = env.get("TEST_ASSET_ETCD")
    kubectl = env.get("TEST_ASSET_KUBECTL")
    assets = env.get("KUBEBUILDER_ASSETS")
    if apiserver or etcd:
        if not (apiserver and etcd):
            raise PrerequisiteError(
                "set both TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD, or neither"
            )
        return ControlPlaneBinaries(
            _executable(Path(apiserver), "TEST_ASSET_KUBE_APISERVER"),
            _executable(Path(etcd), "TEST_ASSET_ETCD"),
            _executable(Path(kubectl), "TEST_ASSET_KUBECTL") if kubectl else None,
        )
    if assets:
        folder = Path(assets)
        return ControlPlaneBinaries(
            _executable(folder / "kube-apiserver", "KUBEBUILDER_ASSETS"),
            _executable(folder / "etcd", "KUBEBUILDER_ASSETS"),
            folder / "kubectl" if (folder / "kubectl").is_file() else None,
        )
    return None


def cached_binaries(env: Mapping[str, str] = os.environ) -> ControlPlaneBinaries | None:
    folder = cached_binaries_dir(env)
    apiserver, etcd, kubectl = folder / "kube-apiserver", folder / "etcd", folder / "kubectl"
    # All three or a build: an older cache without kubectl gets it added (about a minute).
    if apiserver.is_file() and etcd.is_file() and kubectl.is_file():
        return ControlPlaneBinaries(apiserver, etcd, kubectl)
    return None


def build_binaries(
    env: Mapping[str, str] = os.environ,
    progress: Callable[[str], None] | None = None,
) -> ControlPlaneBinaries:
    """Run scripts/kube-binaries.sh, streaming its progress lines to `progress` (stderr)."""
    if shutil.which("go", path=env.get("PATH")) is None:
        raise PrerequisiteError(
            "kube-apiserver and etcd are not built yet and there is no Go toolchain on PATH to "
            "build them. Install Go >= 1.25, or set KUBEBUILDER_ASSETS to a folder holding "
            "kube-apiserver and etcd (for example from `setup-envtest use 1.36 -p path`)."
        )
    if not _BUILD_SCRIPT.is_file():
        raise PrerequisiteError(
            f"the build script {_BUILD_SCRIPT} is missing (is this a source checkout?); "
            "set KUBEBUILDER_ASSETS to a folder holding kube-apiserver and etcd instead"
        )
    report = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    build_env = dict(env)
    build_env.setdefault("ROLLOUT_CACHE_DIR", str(cache_root(env)))
    build_env["KUBE_VERSION"] = KUBE_VERSION
    build_env["ETCD_VERSION"] = ETCD_VERSION
    report(
        f"building kube-apiserver and kubectl {KUBE_VERSION} and etcd {ETCD_VERSION} from their "
        "Go modules "
        f"into {cached_binaries_dir(env)} (once; a cold build takes several minutes)"
    )
    proc = subprocess.Popen(
        ["bash", str(_BUILD_SCRIPT)],
        env=build_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        tail = [*tail[-30:], line]
        if line.startswith("[kube-binaries]"):
            report(line)
    proc.wait()
    if proc.returncode != 0:
        hint = "\n".join(tail)
        raise PrerequisiteError(
            "building the control-plane binaries failed. Check that the Go module proxy is "
            "reachable (GOPROXY) or set KUBEBUILDER_ASSETS to prebuilt binaries. Last output:\n"
            + hint
        )
    found = cached_binaries(env)
    if found is None:
        raise PrerequisiteError(f"the build finished but {cached_binaries_dir(env)} is incomplete")
    return found


def resolve_binaries(
    env: Mapping[str, str] = os.environ,
    progress: Callable[[str], None] | None = None,
    build: bool = True,
) -> ControlPlaneBinaries:
    found = binaries_from_env(env) or cached_binaries(env)
    if found is not None:
        return found
    if not build:
        raise PrerequisiteError(
            f"kube-apiserver/etcd not found in {cached_binaries_dir(env)}; run "
            "scripts/kube-binaries.sh or set KUBEBUILDER_ASSETS"
        )
    return build_binaries(env, progress)


# ---- the upstream Envoy AI Gateway controller ----------------------------------------------

AIGW_VERSION = "v1.1.0"
AIGW_CONTROLLER_ENV = "ROLLOUT_AIGW_CONTROLLER"
"""A prebuilt Envoy AI Gateway controller binary: used as it is, nothing is built."""
_AIGW_BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "aigw-controller.sh"


def cached_aigw_controller(env: Mapping[str, str] = os.environ) -> Path:
    return cache_root(env) / "aigw" / AIGW_VERSION / "aigw-controller"


def resolve_aigw_controller(
    env: Mapping[str, str] = os.environ,
    progress: Callable[[str], None] | None = None,
    build: bool = True,
) -> Path:
    """ROLLOUT_AIGW_CONTROLLER, else the cache, else a build by scripts/aigw-controller.sh
    from ../shared/ai-gateway/src (about 4 minutes cold on 2 cores, once)."""
    if env.get(AIGW_CONTROLLER_ENV):
        return _executable(Path(env[AIGW_CONTROLLER_ENV]), AIGW_CONTROLLER_ENV)
    cached = cached_aigw_controller(env)
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    if not build:
        raise PrerequisiteError(
            f"the Envoy AI Gateway controller is not built yet ({cached}): run "
            f"scripts/aigw-controller.sh or set {AIGW_CONTROLLER_ENV} to a prebuilt binary"
        )
    if shutil.which("go", path=env.get("PATH")) is None:
        raise PrerequisiteError(
            f"the Envoy AI Gateway controller {AIGW_VERSION} is not built yet and there is no Go "
            f"toolchain on PATH to build it. Install Go >= 1.26, or set {AIGW_CONTROLLER_ENV} to "
            "a prebuilt controller binary."
        )
    report = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    build_env = {**env, "ROLLOUT_CACHE_DIR": str(cache_root(env))}
    report(
        f"building the Envoy AI Gateway controller {AIGW_VERSION} from shared/ai-gateway/src "
        f"into {cached} (once; a cold build takes about 4 minutes on 2 cores)"
    )
    proc = subprocess.run(
        ["bash", str(_AIGW_BUILD_SCRIPT)], env=build_env, capture_output=True, text=True
    )
    for line in proc.stderr.splitlines():
        if line.startswith("[aigw-controller]"):
            report(line)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise PrerequisiteError(
            "building the Envoy AI Gateway controller failed. Check that the Go module proxy is "
            f"reachable (GOPROXY), or set {AIGW_CONTROLLER_ENV} to a prebuilt binary. Last "
            f"output:\n{tail}"
        )
    return _executable(Path(proc.stdout.strip().splitlines()[-1]), "scripts/aigw-controller.sh")
