"""Webhook gates' pure parts: payloads, how an answer becomes a GateResult, and how webhook
check values join the provider's measurements into the verdicts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from rollout.analysis.verdicts import CheckOutcome, Measurement, evaluate_measurements
from rollout.controller.gates import (
    GATE_PAYLOAD_VERSION,
    MESSAGE_LIMIT,
    GateOutcome,
    answer_message,
    error_result,
    fetch_webhook_measurements,
    gate_payload,
    merge_webhook_measurements,
    metric_payload,
    result_from_response,
    webhook_checks,
)
from rollout.policy.schema import API_VERSION, MetricCheck, RolloutPolicy


def make_policy(*checks: dict[str, Any], min_requests: int = 10) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat-canary"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "chat-v1", "modelNameOverride": "llama-v1"},
                "canary": {"backend": "chat-v2", "metricSelector": {"model": "v2"}},
                "steps": [10, 50],
                "analysis": {
                    "minRequests": min_requests,
                    "metrics": [{"kind": "error-rate", "max": 0.05}, *checks],
                },
                "gates": [
                    {
                        "name": "evals",
                        "url": "http://evals/run",
                        "when": "pre-rollout",
                        "timeout": "5m",
                    },
                    {
                        "name": "promote",
                        "url": "http://evals/run",
                        "when": "before-promotion",
                        "timeout": "1m",
                    },
                ],
            },
        }
    )


JUDGE = {"kind": "webhook", "name": "judge", "url": "http://j/s", "jsonPath": "$.s", "min": 0.8}


def test_gate_payload_carries_the_rollout_facts() -> None:
    policy = make_policy()
    gate = policy.spec.gates[1]
    payload = gate_payload(policy, gate, step_index=2, stable_weight=50, canary_weight=50)
    assert payload == {
        "version": GATE_PAYLOAD_VERSION,
        "kind": "gate",
        "gate": {"name": "promote", "when": "before-promotion"},
        "rollout": "chat-canary",
        "route": {"namespace": "llm", "name": "chat"},
        "stable": {"backend": "chat-v1", "model": "llama-v1"},
        "canary": {"backend": "chat-v2", "model": None},
        "step": {"index": 2, "weight": 100, "count": 3},
        "weights": {"stable": 50, "canary": 50},
    }
    assert json.loads(json.dumps(payload)) == payload  # JSON as it is


def test_pre_rollout_payload_and_fractional_weights() -> None:
    policy = make_policy()
    payload = gate_payload(
        policy, policy.spec.gates[0], step_index=0, stable_weight=99.5, canary_weight=0.5
    )
    assert payload["step"] == {"index": 0, "weight": 10, "count": 3}
    assert payload["weights"] == {"stable": 99.5, "canary": 0.5}
    assert payload["gate"] == {"name": "evals", "when": "pre-rollout"}


def test_payload_refuses_a_step_the_policy_does_not_have() -> None:
    policy = make_policy()
    with pytest.raises(ValueError, match="step index 3 is outside the policy's 3 steps"):
        gate_payload(policy, policy.spec.gates[0], step_index=3, stable_weight=0, canary_weight=1)


def test_metric_payload_names_the_check() -> None:
    policy = make_policy(JUDGE)
    (check,) = webhook_checks(policy)
    payload = metric_payload(policy, check, step_index=1, stable_weight=75, canary_weight=25)
    assert payload["kind"] == "metric" and payload["metric"] == "judge"
    assert "gate" not in payload
    assert payload["step"] == {"index": 1, "weight": 50, "count": 3}
    with pytest.raises(ValueError, match="not a webhook check"):
        metric_payload(
            policy, policy.spec.analysis.metrics[0], step_index=0, stable_weight=1, canary_weight=0
        )


@pytest.mark.parametrize(
    ("status", "body", "outcome", "message"),
    [
        (200, b"", GateOutcome.PASSED, "HTTP 200"),
        (204, b"", GateOutcome.PASSED, "HTTP 204"),
        (200, b'{"message": "50/50 evals passed"}', GateOutcome.PASSED, "HTTP 200: 50/50 evals"),
        (422, b'{"message": "3 of 50 evals failed"}', GateOutcome.FAILED, "HTTP 422: 3 of 50"),
        (500, b'{"error": "judge crashed"}', GateOutcome.FAILED, "HTTP 500: judge crashed"),
        (400, b'{"error": {"message": "bad step"}}', GateOutcome.FAILED, "HTTP 400: bad step"),
        (503, b"upstream\n  down", GateOutcome.FAILED, "HTTP 503: upstream down"),
        (404, b"", GateOutcome.FAILED, "HTTP 404: no message in the answer"),
        (302, b"", GateOutcome.ERROR, "HTTP 302: redirects are not followed"),
        (101, b"", GateOutcome.ERROR, "unexpected HTTP status 101"),
    ],
)
def test_result_from_response(status: int, body: bytes, outcome: GateOutcome, message: str) -> None:
    result = result_from_response("evals", status, body, seconds=0.25)
    assert result.outcome is outcome
    assert result.message.startswith(message), result.message
    assert result.status == status and result.seconds == 0.25
    assert result.describe() == f"gate evals {outcome.value.lower()}: {result.message}"
    assert [result.passed, result.failed, result.error].count(True) == 1


def test_long_answers_are_cut_for_the_event() -> None:
    text = answer_message(b"x" * 5000)
    assert len(text) == MESSAGE_LIMIT and text.endswith("...")
    assert answer_message(json.dumps({"message": "y" * 999}).encode()).startswith("yyy")
    assert len(answer_message(json.dumps({"message": "y" * 999}).encode())) == MESSAGE_LIMIT
    # A JSON answer without a message field is shown as its text.
    assert answer_message(b'{"ok": false}') == '{"ok": false}'
    assert answer_message(b"\xff\xfe bad bytes\x00\x07") == "\ufffd\ufffd bad bytes"


def test_error_result_is_an_error() -> None:
    result = error_result("evals", "POST http://evals/run: connection refused")
    assert result.error and result.status is None
    assert result.describe() == "gate evals error: POST http://evals/run: connection refused"


# ---------------------------------------------------------------------------------------------
# Webhook check values into the verdicts


class FakeSource:
    def __init__(self, answers: Mapping[str, Measurement]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Mapping[str, object]]] = []

    def fetch(self, check: MetricCheck, payload: Mapping[str, object]) -> Measurement:
        self.calls.append((check.name, payload))
        return self.answers[check.name]


def prometheus_side(
    canary_requests: float | None = 40, error: str | None = None
) -> dict[str, Measurement]:
    """What the provider answers for the policy: the error rate, and the judge check with its
    request count only (see queries.value_signals)."""
    return {
        "error-rate": Measurement(metric="error-rate", canary=0.0, stable=0.0, canary_requests=40),
        "judge": Measurement(metric="judge", canary_requests=canary_requests, error=error),
    }


def verdict_of(policy: RolloutPolicy, fetched: Mapping[str, Measurement], **side: Any) -> Any:
    merged = merge_webhook_measurements(policy, prometheus_side(**side), fetched)
    verdict = evaluate_measurements(policy.spec.analysis, merged)
    return {m.metric: m for m in verdict.metrics}["judge"]


def test_fetch_calls_each_webhook_check_with_its_payload() -> None:
    second = {**JUDGE, "name": "judge-2", "method": "POST"}
    policy = make_policy(JUDGE, second)
    source = FakeSource(
        {"judge": Measurement(metric="judge", canary=0.9), "judge-2": Measurement(metric="judge-2")}
    )
    fetched = fetch_webhook_measurements(
        source, policy, step_index=1, stable_weight=75, canary_weight=25
    )
    assert list(fetched) == ["judge", "judge-2"]
    assert [name for name, _ in source.calls] == ["judge", "judge-2"]
    assert source.calls[1][1]["metric"] == "judge-2"
    assert source.calls[1][1]["weights"] == {"stable": 75, "canary": 25}


def test_a_webhook_value_is_judged_like_any_check() -> None:
    policy = make_policy(JUDGE)
    passing = verdict_of(policy, {"judge": Measurement(metric="judge", canary=0.93)})
    assert passing.outcome is CheckOutcome.PASS and passing.canary == 0.93
    assert passing.stable is None
    failing = verdict_of(policy, {"judge": Measurement(metric="judge", canary=0.42)})
    assert failing.outcome is CheckOutcome.FAIL
    assert failing.reason == "canary 0.42 < min 0.8"


def test_a_webhook_error_is_a_provider_error_not_a_failure() -> None:
    policy = make_policy(JUDGE)
    verdict = verdict_of(policy, {"judge": Measurement(metric="judge", error="GET x: timeout")})
    assert verdict.outcome is CheckOutcome.ERROR
    assert "GET x: timeout" in verdict.reason


def test_min_requests_gates_webhook_checks_with_prometheus_count() -> None:
    policy = make_policy(JUDGE)
    quiet = verdict_of(
        policy, {"judge": Measurement(metric="judge", canary=0.1)}, canary_requests=3
    )
    assert quiet.outcome is CheckOutcome.INCONCLUSIVE
    assert "too little canary traffic" in quiet.reason


def test_the_count_query_failing_is_still_an_error() -> None:
    policy = make_policy(JUDGE)
    verdict = verdict_of(
        policy,
        {"judge": Measurement(metric="judge", canary=0.9)},
        canary_requests=None,
        error="requests query failed: down",
    )
    assert verdict.outcome is CheckOutcome.ERROR and "requests query failed" in verdict.reason


def test_a_webhook_check_nobody_fetched_never_passes() -> None:
    policy = make_policy(JUDGE)
    assert verdict_of(policy, {}).outcome is CheckOutcome.ERROR
    # Without the merge, the provider's own measurement has no value: never a pass either.
    unmerged = evaluate_measurements(policy.spec.analysis, prometheus_side())
    assert {m.metric: m for m in unmerged.metrics}["judge"].outcome is CheckOutcome.INCONCLUSIVE


def test_a_check_the_provider_left_out_takes_the_shared_count() -> None:
    policy = make_policy(JUDGE)
    measured = {"error-rate": prometheus_side()["error-rate"]}
    merged = merge_webhook_measurements(
        policy, measured, {"judge": Measurement(metric="judge", canary=0.9)}
    )
    assert merged["judge"].canary_requests == 40
    assert merged["error-rate"] == measured["error-rate"]
