"""Webhook gates and `kind: webhook` checks: their payloads and how an answer is read.

Contract: pure (no I/O, no clock). The HTTP adapter (`rollout.controller.runtime.http_gates`)
sends the payloads built here and hands the status and body back to `result_from_response`;
the state machine reads a `GateResult`:

- PASSED: the endpoint answered 2xx;
- FAILED: it answered 4xx/5xx: a failed check, with the answer's message (for the Event);
- ERROR: no usable answer (timeout, connection refused, bad URL, a redirect, an unreadable
  token): a provider error, so the rollout holds and never rolls back for it.

The payload (`gate_payload`, `metric_payload`) is one versioned JSON object::

    {"version": "rollout.model-registry.io/gate/v1", "kind": "gate",
     "gate": {"name": "evals", "when": "pre-rollout"},
     "rollout": "chat-canary", "route": {"namespace": "llm", "name": "chat"},
     "stable": {"backend": "chat-v1", "model": "llama-v1"},
     "canary": {"backend": "chat-v2", "model": "llama-v2"},
     "step": {"index": 0, "weight": 10, "count": 3},
     "weights": {"stable": 100, "canary": 0}}

`step` is the step the gate guards (pre-rollout: the first, before-step: the one about to be
entered, before-promotion: the 100% step); `weights` are the route's weights when it is
called. A webhook check's payload has `"kind": "metric"` and `"metric": <check name>` instead
of `gate`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from rollout.analysis.verdicts import Measurement
from rollout.policy.schema import GateSpec, MetricCheck, MetricKind, RolloutPolicy, Variant

GATE_PAYLOAD_VERSION: Final = "rollout.model-registry.io/gate/v1"
# What of an answer reaches a GateResult's message (and so an Event).
MESSAGE_LIMIT: Final = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class GateOutcome(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    ERROR = "Error"


@dataclass(frozen=True)
class GateResult:
    """One gate call's outcome and why (never a secret: no token, no URL query string)."""

    gate: str
    outcome: GateOutcome
    message: str
    status: int | None = None  # the HTTP status, when there was an answer
    seconds: float | None = None  # how long the call took

    @property
    def passed(self) -> bool:
        return self.outcome is GateOutcome.PASSED

    @property
    def failed(self) -> bool:
        return self.outcome is GateOutcome.FAILED

    @property
    def error(self) -> bool:
        return self.outcome is GateOutcome.ERROR

    def describe(self) -> str:
        """One line for Events and logs, e.g. `gate evals failed: HTTP 422: 3 of 50 failed`."""
        return f"gate {self.gate} {self.outcome.value.lower()}: {self.message}"


# ---------------------------------------------------------------------------------------------
# Payloads


def gate_payload(
    policy: RolloutPolicy,
    gate: GateSpec,
    *,
    step_index: int,
    stable_weight: float,
    canary_weight: float,
) -> dict[str, object]:
    """The JSON body POSTed to a gate (see the module doc for `step` and `weights`)."""
    return {
        "version": GATE_PAYLOAD_VERSION,
        "kind": "gate",
        "gate": {"name": gate.name, "when": gate.when.value},
        **_rollout_facts(policy, step_index, stable_weight, canary_weight),
    }


def metric_payload(
    policy: RolloutPolicy,
    check: MetricCheck,
    *,
    step_index: int,
    stable_weight: float,
    canary_weight: float,
) -> dict[str, object]:
    """The JSON body POSTed by a `kind: webhook, method: POST` check."""
    if check.kind is not MetricKind.WEBHOOK:
        raise ValueError(f"metric {check.name} is not a webhook check (kind {check.kind.value})")
    return {
        "version": GATE_PAYLOAD_VERSION,
        "kind": "metric",
        "metric": check.name,
        **_rollout_facts(policy, step_index, stable_weight, canary_weight),
    }


def _rollout_facts(
    policy: RolloutPolicy, step_index: int, stable_weight: float, canary_weight: float
) -> dict[str, object]:
    spec = policy.spec
    if not 0 <= step_index < len(spec.steps):
        raise ValueError(f"step index {step_index} is outside the policy's {len(spec.steps)} steps")
    return {
        "rollout": policy.name,
        "route": {"namespace": spec.route.namespace, "name": spec.route.name},
        "stable": _variant(spec.stable),
        "canary": _variant(spec.canary),
        "step": {
            "index": step_index,
            "weight": spec.steps[step_index].weight,
            "count": len(spec.steps),
        },
        "weights": {"stable": stable_weight, "canary": canary_weight},
    }


