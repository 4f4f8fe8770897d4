"""The messages sent for a transition (pure: no I/O, no clock reads).

Every receiver gets the same facts, the ones the Event on the route carries: the route, the
phase, the step and its weights, the failing metrics against their thresholds, the Event's
reason and message, and a link to the rollout's dashboard page when one is configured.

- webhook: `Notice.to_json()`, versioned (`apiVersion`), one flat object;
- slack: a Block Kit message (`text` is the fallback shown in notifications);
- teams: an Adaptive Card in a `message` attachment (Teams incoming webhooks and workflows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from rollout.controller.state import (
    EmitEvent,
    EventReason,
    PauseCause,
    RolloutPhase,
    RolloutState,
)
from rollout.notifications.spec import NotificationType, Transition
from rollout.policy.schema import RolloutPolicy

PAYLOAD_API_VERSION: Final = "rollout.model-registry.io/notification/v1"
PAYLOAD_KIND: Final = "RolloutNotification"

_EMOJI: Final = {
    Transition.STARTED: ":rocket:",
    Transition.STEP_ADVANCED: ":arrow_up:",
    Transition.PAUSED: ":double_vertical_bar:",
    Transition.PROVIDER_ERRORS: ":warning:",
    Transition.RESUMED: ":arrow_forward:",
    Transition.ROLLED_BACK: ":rewind:",
    Transition.ABORTED: ":octagonal_sign:",
    Transition.SUCCEEDED: ":white_check_mark:",
}
_DIRECT: Final = {
    EventReason.ROLLOUT_STARTED: Transition.STARTED,
    EventReason.STEP_ADVANCED: Transition.STEP_ADVANCED,
    EventReason.ROLLOUT_SUCCEEDED: Transition.SUCCEEDED,
    EventReason.PROMOTED: Transition.SUCCEEDED,
    EventReason.ROLLED_BACK: Transition.ROLLED_BACK,
    EventReason.ABORTED: Transition.ABORTED,
    EventReason.RESUMED: Transition.RESUMED,
}
_PAUSING: Final = frozenset(
    {EventReason.PAUSED, EventReason.BACKENDS_CHANGED, EventReason.WEIGHTS_DRIFTED}
)


def classify(event: EmitEvent, state: RolloutState) -> Transition | None:
    """The transition an Event reports, or None for Events that are not transitions (a held
    check, a policy edit, the gateway's holds): those are in the Events, not notified."""
    direct = _DIRECT.get(event.reason)
    if direct is not None:
        return direct
    if event.reason in _PAUSING and state.phase is RolloutPhase.PAUSED:
        if state.pause_cause is PauseCause.PROVIDER_ERRORS:
            return Transition.PROVIDER_ERRORS
        return Transition.PAUSED
    return None


def dashboard_link(base_url: str, namespace: str, route: str) -> str | None:
    """The rollout's page on the dashboard served at `base_url` ("" : none)."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/rollouts/{quote(namespace, safe='')}/{quote(route, safe='')}"


def _number(value: float | None, unit: str = "") -> str | None:
    if value is None or math.isnan(value):
        return None
    return f"{value:.4g} {unit}".strip()


@dataclass(frozen=True)
class Notice:
    """One transition of one rollout, as every receiver is told it."""

    transition: Transition
    policy: str
    namespace: str
    route: str
    state: RolloutState
    steps: tuple[float, ...]
    event_reason: str
    event_type: str
    message: str  # the Event's message, verbatim
    time: datetime
    dashboard_url: str | None = None

    @classmethod
    def of(
        cls,
        transition: Transition,
        policy: RolloutPolicy,
        event: EmitEvent,
        message: str,
        state: RolloutState,
        now: datetime,
        dashboard_base_url: str = "",
    ) -> Notice:
        route = policy.spec.route
        return cls(
            transition=transition,
            policy=policy.name,
            namespace=route.namespace,
            route=route.name,
            state=state,
            steps=policy.spec.weights,
            event_reason=event.reason.value,
            event_type=event.type.value,
            message=message,
            time=now,
            dashboard_url=dashboard_link(dashboard_base_url, route.namespace, route.name),
        )

    @property
    def step_text(self) -> str:
        index = min(self.state.step_index, len(self.steps) - 1)
        return f"step {index + 1} of {len(self.steps)} ({self.steps[index]}%)"

    def failing_metrics(self) -> list[dict[str, Any]]:
        verdict = self.state.last_analysis
        if verdict is None or self.transition not in (
            Transition.PAUSED,
            Transition.PROVIDER_ERRORS,
            Transition.ROLLED_BACK,
        ):
            return []
        return [
            {
                "metric": m.metric,
                "outcome": m.outcome.value,
                "canary": None if m.canary is None or math.isnan(m.canary) else m.canary,
                "stable": None if m.stable is None or math.isnan(m.stable) else m.stable,
                "threshold": m.threshold,
                "unit": m.unit,
                "reason": m.reason,
            }
            for m in verdict.metrics
            if m.outcome.value != "Pass"
        ]

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body (versioned: fields are only ever added in v1)."""
        s = self.state
        return {
            "apiVersion": PAYLOAD_API_VERSION,
            "kind": PAYLOAD_KIND,
            "transition": self.transition.value,
            "time": self.time.isoformat(),
            "rollout": self.policy,
            "route": {"namespace": self.namespace, "name": self.route},
            "phase": s.phase.value,
            "step": {
                "index": s.step_index,
                "of": len(self.steps),
                "weight": self.steps[min(s.step_index, len(self.steps) - 1)],
            },
            "weights": {
                "stable": {"backend": s.stable_backend, "weight": s.stable_percent},
                "canary": {"backend": s.canary_backend, "weight": s.canary_percent},
            },
            "reason": s.reason,
            "event": {
                "reason": self.event_reason,
                "type": self.event_type,
                "message": self.message,
            },
            "failingMetrics": self.failing_metrics(),
            "dashboardUrl": self.dashboard_url,
        }

    def headline(self) -> str:
        return (
            f"{self.transition.value}: rollout {self.policy} on "
            f"{self.namespace}/{self.route} ({self.state.phase.value})"
        )

    def _facts(self) -> list[tuple[str, str]]:
        s = self.state
        return [
            ("Route", f"{self.namespace}/{self.route}"),
            ("Phase", s.phase.value),
            ("Step", self.step_text),
            (
                "Weights",
                f"{s.stable_backend} {s.stable_percent:g}% / {s.canary_backend} "
                f"{s.canary_percent:g}%",
            ),
        ]

    def _failing_lines(self) -> list[str]:
        lines = []
        for m in self.failing_metrics():
            values = f"canary {_number(m['canary'], m['unit']) or 'no data'}"
            stable = _number(m["stable"], m["unit"])
            if stable is not None:
                values += f", stable {stable}"
            lines.append(f"{m['metric']} {m['outcome'].lower()}: {values} ({m['threshold']})")
        return lines

    def to_slack(self) -> dict[str, Any]:
        """A Slack Block Kit message (incoming webhook)."""
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": self.headline()[:150], "emoji": True},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                    for name, value in self._facts()
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": self.state.reason[:2900]}},
        ]
        failing = self._failing_lines()
        if failing:
            text = "\n".join(f"• `{line}`" for line in failing)
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*Checks*\n{text}"[:2900]}}
            )
        if self.dashboard_url:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open the dashboard"},
                            "url": self.dashboard_url,
                        }
                    ],
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Event {self.event_reason} ({self.event_type}) at "
                        f"{self.time.isoformat(timespec='seconds')}",
                    }
                ],
            }
        )
        return {"text": f"{_EMOJI[self.transition]} {self.headline()}", "blocks": blocks}

    def to_teams(self) -> dict[str, Any]:
        """A Microsoft Teams message with an Adaptive Card."""
        body: list[dict[str, Any]] = [
            {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": self.headline()},
            {
                "type": "FactSet",
                "facts": [{"title": name, "value": value} for name, value in self._facts()],
            },
            {"type": "TextBlock", "wrap": True, "text": self.state.reason},
        ]
        body.extend(
            {"type": "TextBlock", "wrap": True, "fontType": "Monospace", "text": line}
            for line in self._failing_lines()
        )
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
        }
        if self.dashboard_url:
            card["actions"] = [
                {"type": "Action.OpenUrl", "title": "Open the dashboard", "url": self.dashboard_url}
            ]
        return {
            "type": "message",
            "attachments": [
                {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
            ],
        }

    def body_for(self, kind: NotificationType) -> dict[str, Any]:
        if kind is NotificationType.SLACK:
            return self.to_slack()
        if kind is NotificationType.TEAMS:
            return self.to_teams()
        return self.to_json()
