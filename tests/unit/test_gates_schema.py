"""The policy schema of webhook gates (`spec.gates`) and `kind: webhook` checks, and the tiny
JSONPath evaluator those checks read their number with."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rollout.analysis.provider import AnalysisRequest
from rollout.analysis.queries import plan_queries
from rollout.policy import format_field_path, load_policy_paths
from rollout.policy.jsonpath import JsonPathError, parse_json_path
from rollout.policy.schema import (
    API_VERSION,
    GateWhen,
    HttpMethod,
    MetricCheck,
    MetricKind,
    RolloutPolicy,
)

EVALS_GATE: dict[str, Any] = {
    "name": "evals",
    "url": "http://evals.ml.svc/run",
    "when": "pre-rollout",
    "timeout": "5m",
}
JUDGE_CHECK: dict[str, Any] = {
    "kind": "webhook",
    "name": "judge-score",
    "url": "https://judge.ml.svc/score",
    "jsonPath": "$.results[0].value",
    "min": 0.8,
}


def policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "route": {"namespace": "llm", "name": "chat"},
        "stable": {"backend": "chat-v1", "modelNameOverride": "llama-v1"},
        "canary": {"backend": "chat-v2", "modelNameOverride": "llama-v2"},
        "steps": [10, 50],
        "analysis": {"metrics": [{"kind": "error-rate", "max": 0.05}]},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "RolloutPolicy",
        "metadata": {"name": "chat-canary"},
        "spec": {**base, **spec},
    }


def with_metrics(*checks: dict[str, Any]) -> dict[str, Any]:
    return policy(analysis={"metrics": [{"kind": "error-rate", "max": 0.05}, *checks]})


def errors(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        RolloutPolicy.model_validate(document)
    return {format_field_path(e["loc"]): e["msg"] for e in caught.value.errors()}


# ---------------------------------------------------------------------------------------------
# Gates


def test_a_gate_with_defaults() -> None:
    parsed = RolloutPolicy.model_validate(policy(gates=[EVALS_GATE]))
    (gate,) = parsed.spec.gates
    assert gate.name == "evals"
    assert gate.url == "http://evals.ml.svc/run"
    assert gate.when is GateWhen.PRE_ROLLOUT
    assert gate.timeout == timedelta(minutes=5)
    assert gate.method == "POST"
    assert gate.auth is None
    assert parsed.spec.gates_at(GateWhen.PRE_ROLLOUT) == (gate,)
    assert parsed.spec.gates_at(GateWhen.BEFORE_STEP) == ()


def test_gates_by_when_keep_policy_order() -> None:
    gates = [
        {**EVALS_GATE, "name": "a", "when": "before-step"},
        {**EVALS_GATE, "name": "b", "when": "before-promotion"},
        {**EVALS_GATE, "name": "c", "when": "before-step", "method": "post"},
    ]
    spec = RolloutPolicy.model_validate(policy(gates=gates)).spec
    assert [g.name for g in spec.gates_at(GateWhen.BEFORE_STEP)] == ["a", "c"]
    assert [g.name for g in spec.gates_at(GateWhen.BEFORE_PROMOTION)] == ["b"]


def test_bearer_token_from_env_or_file() -> None:
    gates = [
        {**EVALS_GATE, "name": "a", "auth": {"bearerTokenFrom": {"env": "EVALS_TOKEN"}}},
        {**EVALS_GATE, "name": "b", "auth": {"bearerTokenFrom": {"file": "/var/run/tok"}}},
    ]
    a, b = RolloutPolicy.model_validate(policy(gates=gates)).spec.gates
    assert a.auth is not None and a.auth.bearer_token_from.describe() == "env EVALS_TOKEN"
    assert b.auth is not None and b.auth.bearer_token_from.describe() == "file /var/run/tok"


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"url": "ftp://evals.ml.svc/run"}, "url", "only http and https URLs are allowed"),
        ({"url": "file:///etc/passwd"}, "url", "only http and https URLs are allowed"),
        ({"url": "evals.ml.svc/run"}, "url", "only http and https URLs are allowed"),
        ({"url": "http:///run"}, "url", "has no host"),
        ({"url": "http://u:pw@evals.ml.svc/run"}, "url", "carries credentials"),
        ({"timeout": None}, "timeout", "a gate needs a timeout"),
        ({"timeout": "5"}, "timeout", "expected a duration"),
        ({"timeout": "2h"}, "timeout", "longer than 1h"),
        ({"when": "after-promotion"}, "when", "'pre-rollout', 'before-step' or"),
        ({"method": "GET"}, "method", "a gate is POSTed"),
        ({"auth": {"bearerToken": "s3cret"}}, "auth", "secrets are never written in a policy"),
        ({"auth": {"bearerTokenFrom": {"env": "A", "file": "/t"}}}, "auth.bearerTokenFrom", ""),
        ({"auth": {"bearerTokenFrom": {"file": "token.txt"}}}, "auth.bearerTokenFrom.file", ""),
        ({"auth": {"bearerTokenFrom": {"env": "NOT-A-NAME"}}}, "auth.bearerTokenFrom.env", ""),
        ({"auth": {"bearerTokenFrom": {"value": "s3cret"}}}, "auth.bearerTokenFrom.value", ""),
        ({"name": "Evals!"}, "name", "String should match pattern"),
    ],
)
def test_bad_gates_are_refused_at_their_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    gate = {**EVALS_GATE, **change}
    if change.get("timeout", "") is None:
        del gate["timeout"]
    found = errors(policy(gates=[gate]))
    key = f"spec.gates[0].{path}"
    assert key in found, found
    assert message in found[key]


def test_gate_names_are_unique() -> None:
    found = errors(policy(gates=[EVALS_GATE, {**EVALS_GATE, "when": "before-step"}]))
    assert found == {
        "spec.gates": 'Value error, gate name "evals" is used twice; set distinct names'
    }


def test_gate_errors_name_file_line_policy_and_field(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {name: gated}
        spec:
          route: {namespace: llm, name: chat}
          stable: {backend: chat-v1, modelNameOverride: v1}
          canary: {backend: chat-v2, modelNameOverride: v2}
          steps: [10, 50]
          analysis:
            metrics:
              - {kind: error-rate, max: 0.05}
              - kind: webhook
                url: http://judge.ml.svc/score
                jsonPath: $.score
                maxRatio: 1.1
          gates:
            - name: evals
              url: http://evals.ml.svc/run
              when: pre-rollout
            - name: smoke
              url: gopher://smoke.ml.svc/
              when: before-step
              timeout: 30s
        """
    )
    path = tmp_path / "gated.yaml"
    path.write_text(text)
    result = load_policy_paths([path])
    assert result.policies == []
    found = {(e.field_path, e.line): str(e) for e in result.errors}
    assert set(found) == {
        ("spec.analysis.metrics[1].maxRatio", 15),
        ("spec.gates[0].timeout", 17),
        ("spec.gates[1].url", 21),
    }
    assert found[("spec.gates[0].timeout", 17)] == (
        f'{path}:17: policy "gated": spec.gates[0].timeout: a gate needs a timeout (e.g. 5m): '
        "without one an endpoint that never answers would hold the rollout forever"
    )
    assert (
        "only http and https URLs are allowed (scheme 'gopher')" in found[("spec.gates[1].url", 21)]
    )
    assert (
        "relative thresholds cannot be judged" in found[("spec.analysis.metrics[1].maxRatio", 15)]
    )


