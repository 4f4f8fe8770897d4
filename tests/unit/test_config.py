"""AIGatewayConfig: environment variables, defaults, name validation, kubeconfig resolution."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from rollout.config import AIGatewayConfig

ENV_VARS = [
    "AIGATEWAY_ENABLED",
    "AIGATEWAY_IN_CLUSTER",
    "AIGATEWAY_KUBECONFIG",
    "AIGATEWAY_DEFAULT_NAMESPACE",
    "AIGATEWAY_GATEWAY_NAME",
    "AIGATEWAY_GATEWAY_NAMESPACE",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def test_defaults() -> None:
    config = AIGatewayConfig()
    assert config.enabled is False
    assert config.in_cluster is False
    assert config.kubeconfig == ""
    assert config.default_namespace == "model-serving"
    assert config.gateway_name == "ai-gateway"
    assert config.gateway_namespace == "envoy-gateway-system"


def test_reads_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_ENABLED", "true")
    monkeypatch.setenv("AIGATEWAY_IN_CLUSTER", "1")
    monkeypatch.setenv("AIGATEWAY_DEFAULT_NAMESPACE", "llm")
    monkeypatch.setenv("AIGATEWAY_GATEWAY_NAME", "edge.gw")
    monkeypatch.setenv("AIGATEWAY_GATEWAY_NAMESPACE", "gateways")
    config = AIGatewayConfig()
    assert (config.enabled, config.in_cluster) == (True, True)
    assert (config.default_namespace, config.gateway_name, config.gateway_namespace) == (
        "llm",
        "edge.gw",
        "gateways",
    )


def test_kubeconfig_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_KUBECONFIG", "/etc/kube/admin.conf")
    assert AIGatewayConfig().kubeconfig == "/etc/kube/admin.conf"


def test_unparsable_bool_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGATEWAY_ENABLED", "maybe")
    with pytest.raises(ValidationError, match="enabled"):
        AIGatewayConfig()


@pytest.mark.parametrize(
    ("var", "value", "rule"),
    [
        ("AIGATEWAY_DEFAULT_NAMESPACE", "Model_Serving", "DNS-1123 label"),
        ("AIGATEWAY_GATEWAY_NAMESPACE", "envoy.gateway", "DNS-1123 label"),
        ("AIGATEWAY_GATEWAY_NAME", "AI-Gateway", "DNS-1123 subdomain"),
        ("AIGATEWAY_GATEWAY_NAME", "", "DNS-1123 subdomain"),
    ],
)
def test_names_must_be_dns1123(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, rule: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=rule):
        AIGatewayConfig()


def test_in_cluster_and_kubeconfig_are_mutually_exclusive() -> None:
    with pytest.raises(ValidationError, match="mutually exclusive"):
        AIGatewayConfig(in_cluster=True, kubeconfig="/k")


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        AIGatewayConfig().enabled = True  # type: ignore[misc]


def test_kubeconfig_path_is_none_in_cluster() -> None:
    assert AIGatewayConfig(in_cluster=True).kubeconfig_path({"KUBECONFIG": "/x"}) is None


def test_kubeconfig_path_prefers_the_setting() -> None:
    config = AIGatewayConfig(kubeconfig="/etc/kube/admin.conf")
    assert config.kubeconfig_path({"KUBECONFIG": "/other"}) == "/etc/kube/admin.conf"


def test_kubeconfig_path_falls_back_to_the_kubeconfig_env_whole() -> None:
    paths = os.pathsep.join(["/a/config", "/b/config"])
    assert AIGatewayConfig().kubeconfig_path({"KUBECONFIG": paths}) == paths


def test_kubeconfig_path_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    expected = os.path.join("/home/tester", ".kube", "config")
    assert AIGatewayConfig().kubeconfig_path({}) == expected
    assert AIGatewayConfig().kubeconfig_path({"KUBECONFIG": ""}) == expected


def test_kubeconfig_path_expands_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    config = AIGatewayConfig(kubeconfig="~/clusters/dev.yaml")
    assert config.kubeconfig_path({}) == "/home/tester/clusters/dev.yaml"


def test_kubeconfig_path_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/from/env")
    assert AIGatewayConfig().kubeconfig_path() == "/from/env"
