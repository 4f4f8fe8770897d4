"""The deployment manifests under deploy/: they parse, reference each other consistently, and
grant the controller exactly the API access its adapters use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from rollout.cli import app
from rollout.config import ControllerSettings
from rollout.policy.loading import load_policy_file

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CONTROLLER = DEPLOY / "controller"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization() -> dict[str, Any]:
    [doc] = documents(CONTROLLER / "kustomization.yaml")
    return doc


def base_objects() -> Iterator[dict[str, Any]]:
    """Every object the controller kustomization lists as a resource."""
    for resource in kustomization()["resources"]:
        yield from documents(CONTROLLER / resource)


def objects_of(kind: str) -> list[dict[str, Any]]:
    return [o for o in base_objects() if o["kind"] == kind]


def test_there_are_manifests_to_check() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {
        "controller/kustomization.yaml",
        "controller/deployment.yaml",
        "controller/rbac.yaml",
        "controller/policies/chat-canary.yaml",
        "k8s/aigateway-rbac.yaml",
    } <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_parses_into_objects_with_kind_and_api_version(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} has no documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion/kind missing"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} has no name"


def test_kustomization_files_exist() -> None:
    k = kustomization()
    for resource in k["resources"]:
        assert (CONTROLLER / resource).is_file(), f"resource {resource} missing"
    for generator in k.get("configMapGenerator", []):
        for file in generator.get("files", []):
            source = file.split("=", 1)[-1]
            assert (CONTROLLER / source).is_file(), f"configMapGenerator file {source} missing"


def test_the_deployed_policy_is_a_byte_identical_copy_of_policies_chat_canary() -> None:
    # kustomize cannot read files outside deploy/controller, so configMapGenerator reads a COPY
    # of policies/chat-canary.yaml. Edit policies/chat-canary.yaml, then run
    #   cp policies/chat-canary.yaml deploy/controller/policies/chat-canary.yaml
    copy = CONTROLLER / "policies" / "chat-canary.yaml"
    original = REPO / "policies" / "chat-canary.yaml"
    assert copy.read_bytes() == original.read_bytes(), (
        f"{copy} differs from {original}: kustomize cannot read files outside its folder, so "
        f"the copy must be kept in sync: cp {original.relative_to(REPO)} "
        f"{copy.relative_to(REPO)}"
    )
    [policy] = load_policy_file(copy)
    assert policy.name == "chat-canary"


def test_the_deployment_runs_as_a_service_account_of_the_base() -> None:
    [deployment] = objects_of("Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert account in {o["metadata"]["name"] for o in objects_of("ServiceAccount")}
    # ... and the RBAC bindings bind that account.
    for binding in objects_of("ClusterRoleBinding") + objects_of("RoleBinding"):
        subjects = {s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
        assert account in subjects, f"{binding['metadata']['name']} does not bind {account}"


def test_the_deployment_mounts_the_generated_policy_config_map_and_probes_healthz() -> None:
    [deployment] = objects_of("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    config_maps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert config_maps <= generated and config_maps
    [container] = pod["containers"]
    args = container["args"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["policies"]
    assert args[0] == "run" and args[args.index("--policies") + 1] == mount
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def granted(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs.update(rule["verbs"])
    return verbs


def test_the_controller_cluster_role_grants_what_the_controller_uses() -> None:
    [role] = [d for d in documents(CONTROLLER / "rbac.yaml") if d["kind"] == "ClusterRole"]
    rules: list[dict[str, Any]] = role["rules"]
    assert granted(rules, "", "events") >= {"create"}
    assert granted(rules, "aigateway.envoyproxy.io", "aigatewayroutes") >= {
        "get",
        "list",
        "watch",
        "patch",
    }
    # Least privilege: the controller never creates, replaces or deletes routes.
    assert not granted(rules, "aigateway.envoyproxy.io", "aigatewayroutes") & {
        "create",
        "update",
        "delete",
    }
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in rules)
    # The generated HTTPRoute is read (weight verification), never written: its owner is the
    # AI Gateway controller, which overwrites it on every sync.
    assert granted(rules, "gateway.networking.k8s.io", "httproutes") == {"get", "list", "watch"}


def test_leases_get_create_update_in_the_controller_namespace_only() -> None:
    # Leader election needs the Lease, and only in the controller's own namespace (kustomize
    # sets it): a Role, not the ClusterRole.
    docs = documents(CONTROLLER / "rbac.yaml")
    [cluster_role] = [d for d in docs if d["kind"] == "ClusterRole"]
    assert not granted(cluster_role["rules"], "coordination.k8s.io", "leases")
    [binding] = [d for d in docs if d["kind"] == "RoleBinding"]
    [role] = [d for d in docs if d["kind"] == "Role"]
    assert binding["roleRef"] == {
        "kind": "Role",
        "name": role["metadata"]["name"],
        "apiGroup": "rbac.authorization.k8s.io",
    }
    assert granted(role["rules"], "coordination.k8s.io", "leases") >= {"get", "create", "update"}


def test_cluster_role_bindings_point_at_defined_roles() -> None:
    for path in (CONTROLLER / "rbac.yaml", DEPLOY / "k8s" / "aigateway-rbac.yaml"):
        docs = documents(path)
        roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"].endswith("Role")}
        for binding in (d for d in docs if d["kind"].endswith("RoleBinding")):
            ref = binding["roleRef"]
            assert (ref["kind"], ref["name"]) in roles, f"{path}: {ref} is not defined there"


def test_the_deployment_uses_real_cli_options_and_settings() -> None:
    [deployment] = objects_of("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    run = get_command(app).commands["run"]  # type: ignore[attr-defined]
    options = {opt for param in run.params for opt in param.opts}
    flags = [arg for arg in container["args"][1:] if arg.startswith("-")]
    assert flags and set(flags) <= options, set(flags) - options
    for env in container["env"]:
        if env["name"].startswith("ROLLOUT_"):
            field = env["name"].removeprefix("ROLLOUT_").lower()
            assert field in ControllerSettings.model_fields, env["name"]
    port = int({e["name"]: e.get("value") for e in container["env"]}["ROLLOUT_METRICS_PORT"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == port