def test_no_gates_leave_the_fingerprint_alone() -> None:
    plain = RolloutPolicy.model_validate(policy())
    empty = RolloutPolicy.model_validate(policy(gates=[]))
    gated = RolloutPolicy.model_validate(policy(gates=[EVALS_GATE]))
    slower = RolloutPolicy.model_validate(policy(gates=[{**EVALS_GATE, "timeout": "10m"}]))
    assert plain.fingerprint() == empty.fingerprint()
    assert len({plain.fingerprint(), gated.fingerprint(), slower.fingerprint()}) == 3
    # The fingerprint this policy had before gates existed (as in test_policy.py).
    assert plain.fingerprint() == "caabbace50a19645"


def _fingerprinted(parsed: RolloutPolicy) -> dict[str, Any]:
    from rollout.policy.schema import _drop_later_defaults

    spec = parsed.spec.model_dump(mode="json", exclude={"notifications"})
    _drop_later_defaults(spec)
    return spec


def test_webhook_fields_stay_out_of_other_checks_fingerprint() -> None:
    spec = _fingerprinted(RolloutPolicy.model_validate(policy()))
    assert "gates" not in spec
    (metric,) = spec["analysis"]["metrics"]
    assert not {"url", "method", "jsonPath", "timeout", "auth"} & set(metric)


