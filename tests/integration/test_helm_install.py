"""Both installs, proven against the real kube-apiserver: the Helm chart (charts/envoy-ai-rollout)
and the kustomize base (deploy/controller).

The real `helm` (built from its Go module, scripts/helm-binary.sh) lints and renders the chart
with default and with edited values; the kubectl built beside kube-apiserver applies what it
renders, and the kustomize base, with server-side apply in dry run, so the API server's own
schemas, strict field validation and admission judge every object. The RBAC of both is then
applied for real and checked by impersonating the ServiceAccount. Bad values fail
`helm install` with the schema's message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml
from typer.main import get_command

from rollout.cli import app
from rollout.config import ControllerSettings
from rollout.localcluster import LocalControlPlane
from rollout.policy.loading import load_policy_paths
from tests.integration.deploy_tools import (
    CHART,
    KUSTOMIZE_BASE,
    REPO,
    documents,
    helm_binary,
    kubectl_binary,
    ok,
    run,
)

pytestmark = pytest.mark.integration

# The kinds the chart renders with default values, and with every option on (the
# ServiceMonitor is rendered but not applied: no Prometheus Operator CRD is installed here).
DEFAULT_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
}
EDITED_KINDS = DEFAULT_KINDS | {"NetworkPolicy", "ServiceMonitor"}


class Helm:
    """The real helm CLI, with its own config/cache/data folders and the local cluster."""

    def __init__(self, binary: Path, home: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = {
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(kubeconfig),
        }

    def __call__(self, *args: str | Path, timeout: float = 120) -> CompletedProcess[str]:
        return run([self.binary, *args], env=self.env, timeout=timeout)

    def template(self, release: str, namespace: str, *args: str | Path) -> str:
        return ok(self("template", release, CHART, "--namespace", namespace, *args))


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str | Path, stdin: str | None = None) -> CompletedProcess[str]:
        return run([self.binary, "--kubeconfig", self.kubeconfig, *args], stdin=stdin)

    def apply_dry_run(self, manifests: str) -> str:
        """Server-side apply in dry run: the API server validates and admits, stores nothing."""
        return self.apply(manifests, "--dry-run=server")

    def apply(self, manifests: str, *flags: str) -> str:
        """Server-side apply (strict field validation), from stdin."""
        return ok(
            self(
                "apply",
                "--server-side",
                "--field-manager=install-test",
                *flags,
                "-f",
                "-",
                stdin=manifests,
            )
        )


@pytest.fixture(scope="module")
def kubeconfig(control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return control_plane.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture(scope="module")
def helm(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"), kubeconfig)


@pytest.fixture(scope="module")
def kubectl(control_plane: LocalControlPlane, kubeconfig: Path) -> Kubectl:
    return Kubectl(kubectl_binary(control_plane), kubeconfig)


@pytest.fixture
def release() -> str:
    # It holds the chart's name, so the full name of every object is the release name.
    return f"envoy-ai-rollout-{uuid.uuid4().hex[:6]}"


def edited_values() -> dict[str, Any]:
    """Every option away from its default."""
    return {
        "image": {
            "repository": "registry.example.com/platform/envoy-ai-rollout",
            "tag": "0.1.0-rc1",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "replicaCount": 3,
        "leaderElection": {"enabled": True, "leaseName": "rollout-leader"},
        "prometheus": {"url": "http://prometheus-k8s.monitoring.svc:9090", "timeoutSeconds": 5},
        "policies": {
            "files": {
                "chat-canary.yaml": (REPO / "policies" / "chat-canary.yaml").read_text(),
                "embeddings-canary.yaml": (
                    REPO / "policies" / "embeddings-canary.yaml"
                ).read_text(),
            },
            "reloadSeconds": 10,
        },
        "watchNamespaces": ["llm", "default"],
        "logFormat": "console",
        "metrics": {"port": 9102, "service": {"enabled": True, "port": 9102}},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
            "prometheus": {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                },
                "podSelector": {"matchLabels": {"app": "prometheus"}},
                "port": 9091,
            },
            "dns": True,
        },
        "serviceAccount": {
            "create": True,
            "name": "rollout-controller",
            "annotations": {"example.com/owner": "platform"},
        },
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "extraEnv": [{"name": "AIGATEWAY_DEFAULT_NAMESPACE", "value": "llm"}],
        "podAnnotations": {"example.com/scrape": "true"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}
        ],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/name": "envoy-ai-rollout"}
                            },
                        },
                    }
                ]
            }
        },
    }


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        kinds.setdefault(str(doc["kind"]), []).append(doc)
    return kinds


def applied_names(output: str) -> set[str]:
    """`kind.group/name` of each object kubectl reports as applied in dry run."""
    return {
        line.split()[0]
        for line in output.splitlines()
        if line.endswith("serverside-applied (server dry run)")
    }


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


# ---- lint -------------------------------------------------------------------------------


def test_helm_lint_passes_strict_with_default_and_edited_values(helm: Helm, tmp_path: Path) -> None:
    out = ok(helm("lint", "--strict", CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    out = ok(helm("lint", "--strict", CHART, "-f", values_file(tmp_path, edited_values())))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


# ---- server-side dry-run apply ----------------------------------------------------------


def test_default_values_render_objects_the_api_server_accepts(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str
) -> None:
    rendered = helm.template(release, namespace)
    kinds = by_kind(documents(rendered))
    assert set(kinds) == DEFAULT_KINDS
    applied = applied_names(kubectl.apply_dry_run(rendered))
    assert len(applied) == sum(len(v) for v in kinds.values()), applied

    [deployment] = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    container = the_container(deployment)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROLLOUT_LEADER_ELECTION"] == "true"
    assert env["ROLLOUT_METRICS_PORT"] == "8089"
    assert container["image"] == "envoy-ai-rollout:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the only writable place
    [pdb] = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1


def test_edited_values_render_objects_the_api_server_accepts(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str, tmp_path: Path
) -> None:
    values = edited_values()
    rendered = helm.template(release, namespace, "-f", values_file(tmp_path, values))
    docs = documents(rendered)
    kinds = by_kind(docs)
    assert set(kinds) == EDITED_KINDS

    # No Prometheus Operator here: the ServiceMonitor is checked against the Service instead.
    [monitor] = kinds["ServiceMonitor"]
    [service] = kinds["Service"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    applicable = yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"])
    applied = applied_names(kubectl.apply_dry_run(applicable))
    assert len(applied) == len(docs) - 1, applied

    [deployment] = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "rollout-controller"
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    container = the_container(deployment)
    assert container["image"] == "registry.example.com/platform/envoy-ai-rollout:0.1.0-rc1"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert json.loads(env["ROLLOUT_NAMESPACES"]) == ["llm", "default"]
    assert env["ROLLOUT_PROMETHEUS_URL"] == "http://prometheus-k8s.monitoring.svc:9090"
    assert env["ROLLOUT_LEASE_NAME"] == "rollout-leader"
    assert env["ROLLOUT_METRICS_PORT"] == "9102"
    assert env["AIGATEWAY_DEFAULT_NAMESPACE"] == "llm"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9102}
    assert container["args"][-2:] == ["--log-format", "console"]

    # The policies reach the ConfigMap byte for byte, and the loader accepts them from there.
    [config_map] = kinds["ConfigMap"]
    assert config_map["data"] == values["policies"]["files"]
    policy_dir = tmp_path / "mounted"
    policy_dir.mkdir()
    for name, text in config_map["data"].items():
        (policy_dir / name).write_text(text)
    loaded = load_policy_paths([policy_dir])
    assert loaded.ok and {p.name for p in loaded.policies} == {"chat-canary", "embeddings-canary"}

    [policy] = kinds["NetworkPolicy"]
    egress = policy["spec"]["egress"]
    assert egress[0] == {
        "ports": [{"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
    }
    assert egress[1]["ports"] == [{"port": 9091, "protocol": "TCP"}]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    [pdb] = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 2


def test_an_existing_config_map_of_policies_is_mounted_and_none_is_created(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str
) -> None:
    rendered = helm.template(release, namespace, "--set", "policies.existingConfigMap=my-policies")
    kinds = by_kind(documents(rendered))
    assert "ConfigMap" not in kinds
    volumes = kinds["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "policies", "configMap": {"name": "my-policies"}} in volumes
    kubectl.apply_dry_run(rendered)


def test_the_rendered_deployment_uses_real_cli_options_and_settings(
    helm: Helm, namespace: str, release: str, tmp_path: Path
) -> None:
    rendered = helm.template(release, namespace, "-f", values_file(tmp_path, edited_values()))
    [deployment] = by_kind(documents(rendered))["Deployment"]
    container = the_container(deployment)
    command = get_command(app).commands["run"]  # type: ignore[attr-defined]
    options = {opt for param in command.params for opt in param.opts}
    flags = {arg for arg in container["args"][1:] if arg.startswith("-")}
    assert container["args"][0] == "run" and flags <= options, flags - options
    for env in container["env"]:
        if env["name"].startswith("ROLLOUT_"):
            field = env["name"].removeprefix("ROLLOUT_").lower()
            assert field in ControllerSettings.model_fields, env["name"]
    # Every value the chart passes is one the controller's settings accept.
    values = {
        e["name"].removeprefix("ROLLOUT_").lower(): e["value"]
        for e in container["env"]
        if "value" in e and e["name"].startswith("ROLLOUT_")
    }
    settings = ControllerSettings.model_validate(
        {k: json.loads(v) if k == "namespaces" else v for k, v in values.items()}
    )
    assert settings.namespaces == ("llm", "default")


def test_the_kustomize_base_is_accepted_by_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    # Its objects live in model-registry, which a dry run would not create: it must exist.
    created = kubectl("create", "namespace", "model-registry")
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    rendered = ok(kubectl("kustomize", KUSTOMIZE_BASE))
    kinds = by_kind(documents(rendered))
    assert {"Deployment", "ClusterRole", "Role", "ConfigMap", "Service", "ServiceAccount"} <= set(
        kinds
    )
    out = ok(kubectl("apply", "-k", KUSTOMIZE_BASE, "--server-side", "--dry-run=server"))
    assert len(applied_names(out)) == sum(len(v) for v in kinds.values()), out


def test_chart_and_kustomize_base_render_the_same_rbac_rules(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str
) -> None:
    chart = by_kind(documents(helm.template(release, namespace)))
    base = by_kind(documents(ok(kubectl("kustomize", KUSTOMIZE_BASE))))
    for kind in ("ClusterRole", "Role"):
        [ours], [theirs] = chart[kind], base[kind]
        assert ours["rules"] == theirs["rules"], kind
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        [ours], [theirs] = chart[kind], base[kind]
        assert ours["roleRef"]["kind"] == theirs["roleRef"]["kind"], kind


# ---- RBAC, by impersonation --------------------------------------------------------------

ROUTES = "aigatewayroutes.aigateway.envoyproxy.io"
RATE_LIMITS = "backendtrafficpolicies.gateway.envoyproxy.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
LEASES = "leases.coordination.k8s.io"

# (verb, resource, where): where is "routes" (any namespace with routes), "all" (every
# namespace at once, as a watch does), "own" (the controller's namespace) or "other".
ALLOWED = [
    *[
        (verb, ROUTES, where)
        for verb in ("get", "list", "watch", "patch")
        for where in ("routes", "all")
    ],
    *[(verb, RATE_LIMITS, "routes") for verb in ("get", "list", "create", "update")],
    *[(verb, HTTPROUTES, "routes") for verb in ("get", "list", "watch")],
    *[(verb, "events", "routes") for verb in ("create", "patch")],
    *[(verb, LEASES, "own") for verb in ("get", "create", "update")],
]
FORBIDDEN = [
    ("get", "secrets", "own"),
    ("list", "secrets", "all"),
    ("get", "secrets", "routes"),
    ("watch", "secrets", "routes"),
    ("create", ROUTES, "routes"),
    ("update", ROUTES, "routes"),
    ("delete", ROUTES, "routes"),
    ("delete", RATE_LIMITS, "routes"),
    ("patch", HTTPROUTES, "routes"),
    ("update", HTTPROUTES, "routes"),
    ("get", LEASES, "other"),
    ("update", LEASES, "other"),
    ("delete", LEASES, "own"),
    ("create", "pods", "own"),
    ("get", "configmaps", "routes"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "all"),
    ("impersonate", "serviceaccounts", "own"),
]


@pytest.fixture(params=["chart", "kustomize"])
def installed_rbac(
    request: pytest.FixtureRequest, helm: Helm, kubectl: Kubectl, namespace: str, release: str
) -> Iterator[tuple[str, str]]:
    """(namespace, ServiceAccount) of the RBAC one install method created, for real."""
    if request.param == "chart":
        rendered = helm.template(
            release,
            namespace,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        )
        kubectl.apply(rendered)
        yield namespace, release
        kubectl("delete", "clusterrolebinding,clusterrole", f"{release}-controller")
    else:
        created = kubectl("create", "namespace", "model-registry")
        assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
        rendered = ok(kubectl("kustomize", KUSTOMIZE_BASE))
        rbac = [
            d
            for d in documents(rendered)
            if d["kind"]
            in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        ]
        kubectl.apply(yaml.safe_dump_all(rbac))
        yield "model-registry", "model-registry"


def can_i(kubectl: Kubectl, account: tuple[str, str], verb: str, resource: str, where: str) -> bool:
    own, name = account
    scope = {
        "routes": ["-n", "llm"],
        "all": ["--all-namespaces"],
        "own": ["-n", own],
        "other": ["-n", "kube-system"],
    }[where]
    result = kubectl(
        "auth", "can-i", verb, resource, *scope, f"--as=system:serviceaccount:{own}:{name}"
    )
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl auth can-i: {result.stdout} {result.stderr}"
    return answer == "yes"


def test_the_service_account_may_do_what_the_controller_does_and_no_more(
    kubectl: Kubectl, installed_rbac: tuple[str, str]
) -> None:
    denied = [case for case in ALLOWED if not can_i(kubectl, installed_rbac, *case)]
    granted = [case for case in FORBIDDEN if can_i(kubectl, installed_rbac, *case)]
    assert denied == [], f"the controller needs these and is denied them: {denied}"
    assert granted == [], f"least privilege: these are granted and must not be: {granted}"


# ---- a real helm install, and bad values -------------------------------------------------


def test_helm_install_creates_the_release_in_the_api_server(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str, tmp_path: Path
) -> None:
    policy = tmp_path / "chat-canary.yaml"
    policy.write_text((REPO / "policies" / "chat-canary.yaml").read_text())
    ok(
        helm(
            "install",
            release,
            CHART,
            "-n",
            namespace,
            "--set-file",
            f"policies.files.chat-canary\\.yaml={policy}",
        )
    )
    try:
        deployment = json.loads(
            ok(kubectl("get", "deployment", release, "-n", namespace, "-o", "json"))
        )
        assert deployment["spec"]["replicas"] == 2
        data = json.loads(
            ok(kubectl("get", "configmap", f"{release}-policies", "-n", namespace, "-o", "json"))
        )["data"]
        assert data == {"chat-canary.yaml": policy.read_text()}
        status = ok(helm("status", release, "-n", namespace))
        assert "STATUS: deployed" in status
    finally:
        ok(helm("uninstall", release, "-n", namespace))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        (
            {"image": {"repository": "x", "name": "y"}},
            "at '/image': additional properties 'name' not allowed",
        ),
        ({"prometheus": {"url": "prometheus:9090"}}, "at '/prometheus/url'"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "at '/watchNamespaces/0'"),
        (
            {"policies": {"files": {"a.yaml": "x"}, "existingConfigMap": "mine"}},
            "policies.files and policies.existingConfigMap are exclusive",
        ),
        (
            {"leaderElection": {"enabled": False}},
            "leaderElection.enabled=false with replicaCount > 1",
        ),
    ],
    ids=[
        "wrong-type",
        "unknown-key",
        "unknown-nested-key",
        "bad-url",
        "bad-namespace",
        "two-policy-sources",
        "two-writers",
    ],
)
def test_bad_values_fail_helm_install_with_the_reason(
    helm: Helm, namespace: str, release: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = helm("install", release, CHART, "-n", namespace, "-f", values_file(tmp_path, values))
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr
    assert ok(helm("list", "-n", namespace, "-q")).strip() == ""