def _variant(variant: Variant) -> dict[str, object]:
    return {"backend": variant.backend, "model": variant.model_name_override}


# ---------------------------------------------------------------------------------------------
# Answers


def result_from_response(
    gate: str, status: int, body: bytes, *, seconds: float | None = None
) -> GateResult:
    """A gate's answer: 2xx passes, 4xx/5xx fails with the answer's message, anything else
    (1xx, a 3xx redirect, which is not followed) is an ERROR: no verdict was given."""
    message = answer_message(body)
    if 200 <= status < 300:
        text = f"HTTP {status}" + (f": {message}" if message else "")
        return GateResult(gate, GateOutcome.PASSED, text, status, seconds)
    if 400 <= status < 600:
        text = f"HTTP {status}: {message or 'no message in the answer'}"
        return GateResult(gate, GateOutcome.FAILED, text, status, seconds)
    if 300 <= status < 400:
        text = f"HTTP {status}: redirects are not followed; point the gate at the final URL"
        return GateResult(gate, GateOutcome.ERROR, text, status, seconds)
    return GateResult(gate, GateOutcome.ERROR, f"unexpected HTTP status {status}", status, seconds)


def error_result(gate: str, message: str, *, seconds: float | None = None) -> GateResult:
    """A call that got no answer (timeout, connection error, bad URL, unreadable token)."""
    return GateResult(gate, GateOutcome.ERROR, _clean(message), None, seconds)


def answer_message(body: bytes) -> str:
    """What an answer says, for an Event: a JSON object's "message" or "error" (a string, or
    an object with a "message"), else the body's text; control characters collapsed,
    at most MESSAGE_LIMIT characters."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        document = json.loads(text)
    except ValueError:
        return _clean(text)
    if isinstance(document, dict):
        for key in ("message", "error", "detail", "reason"):
            value = document.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return _clean(value)
    return _clean(text)


def _clean(text: str) -> str:
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Webhook checks: fetching every one of a rollout's


class WebhookMetricSource(Protocol):
    def fetch(self, check: MetricCheck, payload: Mapping[str, object]) -> Measurement:
        """The canary value of one `kind: webhook` check (stable is always None), or
        `Measurement.error` when the endpoint gave no usable number; never raises."""
        ...


def webhook_checks(policy: RolloutPolicy) -> tuple[MetricCheck, ...]:
    """The policy's `kind: webhook` checks (empty: nothing to fetch)."""
    return tuple(c for c in policy.spec.analysis.metrics if c.kind is MetricKind.WEBHOOK)


def fetch_webhook_measurements(
    source: WebhookMetricSource,
    policy: RolloutPolicy,
    *,
    step_index: int,
    stable_weight: float,
    canary_weight: float,
) -> dict[str, Measurement]:
    """Each webhook check's measurement, by check name, one call each, in policy order."""
    return {
        check.name: source.fetch(
            check,
            metric_payload(
                policy,
                check,
                step_index=step_index,
                stable_weight=stable_weight,
                canary_weight=canary_weight,
            ),
        )
        for check in webhook_checks(policy)
    }


def merge_webhook_measurements(
    policy: RolloutPolicy,
    measured: Mapping[str, Measurement],
    fetched: Mapping[str, Measurement],
) -> dict[str, Measurement]:
    """The provider's measurements with each webhook check's value put in.

    The metrics provider counts a webhook check's canary requests (for minRequests) but has
    no value for it; `fetched` has the value (or the call's error). A webhook check missing
    from `fetched` is an ERROR (never judged as a pass); one missing from `measured` takes
    the canary request count of any other check of the rollout (they all share one count).
    """
    merged = dict(measured)
    shared_count = next(
        (m.canary_requests for m in measured.values() if m.canary_requests is not None), None
    )
    for check in webhook_checks(policy):
        value = fetched.get(check.name)
        base = measured.get(check.name)
        if value is None:
            merged[check.name] = Measurement(
                metric=check.name, error="the webhook was not called for this check"
            )
            continue
        errors = [e for e in (value.error, base.error if base is not None else None) if e]
        merged[check.name] = Measurement(
            metric=check.name,
            canary=value.canary,
            stable=None,
            canary_requests=base.canary_requests if base is not None else shared_count,
            error="; ".join(dict.fromkeys(errors)) or None,
        )
    return merged
