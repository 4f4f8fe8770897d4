"""The `notifications:` configuration: where a rollout's transitions are sent, and which.

Contract: pure data and validation, no I/O (the policy schema embeds it; the settings read it
from ROLLOUT_NOTIFICATIONS as JSON). A webhook URL is a secret (a Slack incoming webhook URL
is its own credential), so it is never written in a policy: only the environment variable or
the file that holds it.

```yaml
notifications:
  - {type: slack, urlFrom: {env: SLACK_WEBHOOK_URL}, on: [Paused, RolledBack, Aborted, Succeeded]}
  - {type: webhook, urlFrom: {file: /etc/rollout/hook-url}}   # on: all but StepAdvanced
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from rollout.secret_source import SecretSource


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class NotificationType(StrEnum):
    SLACK = "slack"  # a Slack incoming webhook: a Block Kit message
    TEAMS = "teams"  # a Microsoft Teams incoming webhook / workflow: an Adaptive Card
    WEBHOOK = "webhook"  # any HTTP endpoint: the versioned JSON payload


class Transition(StrEnum):
    """What a notification is about (derived from the Event and the new phase)."""

    STARTED = "Started"
    STEP_ADVANCED = "StepAdvanced"  # one per step: opt-in (not in the default `on`)
    PAUSED = "Paused"  # any pause: manual, failed or inconclusive checks, drift, backends
    PROVIDER_ERRORS = "ProviderErrors"  # a pause because Prometheus could not be asked
    RESUMED = "Resumed"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUCCEEDED = "Succeeded"  # promoted to 100%, by the analysis or by the promote annotation


DEFAULT_TRANSITIONS: tuple[Transition, ...] = tuple(
    t for t in Transition if t is not Transition.STEP_ADVANCED
)


class UrlSource(SecretSource):
    """Where the receiver's URL is read from, at each delivery (a rotated secret is used at
    once): exactly one of an environment variable or a file (its content, stripped)."""

    def resolve(self, environ: Mapping[str, str] | None = None) -> str:
        """The URL. Raises LookupError naming the source (not the value) when it is missing."""
        if self.env is not None:
            value = (os.environ if environ is None else environ).get(self.env, "").strip()
            if not value:
                raise LookupError(f"environment variable {self.env} is not set")
        else:
            assert self.file is not None
            try:
                value = Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise LookupError(f"cannot read {self.file}: {exc.strerror or exc}") from None
            if not value:
                raise LookupError(f"{self.file} is empty")
        if not value.startswith(("http://", "https://")):
            raise LookupError(f"the URL from {self.describe()} is not http(s)")
        return value


class NotificationSpec(_Spec):
    type: NotificationType
    url_from: UrlSource
    on: Annotated[tuple[Transition, ...], Field(min_length=1)] = Field(
        default=DEFAULT_TRANSITIONS,
        description="Transitions to send; default: all but StepAdvanced.",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: object) -> object:
        # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    def wants(self, transition: Transition) -> bool:
        # A pause for provider errors is a pause: `on: [Paused]` hears it too.
        return transition in self.on or (
            transition is Transition.PROVIDER_ERRORS and Transition.PAUSED in self.on
        )

    def describe(self) -> str:
        return f"{self.type.value} ({self.url_from.describe()})"