# ---------------------------------------------------------------------------------------------
# kind: webhook checks


def test_webhook_check_defaults() -> None:
    check = MetricCheck.model_validate(JUDGE_CHECK)
    assert check.kind is MetricKind.WEBHOOK
    assert check.method is HttpMethod.GET
    assert check.timeout == timedelta(seconds=10)
    assert check.parsed_json_path.steps == ("results", 0, "value")
    assert check.threshold_description() == "canary >= 0.8"
    assert not check.needs_stable and not check.judged_per_tenant
    named = MetricCheck.model_validate({k: v for k, v in JUDGE_CHECK.items() if k != "name"})
    assert named.name == "webhook"


def test_webhook_check_with_post_timeout_and_auth() -> None:
    check = MetricCheck.model_validate(
        {
            **JUDGE_CHECK,
            "method": "POST",
            "timeout": "30s",
            "auth": {"bearerTokenFrom": {"env": "JUDGE_TOKEN"}},
            "max": 1.0,
        }
    )
    assert check.method is HttpMethod.POST
    assert check.timeout == timedelta(seconds=30)
    assert check.auth is not None and check.auth.bearer_token_from.env == "JUDGE_TOKEN"


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"url": "ftp://judge/score"}, "url", "only http and https URLs are allowed"),
        ({"url": None}, "url", "kind webhook needs a url"),
        ({"jsonPath": None}, "jsonPath", "kind webhook needs a jsonPath"),
        ({"jsonPath": "score"}, "jsonPath", "starts with $"),
        ({"jsonPath": "$.results[*].value"}, "jsonPath", "list index"),
        ({"jsonPath": "$..score"}, "jsonPath", "expected a key name"),
        ({"method": "PUT"}, "method", "'GET' or 'POST'"),
        ({"timeout": "0s"}, "timeout", "greater than zero"),
        ({"minRatio": 0.9}, "minRatio", "relative thresholds cannot be judged"),
        ({"maxDifference": 0.1}, "maxDifference", "relative thresholds cannot be judged"),
        ({"percentile": "p95"}, "percentile", "takes no percentile"),
        ({"query": "sum(x{ {{selector}} })"}, "query", "takes no query"),
        ({"judge": {}}, "judge", "a judge compares latency histograms"),
        ({"auth": {"token": "abc"}}, "auth", "secrets are never written in a policy"),
    ],
)
def test_bad_webhook_checks_are_refused_at_their_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    check = {**JUDGE_CHECK, **change}
    for key, value in change.items():
        if value is None:
            del check[key]
    found = errors(with_metrics(check))
    key = f"spec.analysis.metrics[1].{path}"
    assert key in found, found
    assert message in found[key]


def test_a_webhook_check_needs_a_threshold() -> None:
    check = {k: v for k, v in JUDGE_CHECK.items() if k != "min"}
    found = errors(with_metrics(check))
    assert "set at least one threshold" in found["spec.analysis.metrics[1]"]


