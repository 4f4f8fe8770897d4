"""Prerequisite handling of the local control plane: clear errors, never a silent skip."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509

from rollout.localcluster import LocalControlPlane, PrerequisiteError, binaries, certs
from rollout.localcluster.crds import default_crd_dirs, load_crd_documents
from rollout.localcluster.process import ensure_port_free


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_are_used_without_building(tmp_path: Path) -> None:
    executable(tmp_path / "kube-apiserver")
    executable(tmp_path / "etcd")
    found = binaries.resolve_binaries({"KUBEBUILDER_ASSETS": str(tmp_path)}, build=False)
    assert found == binaries.ControlPlaneBinaries(tmp_path / "kube-apiserver", tmp_path / "etcd")


def test_test_asset_variables_win_over_kubebuilder_assets(tmp_path: Path) -> None:
    api = executable(tmp_path / "my-apiserver")
    etcd = executable(tmp_path / "my-etcd")
    env = {
        "TEST_ASSET_KUBE_APISERVER": str(api),
        "TEST_ASSET_ETCD": str(etcd),
        "KUBEBUILDER_ASSETS": "/nonexistent",
    }
    assert binaries.resolve_binaries(env, build=False) == binaries.ControlPlaneBinaries(api, etcd)


def test_half_set_test_assets_are_refused(tmp_path: Path) -> None:
    api = executable(tmp_path / "kube-apiserver")
    with pytest.raises(PrerequisiteError, match="TEST_ASSET_ETCD"):
        binaries.resolve_binaries({"TEST_ASSET_KUBE_APISERVER": str(api)}, build=False)


def test_kubebuilder_assets_missing_a_binary_names_it(tmp_path: Path) -> None:
    executable(tmp_path / "kube-apiserver")
    with pytest.raises(PrerequisiteError, match=r"etcd.*not an executable"):
        binaries.resolve_binaries({"KUBEBUILDER_ASSETS": str(tmp_path)}, build=False)


def test_no_go_toolchain_says_what_to_do(tmp_path: Path) -> None:
    env = {"ROLLOUT_CACHE_DIR": str(tmp_path), "PATH": str(tmp_path)}
    with pytest.raises(PrerequisiteError, match=r"no Go toolchain.*KUBEBUILDER_ASSETS"):
        binaries.resolve_binaries(env)


def test_cache_dir_is_outside_the_repo_and_versioned(tmp_path: Path) -> None:
    folder = binaries.cached_binaries_dir({"ROLLOUT_CACHE_DIR": str(tmp_path)})
    assert folder == tmp_path / "kube" / f"{binaries.KUBE_VERSION}-etcd-{binaries.ETCD_VERSION}"
    home_default = binaries.cached_binaries_dir({})
    assert home_default.parts[-3:-1] == ("envoy-ai-rollout", "kube")


def test_missing_crd_folder_names_it_and_the_variable(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match=r"does not exist.*ROLLOUT_CRDS_DIRS"):
        load_crd_documents([tmp_path / "nope"])


def test_crd_folder_without_crds_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("kind: ConfigMap\n")
    with pytest.raises(PrerequisiteError, match="no CustomResourceDefinition"):
        load_crd_documents([tmp_path])


def test_crd_dirs_variable_overrides_the_default(tmp_path: Path) -> None:
    env = {"ROLLOUT_CRDS_DIRS": f"{tmp_path}/a:{tmp_path}/b"}
    assert default_crd_dirs(env) == [tmp_path / "a", tmp_path / "b"]


def test_the_upstream_crds_load_with_their_license_header() -> None:
    crds = load_crd_documents(default_crd_dirs({}))
    names = {c["metadata"]["name"] for c in crds}
    assert {
        "aigatewayroutes.aigateway.envoyproxy.io",
        "aiservicebackends.aigateway.envoyproxy.io",
        "backends.gateway.envoyproxy.io",
        "backendtrafficpolicies.gateway.envoyproxy.io",
    } <= names


def test_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PrerequisiteError, match=f"port {port}.*in use"):
            ensure_port_free(port, "kube-apiserver")
        plane = LocalControlPlane(
            crd_dirs=default_crd_dirs({}),
            port=port,
            binaries=binaries.ControlPlaneBinaries(Path("/x"), Path("/y")),
        )
        with pytest.raises(PrerequisiteError, match="in use"):
            plane.start()


def test_client_certificate_carries_user_and_groups() -> None:
    ca = certs.CertificateAuthority.create("test-ca")
    pair = ca.issue_client("alice", ["system:masters", "devs"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    orgs = [
        a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
    ]
    assert (cn, orgs) == ("alice", ["system:masters", "devs"])
    assert cert.issuer == ca.cert.subject


def test_crds_are_installed_exactly_as_upstream_ships_them() -> None:
    """shared/crds holds Envoy Gateway v1.8.3, whose limit.requests is int64: nothing to fix."""
    import yaml

    notices: list[str] = []
    crds = load_crd_documents(default_crd_dirs({}), notice=notices.append)
    names = {c["metadata"]["name"] for c in crds}
    # The AI Gateway controller refuses to start without these (shared/ai-gateway/SOURCES.md).
    assert {
        "backendsecuritypolicies.aigateway.envoyproxy.io",
        "gatewayconfigs.aigateway.envoyproxy.io",
        "mcproutes.aigateway.envoyproxy.io",
        "quotapolicies.aigateway.envoyproxy.io",
        "httproutefilters.gateway.envoyproxy.io",
    } <= names
    folder = default_crd_dirs({})[0]
    on_disk = [
        d
        for f in sorted(folder.glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
    ]
    assert crds == on_disk
    assert notices == [f"{len(crds)} CRDs from {folder}"]


def test_a_child_started_from_a_short_lived_thread_outlives_that_thread(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the forking THREAD exits; children must not die with it."""
    import threading
    import time

    from rollout.localcluster.process import ManagedProcess

    proc = ManagedProcess("sleeper", ["sleep", "30"], tmp_path / "log")
    thread = threading.Thread(target=proc.start)
    thread.start()
    thread.join()
    time.sleep(0.5)
    try:
        assert proc.running()
    finally:
        proc.stop()
    assert not proc.running()


def test_no_module_proxy_fails_the_build_with_instructions(tmp_path: Path) -> None:
    """GOPROXY=off and an empty module cache: what a machine without the proxy sees."""
    import os

    env = {
        **os.environ,
        "ROLLOUT_CACHE_DIR": str(tmp_path / "cache"),
        "GOMODCACHE": str(tmp_path / "gomod"),
        "GOPROXY": "off",
    }
    env.pop("KUBEBUILDER_ASSETS", None)
    progress: list[str] = []
    with pytest.raises(PrerequisiteError) as info:
        binaries.resolve_binaries(env, progress=progress.append)
    message = str(info.value)
    assert "Go module proxy is reachable" in message and "KUBEBUILDER_ASSETS" in message
    assert "GOPROXY=off" in message  # the script's own diagnosis is passed on
    assert any("building kube-apiserver" in line for line in progress)


def test_a_port_in_use_is_named_with_the_process_holding_it() -> None:
    import os
    import socket

    from rollout.localcluster.errors import PrerequisiteError
    from rollout.localcluster.process import ensure_port_free

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PrerequisiteError) as info:
            ensure_port_free(port, "the AI Gateway controller's metrics", host="0.0.0.0")
    message = str(info.value)
    assert f"port {port}" in message and "the AI Gateway controller's metrics" in message
    assert f"pid {os.getpid()} (" in message
