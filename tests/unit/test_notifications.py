"""Notifications: config validation, payloads, and delivery to real local HTTP receivers (one
that answers, one that answers 500, one that hangs, one that is unreachable)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome, MetricVerdict
from rollout.config import ControllerSettings
from rollout.controller.ports import ObjectRef
from rollout.controller.state import (
    EmitEvent,
    EventReason,
    EventType,
    PauseCause,
    RolloutPhase,
    RolloutState,
)
from rollout.notifications.payloads import PAYLOAD_API_VERSION, Notice, classify
from rollout.notifications.sender import WebhookNotifier
from rollout.notifications.spec import NotificationSpec, Transition
from rollout.policy.loading import parse_policy_text
from rollout.policy.schema import RolloutPolicy

POLICY = """\
apiVersion: rollout.model-registry.io/v1alpha1
kind: RolloutPolicy
metadata: {name: chat}
spec:
  route: {namespace: llm, name: chat}
  stable: {backend: chat-v1, modelNameOverride: m1}
  canary: {backend: chat-v2, modelNameOverride: m2}
  steps: [10, 50]
  analysis:
    interval: 1m
    window: 5m
    metrics: [{kind: error-rate, max: 0.05}]
NOTIFICATIONS
"""
ABOUT = ObjectRef("aigateway.envoyproxy.io/v1alpha1", "AIGatewayRoute", "llm", "chat")


def policy(notifications: str = "") -> RolloutPolicy:
    policies, errors = parse_policy_text(POLICY.replace("NOTIFICATIONS", notifications), Path("p"))
    assert errors == [], [str(e) for e in errors]
    return policies[0]


def rolled_back_state() -> RolloutState:
    verdict = AnalysisVerdict(
        outcome=CheckOutcome.FAIL,
        reason="error-rate",
        metrics=(
            MetricVerdict(
                metric="error-rate",
                outcome=CheckOutcome.FAIL,
                canary=0.25,
                stable=0.002,
                threshold="canary <= 0.05",
                reason="0.25 > 0.05",
                unit="ratio",
            ),
        ),
    )
    return RolloutState(
        policy_name="chat",
        policy_hash="x",
        stable_backend="chat-v1",
        canary_backend="chat-v2",
        phase=RolloutPhase.ROLLED_BACK,
        step_index=1,
        stable_weight=100,
        canary_weight=0,
        reason="rolled back at step 2 of 3 (50%) after 2/2 failed checks: error-rate",
        last_analysis=verdict,
    )


ROLLED_BACK = EmitEvent(
    reason=EventReason.ROLLED_BACK, message="rolled back ...", type=EventType.WARNING
)


# ---- config ----------------------------------------------------------------------------------


def test_policy_notifications_parse_with_the_yaml_on_key() -> None:
    p = policy(
        "  notifications:\n"
        "    - {type: slack, urlFrom: {env: SLACK_WEBHOOK_URL}, on: [Paused, RolledBack]}\n"
        "    - {type: webhook, urlFrom: {file: /etc/rollout/hook-url}}\n"
    )
    slack, hook = p.spec.notifications
    assert slack.on == (Transition.PAUSED, Transition.ROLLED_BACK)
    assert hook.wants(Transition.STARTED) and not hook.wants(Transition.STEP_ADVANCED)
    assert slack.wants(Transition.PROVIDER_ERRORS)  # a pause for provider errors is a pause


def test_notifications_do_not_change_the_fingerprint() -> None:
    with_hooks = policy("  notifications: [{type: webhook, urlFrom: {env: HOOK}}]\n")
    assert with_hooks.fingerprint() == policy().fingerprint()


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("{type: slak, urlFrom: {env: X}}", "spec.notifications[0].type", "'slack'"),
        ("{type: slack, urlFrom: {env: X, file: /a}}", "spec.notifications[0].urlFrom", "exactly"),
        ("{type: slack, urlFrom: {file: rel/path}}", "spec.notifications[0].urlFrom.file", "abs"),
        ("{type: slack, urlFrom: {env: 'A-B'}}", "spec.notifications[0].urlFrom.env", "variable"),
        ("{type: slack, url: 'https://hooks'}", "spec.notifications[0].url", "Extra"),
        ("{type: slack, urlFrom: {env: X}, on: [Done]}", "spec.notifications[0].on[0]", "Started"),
    ],
)
def test_a_malformed_notification_names_file_line_and_field(
    entry: str, field: str, message: str
) -> None:
    text = POLICY.replace("NOTIFICATIONS", f"  notifications:\n    - {entry}\n")
    _, errors = parse_policy_text(text, Path("p.yaml"))
    matching = [e for e in errors if e.field_path == field]
    assert matching, [str(e) for e in errors]
    assert message in matching[0].message and matching[0].line == 14
    assert str(matching[0]).startswith('p.yaml:14: policy "chat": ' + field)


def test_malformed_controller_defaults_fail_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROLLOUT_NOTIFICATIONS", '[{"type": "teams", "urlFrom": {}}]')
    with pytest.raises(ValidationError) as info:
        ControllerSettings()
    assert info.value.errors()[0]["loc"] == ("notifications", 0, "urlFrom")


# ---- payloads --------------------------------------------------------------------------------


def test_transitions_are_classified_from_the_event_and_the_new_phase() -> None:
    state = rolled_back_state()
    assert classify(ROLLED_BACK, state) is Transition.ROLLED_BACK
    held = EmitEvent(reason=EventReason.ANALYSIS_FAILED, message="1/2 failed")
    assert classify(held, state) is None  # a held check is an Event, not a transition
    paused = state.model_copy(
        update={"phase": RolloutPhase.PAUSED, "pause_cause": PauseCause.PROVIDER_ERRORS}
    )
    assert classify(EmitEvent(reason=EventReason.PAUSED, message="m"), paused) is (
        Transition.PROVIDER_ERRORS
    )


def test_the_payloads_carry_route_step_weights_and_the_failing_metric() -> None:
    notice = Notice.of(
        Transition.ROLLED_BACK,
        policy(),
        ROLLED_BACK,
        "chat: rolled back ...",
        rolled_back_state(),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "https://rollouts.example/dash/",
    )
    body = notice.to_json()
    assert body["apiVersion"] == PAYLOAD_API_VERSION and body["transition"] == "RolledBack"
    assert body["route"] == {"namespace": "llm", "name": "chat"}
    assert body["weights"]["canary"] == {"backend": "chat-v2", "weight": 0}
    assert body["step"] == {"index": 1, "of": 3, "weight": 50}
    assert body["event"]["message"] == "chat: rolled back ..."
    assert body["failingMetrics"][0]["threshold"] == "canary <= 0.05"
    assert body["dashboardUrl"] == "https://rollouts.example/dash/rollouts/llm/chat"
    slack = json.dumps(notice.to_slack())
    assert "error-rate fail: canary 0.25 ratio, stable 0.002 ratio (canary <= 0.05)" in slack
    assert "https://rollouts.example/dash/rollouts/llm/chat" in slack and "step 2 of 3" in slack
    teams = notice.to_teams()
    assert teams["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"


# ---- delivery --------------------------------------------------------------------------------


class Receiver:
    """A local HTTP receiver: answers `status`, or hangs for `hang` seconds first."""

    def __init__(self, status: int = 200, hang: float = 0.0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.requests += 1
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if hang:
                    time.sleep(hang)
                receiver.bodies.append(body)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    made = {"ok": Receiver(), "fails": Receiver(500), "hangs": Receiver(hang=3.0)}
    yield made
    for receiver in made.values():
        receiver.close()


def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nobody listens there now


def counted(registry: CollectorRegistry, kind: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "rollout_notifications_total", {"type": kind, "outcome": outcome}
    )
    return value or 0.0


def test_delivery_survives_receivers_that_fail_hang_or_are_unreachable(
    receivers: dict[str, Receiver],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOOK_OK", receivers["ok"].url)
    monkeypatch.setenv("HOOK_FAILS", receivers["fails"].url)
    monkeypatch.setenv("HOOK_HANGS", receivers["hangs"].url)
    monkeypatch.setenv("HOOK_NOBODY", unreachable_url())
    specs = [
        NotificationSpec.model_validate({"type": kind, "urlFrom": {"env": env}})
        for kind, env in (
            ("slack", "HOOK_OK"),
            ("webhook", "HOOK_FAILS"),
            ("teams", "HOOK_HANGS"),
            ("webhook", "HOOK_NOBODY"),
            ("webhook", "HOOK_UNSET"),
        )
    ]
    registry = CollectorRegistry()
    notifier = WebhookNotifier(
        specs, registry=registry, timeout=0.5, attempts=2, backoff=0.05, workers=2
    )
    notifier.start()
    try:
        started = time.monotonic()
        notifier.notify(policy(), ABOUT, ROLLED_BACK, "chat: rolled back", rolled_back_state())
        assert time.monotonic() - started < 0.1  # queued, never delivered on the tick's thread
        assert notifier.wait_idle(timeout=15)
    finally:
        notifier.stop()
    assert [b["text"][:30] for b in receivers["ok"].bodies] == [":rewind: RolledBack: rollout c"]
    assert receivers["fails"].requests == 2  # retried once
    assert receivers["hangs"].requests == 2  # each attempt timed out after 0.5s
    assert counted(registry, "slack", "sent") == 1
    assert counted(registry, "webhook", "failed") == 2  # 500 and unreachable
    assert counted(registry, "teams", "failed") == 1
    assert counted(registry, "webhook", "skipped") == 1  # HOOK_UNSET is not set
    logged = capsys.readouterr()
    assert "s3cret" not in logged.out + logged.err  # URLs are secrets: never logged


def test_a_full_queue_drops_and_counts_instead_of_blocking(receivers: dict[str, Receiver]) -> None:
    registry = CollectorRegistry()
    spec = NotificationSpec.model_validate({"type": "webhook", "urlFrom": {"env": "UNUSED"}})
    notifier = WebhookNotifier([spec], registry=registry, queue_size=2)  # not started
    for _ in range(5):
        notifier.notify(policy(), ABOUT, ROLLED_BACK, "m", rolled_back_state())
    assert counted(registry, "webhook", "dropped") == 3


def test_a_policy_adds_its_own_receivers_to_the_defaults(
    receivers: dict[str, Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_OK", receivers["ok"].url)
    own = policy(
        "  notifications: [{type: webhook, urlFrom: {env: HOOK_OK}, on: [StepAdvanced]}]\n"
    )
    notifier = WebhookNotifier([], registry=CollectorRegistry(), timeout=2)
    notifier.start()
    try:
        advanced = EmitEvent(reason=EventReason.STEP_ADVANCED, message="now at step 2")
        state = rolled_back_state().model_copy(update={"phase": RolloutPhase.PROGRESSING})
        notifier.notify(own, ABOUT, advanced, "chat: now at step 2", state)
        notifier.notify(own, ABOUT, ROLLED_BACK, "not wanted", rolled_back_state())
        assert notifier.wait_idle(timeout=10)
    finally:
        notifier.stop()
    assert [b["transition"] for b in receivers["ok"].bodies] == ["StepAdvanced"]