@pytest.mark.parametrize("field", ["url", "method", "jsonPath", "timeout"])
def test_other_kinds_take_no_webhook_fields(field: str) -> None:
    value = {"url": "http://x/", "method": "GET", "jsonPath": "$.a", "timeout": "5s"}[field]
    found = errors(with_metrics({"kind": "ttft", "percentile": "p95", "max": 1.0, field: value}))
    assert found[f"spec.analysis.metrics[1].{field}"] == (
        f"Value error, kind ttft takes no {field} (only kind webhook does)"
    )


def test_webhook_checks_add_no_prometheus_query() -> None:
    plain = RolloutPolicy.model_validate(with_metrics())
    webhook = RolloutPolicy.model_validate(with_metrics(JUDGE_CHECK))
    plain_plan = plan_queries([AnalysisRequest.for_policy(plain)])
    webhook_plan = plan_queries([AnalysisRequest.for_policy(webhook)])
    assert [q.promql for q in webhook_plan.queries] == [q.promql for q in plain_plan.queries]
    planned = {c.metric: c for c in webhook_plan.checks}
    # Planned for its canary request count only: no value source, no custom query.
    assert planned["judge-score"].sources == {} and planned["judge-score"].custom is None


# ---------------------------------------------------------------------------------------------
# The JSONPath subset


@pytest.mark.parametrize(
    ("path", "document", "expected"),
    [
        ("$", 0.5, 0.5),
        ("$.score", {"score": 0.93}, 0.93),
        ("$.score", {"score": 3}, 3.0),
        ("$.results[0].value", {"results": [{"value": -1.5}, {"value": 9}]}, -1.5),
        ("$.results[1].value", {"results": [{"value": -1.5}, {"value": 9}]}, 9.0),
        ("$[2]", [1, 2, 3], 3.0),
        ("$['judge score']", {"judge score": 0.7}, 0.7),
        ('$["a.b"][0]', {"a.b": [4]}, 4.0),
        ("$['it\\'s']", {"it's": 1}, 1.0),
        ("$.a_b-c.d2", {"a_b-c": {"d2": 2.5}}, 2.5),
    ],
)
def test_json_path_reads_numbers(path: str, document: object, expected: float) -> None:
    assert parse_json_path(path).evaluate(document) == expected


@pytest.mark.parametrize(
    ("path", "document", "message"),
    [
        ("$.score", {"other": 1}, "$ has no key 'score' (keys: other)"),
        ("$.a.b", {"a": [1]}, "$.a is a list, not an object: no key 'b'"),
        ("$.a[3]", {"a": [1, 2]}, "$.a has 2 item(s): no index [3]"),
        ("$[0]", {"a": 1}, "$ is an object, not a list: cannot take [0]"),
        ("$.ok", {"ok": True}, "$.ok is a boolean (true), not a number"),
        ("$.s", {"s": "0.9"}, "$.s is a string ('0.9'), not a number"),
        ("$.n", {"n": None}, "$.n is null, not a number"),
        ("$.o", {"o": {}}, "$.o is an object, not a number"),
        ("$.x", {"x": float("inf")}, "$.x is inf, not a finite number"),
    ],
)
def test_json_path_says_what_is_missing(path: str, document: object, message: str) -> None:
    with pytest.raises(JsonPathError) as caught:
        parse_json_path(path).evaluate(document)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "path",
    [
        "",
        "score",
        "$.",
        "$.1a",
        "$..a",
        "$.a[",
        "$.a[-1]",
        "$.a[x]",
        "$.a[*]",
        "$.a[0:2]",
        "$['a'",
        "$['a']x",
        "$.a b",
        "$[?(@.a > 1)]",
        "$.__import__('os')",
        "$" + ".a" * 200,
    ],
)
def test_json_path_refuses_what_it_does_not_support(path: str) -> None:
    with pytest.raises(JsonPathError):
        parse_json_path(path)
