"""The composition root: the one place that picks adapters for the controller's ports."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rollout import kubeapi
from rollout.analysis.prometheus import PrometheusMetricsProvider
from rollout.config import AIGatewayConfig, ControllerSettings
from rollout.controller.gate_tracker import GateTracker
from rollout.controller.observability import ControllerMetrics, MetricsServer
from rollout.controller.reconciler import GatewayChecks, Reconciler
from rollout.controller.runtime.http_gates import HttpGateRunner, HttpWebhookMetricSource
from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.runtime.kube_lease import KubeLeaseElector
from rollout.controller.runtime.kube_watch import KubeRouteWatcher
from rollout.controller.scheduler import RolloutController
from rollout.dashboard.app import DashboardApp
from rollout.dashboard.source import DashboardSource
from rollout.gateway.kube import KubeAIGatewayClient
from rollout.gateway.route_store import RouteStore
from rollout.notifications.sender import WebhookNotifier
from rollout.ratelimit import TokenBucket, tick_pool_size


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunningController:
    controller: RolloutController
    metrics_server: MetricsServer | None
    gateway: KubeAIGatewayClient
    events: KubeEventRecorder | None = None

    notifier: WebhookNotifier | None = None

    def stop(self) -> None:
        self.controller.stop()
        if self.notifier is not None:
            self.notifier.stop()
        if self.events is not None:
            self.events.close(timeout=5.0)  # what the last ticks queued
        if self.metrics_server is not None:
            self.metrics_server.stop()


def build_controller(
    policy_paths: Sequence[Path],
    settings: ControllerSettings,
    gateway_config: AIGatewayConfig,
    *,
    identity: str | None = None,
    serve_metrics: bool = True,
) -> RunningController:
    """Adapters for every port, wired into a RolloutController (not started)."""
    # One store of routes: the watch keeps it current, the adapter's writes and reads land in
    # it, and the reconciler reads from it (when enabled) instead of a GET per tick.
    routes = RouteStore()
    kubeapi.use_fast_path(settings.fast_transport)
    gateway = KubeAIGatewayClient.from_config(gateway_config, route_store=routes)
    api = gateway.api_client
    kubeapi.set_rate_limiter(api, TokenBucket(settings.api_qps, settings.api_burst))
    metrics = ControllerMetrics()
    events = KubeEventRecorder(
        api,
        component="rollout-controller",
        workers=settings.event_workers,
        queue_size=settings.event_queue_size,
    )
    leader = (
        KubeLeaseElector(
            api,
            settings.lease_namespace,
            name=settings.lease_name,
            identity=identity or default_identity(),
        )
        if settings.leader_election
        else None
    )
    provider = PrometheusMetricsProvider(
        settings.prometheus_url,
        timeout=settings.prometheus_timeout_seconds,
        on_query=lambda _event: metrics.prometheus_queries.inc(),
    )
    notifier = WebhookNotifier(
        settings.notifications,
        registry=metrics.registry,
        dashboard_url=settings.dashboard_url,
        timeout=settings.notification_timeout_seconds,
    )
    notifier.start()
    # Webhook gates run off the tick; an answer asks the controller for a prompt tick.
    gates = GateTracker(HttpGateRunner())
    reconciler = Reconciler(
        gateway,
        events,
        gates=gates,
        webhook_metrics=HttpWebhookMetricSource(),
        notifier=notifier,
        routes=routes if settings.route_cache else None,
        leader=leader,
        metrics=metrics,
        gateway_checks=GatewayChecks(
            require_accepted=settings.require_route_accepted,
            verify_weights=settings.verify_weights,
            verification_timeout=timedelta(seconds=settings.weight_verification_timeout_seconds),
        ),
    )
    controller = RolloutController(
        gateway=gateway,
        provider=provider,
        reconciler=reconciler,
        policy_paths=policy_paths,
        leader=leader,
        watcher=KubeRouteWatcher(api, store=routes),
        watch_namespaces=list(settings.namespaces) or None,
        metrics=metrics,
        reload_seconds=settings.policy_reload_seconds,
        tick_workers=tick_pool_size(settings.api_qps, settings.tick_workers),
    )
    gates.on_answer = controller.request_tick
    server = (
        MetricsServer(
            metrics,
            controller.healthy,
            settings.metrics_host,
            settings.metrics_port,
            mounts=_dashboard_mount(settings, gateway, controller, leader),
        )
        if serve_metrics
        else None
    )
    return RunningController(controller, server, gateway, events, notifier)


def _dashboard_mount(
    settings: ControllerSettings,
    gateway: KubeAIGatewayClient,
    controller: RolloutController,
    leader: KubeLeaseElector | None,
) -> dict[str, DashboardApp]:
    """The dashboard under settings.dashboard_path of the metrics port ({}: off)."""
    if not settings.dashboard_path:
        return {}

    def refuse_action() -> str | None:
        if leader is None or leader.is_leader():
            return None
        return (
            "this controller replica is not the leader, so it does not act on rollouts; use "
            "the leader's dashboard or the CLI (rollout pause|resume|abort|promote)"
        )

    source = DashboardSource(
        gateway,
        prometheus_url=settings.prometheus_url,
        namespaces=list(settings.namespaces) or None,
        policies=lambda: controller.policies,
    )
    app = DashboardApp(
        source, allow_actions=settings.dashboard_allow_actions, refuse_action=refuse_action
    )
    return {settings.dashboard_path: app}
