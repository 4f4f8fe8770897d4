"""Settings read from the environment, and the Kubernetes name rules they are checked against.

The DNS-1123 checks live here rather than under `rollout.gateway` because this module must not
import the gateway package: the gateway adapter imports this module, and a cycle would break
whichever side is imported first. The gateway models import the checks from here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rollout.notifications.spec import NotificationSpec

_DNS1123_LABEL_MAX = 63
_DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def check_dns1123_label(value: str) -> str:
    """Namespaces and other single-label names (RFC 1123 label, at most 63 characters)."""
    if len(value) > _DNS1123_LABEL_MAX or not _DNS1123_LABEL_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid DNS-1123 label: use at most {_DNS1123_LABEL_MAX} "
            "lower-case letters, digits or '-', starting and ending with a letter or digit"
        )
    return value


def check_dns1123_subdomain(value: str) -> str:
    """Object names (RFC 1123 subdomain, at most 253 characters)."""
    if len(value) > _DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid DNS-1123 subdomain: use at most "
            f"{_DNS1123_SUBDOMAIN_MAX} lower-case letters, digits, '-' or '.', each "
            "dot-separated part starting and ending with a letter or digit"
        )
    return value


DNS1123Label = Annotated[str, AfterValidator(check_dns1123_label)]
DNS1123Subdomain = Annotated[str, AfterValidator(check_dns1123_subdomain)]

_DEFAULT_KUBECONFIG = os.path.join("~", ".kube", "config")


class AIGatewayConfig(BaseSettings):
    """AI Gateway integration settings, from `AIGATEWAY_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AIGATEWAY_", frozen=True)

    enabled: bool = False
    in_cluster: bool = False
    # Empty: fall back to $KUBECONFIG, then ~/.kube/config (see kubeconfig_path()).
    kubeconfig: str = ""
    default_namespace: DNS1123Label = "model-serving"
    gateway_name: DNS1123Subdomain = "ai-gateway"
    gateway_namespace: DNS1123Label = "envoy-gateway-system"
    # How long delete_* waits for a deleted object to be gone (the AI Gateway controller's
    # finalizer holds routes and backends until it has cleaned up).
    delete_timeout_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_credential_source(self) -> Self:
        # Silently preferring one would connect to a cluster the operator did not mean.
        if self.in_cluster and self.kubeconfig:
            raise ValueError(
                "AIGATEWAY_IN_CLUSTER=true and AIGATEWAY_KUBECONFIG are mutually exclusive: "
                "in-cluster mode uses the pod's service account, not a kubeconfig file"
            )
        return self

    def kubeconfig_path(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The kubeconfig to load, or None in in-cluster mode.

        Order: AIGATEWAY_KUBECONFIG, then $KUBECONFIG (which may hold several paths joined by
        os.pathsep; the kubernetes client merges them, so it is returned whole), then
        ~/.kube/config. `~` is expanded. `environ` defaults to os.environ (tests pass their own).
        """
        if self.in_cluster:
            return None
        env = os.environ if environ is None else environ
        raw = self.kubeconfig or env.get("KUBECONFIG", "")
        parts = [part for part in raw.split(os.pathsep) if part] or [_DEFAULT_KUBECONFIG]
        return os.pathsep.join(os.path.expanduser(part) for part in parts)


class ControllerSettings(BaseSettings):
    """The canary controller's settings, from `ROLLOUT_*` environment variables (or CLI flags).

    The Kubernetes connection (kubeconfig, in-cluster) is AIGatewayConfig's.
    """

    model_config = SettingsConfigDict(env_prefix="ROLLOUT_", frozen=True)

    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout_seconds: float = 10.0
    # Namespaces whose routes the controller watches for manual controls; empty: every
    # namespace the policies name.
    namespaces: tuple[DNS1123Label, ...] = ()
    metrics_host: str = "0.0.0.0"
    # /metrics and /healthz; 0 picks a free port. Not 8080: the AI Gateway controller listens
    # there with no flag to move it, and the two often run side by side.
    metrics_port: int = 8089
    leader_election: bool = True
    lease_namespace: DNS1123Label = "default"
    lease_name: DNS1123Subdomain = "envoy-ai-rollout"
    # How often policy files are checked for changes (added, edited, removed).
    policy_reload_seconds: float = 5.0
    # Ticks read routes from the route watch's cache (false: one GET per rollout per tick, the
    # path before the cache; kept for comparison in benchmarks).
    route_cache: bool = True
    # API requests over the small keep-alive HTTP/1.1 client (rollout.kubehttp), about a
    # quarter of the CPU per request of the official client's urllib3 stack (false: that
    # stack; a proxy or custom retries in the kubeconfig always use it).
    fast_transport: bool = True
    # Threads for the ticks of one batch; unset: sized from api_qps (rollout.ratelimit).
    tick_workers: int | None = Field(default=None, ge=1)
    # Client-side pacing of API requests, like client-go's QPS/burst (its 50/100 scaled by 10).
    api_qps: float = Field(default=500.0, gt=0)
    api_burst: int = Field(default=1000, ge=1)
    # Threads writing Kubernetes Events off the ticks' path (0: each tick writes its own),
    # and how many may wait (more are dropped with a warning).
    event_workers: int = Field(default=4, ge=0)
    event_queue_size: int = Field(default=10_000, ge=1)
    # Listen to the AI Gateway controller: no rollout starts or advances while it does not
    # accept the route (NotAccepted, or never reconciled: it may not be running) ...
    require_route_accepted: bool = True
    # ... and a step is analysed only once the HTTPRoute it generates carries the weights we
    # wrote; not within the timeout: the rollout holds with the reason until it does.
    verify_weights: bool = True
    weight_verification_timeout_seconds: float = Field(default=30.0, gt=0)
    # Controller-wide notification receivers, as JSON: ROLLOUT_NOTIFICATIONS='[{"type": "slack",
    # "urlFrom": {"env": "SLACK_WEBHOOK_URL"}}]'; each policy's `notifications` are added.
    notifications: tuple[NotificationSpec, ...] = ()
    notification_timeout_seconds: float = Field(default=5.0, gt=0)
    # The dashboard's address as people reach it, linked from notifications ("" : no link).
    dashboard_url: str = ""
    # Serve the dashboard on the metrics port under this path (e.g. /dashboard); "": off.
    dashboard_path: str = ""
    # Its pause/resume/abort/promote buttons (only while this replica is the leader).
    dashboard_allow_actions: bool = False

    @model_validator(mode="after")
    def _dashboard_path(self) -> Self:
        path = self.dashboard_path
        if path and (not path.startswith("/") or path.rstrip("/") in ("", "/metrics", "/healthz")):
            raise ValueError(
                f"dashboard_path {path!r}: give a path such as /dashboard (not /, /metrics "
                "or /healthz)"
            )
        return self
