"""RolloutPolicy schema and loading."""

from __future__ import annotations

import copy
import json
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rollout.policy import (
    API_VERSION,
    BudgetPeriod,
    DriftAction,
    FailureAction,
    JudgeSpec,
    JudgeTest,
    MetricCheck,
    MetricKind,
    Percentile,
    PerTenantSpec,
    PolicyError,
    PolicyLoadError,
    Pricing,
    RolloutPolicy,
    TokenType,
    format_duration,
    format_field_path,
    load_policy_file,
    load_policy_paths,
    parse_duration,
    parse_policy_text,
    policy_json_schema,
    render_label_matchers,
    render_query_template,
)

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
EXAMPLE_FILES = sorted(POLICY_DIR.glob("*.yaml"))


def minimal_policy() -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RolloutPolicy",
        "metadata": {"name": "chat-canary"},
        "spec": {
            "route": {"namespace": "llm", "name": "chat"},
            "stable": {"backend": "chat-v1", "modelNameOverride": "llama-v1"},
            "canary": {"backend": "chat-v2", "modelNameOverride": "llama-v2"},
            "steps": [10, 50],
            "analysis": {"metrics": [{"kind": "error-rate", "max": 0.05}]},
        },
    }


def with_change(path: str, value: Any) -> dict[str, Any]:
    """minimal_policy() with one dotted path (list indexes as numbers) set to value."""
    document = minimal_policy()
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return document


def error_paths(document: dict[str, Any]) -> dict[str, str]:
    """{field path: message} of the validation errors of a policy document."""
    with pytest.raises(ValidationError) as caught:
        RolloutPolicy.model_validate(document)
    return {format_field_path(e["loc"]): e["msg"] for e in caught.value.errors()}


# --------------------------------------------------------------------------------------------
# The example policies


def test_there_are_example_policies_including_a_short_interval_demo() -> None:
    names = {path.stem for path in EXAMPLE_FILES}
    assert "demo" in names
    assert len(names) >= 2
    (demo,) = load_policy_file(POLICY_DIR / "demo.yaml")
    assert demo.spec.analysis.interval <= timedelta(seconds=15)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_example_policy_validates(path: Path) -> None:
    policies = load_policy_file(path)
    assert len(policies) == 1
    assert policies[0].name == path.stem
    assert policies[0].spec.weights[-1] == 100


def test_example_directory_loads_without_errors() -> None:
    result = load_policy_paths([POLICY_DIR])
    assert result.errors == []
    assert sorted(result.sources) == sorted(path.stem for path in EXAMPLE_FILES)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.name)
def test_policy_round_trips_through_its_camel_case_dump(path: Path) -> None:
    (policy,) = load_policy_file(path)
    dumped = policy.model_dump(mode="json")
    assert "apiVersion" in dumped
    assert RolloutPolicy.model_validate(dumped) == policy
    assert RolloutPolicy.model_validate(yaml.safe_load(yaml.safe_dump(dumped))) == policy


# --------------------------------------------------------------------------------------------
# Schema: defaults and derived values


def test_defaults() -> None:
    policy = RolloutPolicy.model_validate(minimal_policy())
    spec = policy.spec
    assert spec.weights == (10, 50, 100)  # 100 appended
    assert spec.on_failure is FailureAction.ROLLBACK
    assert spec.on_drift is DriftAction.PAUSE
    assert spec.analysis.interval == timedelta(minutes=1)
    assert spec.analysis.window == timedelta(minutes=5)
    assert (spec.analysis.failure_limit, spec.analysis.inconclusive_limit) == (2, 5)
    assert spec.analysis.error_limit == 3
    assert spec.rate_limit is None
    assert spec.route.rule_name is None and spec.route.rule_index is None
    assert spec.stable.selector == {"gen_ai_request_model": "llama-v1"}
    assert spec.canary.selector == {"gen_ai_request_model": "llama-v2"}


def test_explicit_100_is_kept_once() -> None:
    policy = RolloutPolicy.model_validate(with_change("spec.steps", [1, 100]))
    assert policy.spec.weights == (1, 100)


def test_python_names_are_accepted_as_well_as_yaml_names() -> None:
    check = MetricCheck(
        name="ttft-p99", kind=MetricKind.TTFT, percentile=Percentile.P99, max_value=2
    )
    assert check.max_value == 2.0
    assert MetricCheck.model_validate({"kind": "ttft", "percentile": "p99", "max": 2}) == check


def test_metric_name_defaults_to_kind_and_percentile() -> None:
    document = with_change(
        "spec.analysis.metrics",
        [
            {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2},
            {"kind": "error-rate", "max": 0.1},
            {"query": "sum(x{ {{selector}} }[{{window}}])", "max": 1},
        ],
    )
    metrics = RolloutPolicy.model_validate(document).spec.analysis.metrics
    assert [m.name for m in metrics] == ["ttft-p95", "error-rate", "custom"]
    assert metrics[2].kind is MetricKind.CUSTOM


def test_explicit_metric_selector_wins_over_model_name() -> None:
    document = with_change(
        "spec.canary",
        {"backend": "chat-v2", "modelNameOverride": "x", "metricSelector": {"a": "b"}},
    )
    assert RolloutPolicy.model_validate(document).spec.canary.selector == {"a": "b"}


def test_percentile_quantile() -> None:
    assert [p.quantile for p in Percentile] == [0.5, 0.95, 0.99]


def test_threshold_description_lists_every_threshold() -> None:
    check = MetricCheck.model_validate(
        {"kind": "error-rate", "max": 0.02, "maxRatio": 1.5, "minDifference": -1}
    )
    assert check.threshold_description() == (
        "canary <= 0.02, canary/stable <= 1.5, canary-stable >= -1"
    )
    assert check.needs_stable


@pytest.mark.parametrize(
    ("name", "fingerprint"),
    [
        # computed by the controller before the LLM checks (commit 474da44): an upgrade must
        # not look like an edit of every policy
        (POLICY_DIR / "chat-canary.yaml", "0705c2c276c9404b"),
        # policies/demo.yaml has since gained LLM checks: its copy from before them
        (Path(__file__).parent / "data" / "demo-before-llm-checks.yaml", "f1c82154fc37b70b"),
        (POLICY_DIR / "embeddings-canary.yaml", "87aa932262288eea"),
    ],
)
def test_fingerprints_of_older_policies_survive_new_fields(name: Path, fingerprint: str) -> None:
    (policy,) = load_policy_file(name)
    assert policy.fingerprint() == fingerprint


def test_new_fields_change_the_fingerprint_once_set() -> None:
    base = RolloutPolicy.model_validate(minimal_policy())
    assert base.fingerprint() == "caabbace50a19645"  # before the LLM checks, as above
    assert RolloutPolicy.model_validate(minimal_policy()).fingerprint() == base.fingerprint()
    warm = with_change("spec.analysis.warmup", "10s")
    judged = with_change(
        "spec.analysis.metrics",
        [{"kind": "error-rate", "max": 0.05}, {"kind": "ttft", "judge": {}}],
    )
    tenants = with_change("spec.analysis.perTenant", {"label": "tenant"})
    priced = with_change("spec.canary.pricing", {"input": 1, "output": 2})
    prints = {
        RolloutPolicy.model_validate(document).fingerprint()
        for document in (warm, judged, tenants, priced)
    }
    assert len(prints) == 4 and base.fingerprint() not in prints


def test_fingerprint_follows_the_spec_only() -> None:
    policy = RolloutPolicy.model_validate(minimal_policy())
    renamed = RolloutPolicy.model_validate(with_change("metadata.name", "other"))
    edited = RolloutPolicy.model_validate(with_change("spec.steps", [10, 60]))
    assert policy.fingerprint() == RolloutPolicy.model_validate(minimal_policy()).fingerprint()
    assert policy.fingerprint() == renamed.fingerprint()
    assert policy.fingerprint() != edited.fingerprint()


# --------------------------------------------------------------------------------------------
# Schema: rejections, each pointing at the right field


@pytest.mark.parametrize(
    ("path", "value", "expected_path", "message_part"),
    [
        ("apiVersion", "v1", "apiVersion", "rollout.model-registry.io/v1alpha1"),
        ("kind", "Rollout", "kind", "RolloutPolicy"),
        ("metadata.name", "Chat_Canary", "metadata.name", "pattern"),
        ("spec.route.namespace", "", "spec.route.namespace", "pattern"),
        ("spec.route.ruleIndex", -1, "spec.route.ruleIndex", "greater than or equal"),
        ("spec.steps", [], "spec.steps", "at least one step"),
        ("spec.steps", [0, 50], "spec.steps[0].weight", "a percentage from 0.01 to 100, got 0"),
        ("spec.steps", [10, 101], "spec.steps[1].weight", "from 0.01 to 100, got 101"),
        ("spec.steps", [0.005, 5], "spec.steps[0].weight", "from 0.01 to 100, got 0.005"),
        ("spec.steps", [0.125, 5], "spec.steps[0].weight", "down to 0.01%: 0.125"),
        ("spec.steps", [10, 10], "spec.steps", "strictly increasing"),
        ("spec.steps", [50, 20], "spec.steps", "strictly increasing"),
        ("spec.steps", [100], "spec.steps", "at least one step below 100"),
        ("spec.steps", [True], "spec.steps[0]", "a percentage (0.01..100), not a flag"),
        ("spec.steps", ["10"], "spec.steps[0]", "a step is a percentage"),
        ("spec.onFailure", "ignore", "spec.onFailure", "'rollback' or 'pause'"),
        ("spec.onDrift", "ignore", "spec.onDrift", "'pause' or 'reassert'"),
        ("spec.analysis.interval", 30, "spec.analysis.interval", "duration"),
        ("spec.analysis.interval", "30", "spec.analysis.interval", "duration"),
        ("spec.analysis.interval", "0s", "spec.analysis.interval", "greater than zero"),
        ("spec.analysis.window", "5 minutes", "spec.analysis.window", "duration"),
        ("spec.analysis.minRequests", -1, "spec.analysis.minRequests", "greater than or equal"),
        ("spec.analysis.failureLimit", 0, "spec.analysis.failureLimit", "greater than or equal"),
        ("spec.analysis.errorLimit", "3", "spec.analysis.errorLimit", "valid integer"),
        ("spec.analysis.metrics", [], "spec.analysis.metrics", "at least one metric"),
        ("spec.analysis.metrics.0.max", "x", "spec.analysis.metrics[0].max", "valid number"),
        ("spec.analysis.metrics.0.max", True, "spec.analysis.metrics[0].max", "valid number"),
        ("spec.analysis.metrics.0.max", float("nan"), "spec.analysis.metrics[0].max", "finite"),
        ("spec.analysis.metrics.0.max", float("inf"), "spec.analysis.metrics[0].max", "finite"),
        ("spec.analysis.metrics.0.kind", "latency", "spec.analysis.metrics[0].kind", "ttft"),
    ],
)
def test_invalid_value_is_reported_at_its_field(
    path: str, value: Any, expected_path: str, message_part: str
) -> None:
    errors = error_paths(with_change(path, value))
    assert expected_path in errors, errors
    assert message_part in errors[expected_path]


@pytest.mark.parametrize(
    ("metric", "expected_path", "message_part"),
    [
        ({"kind": "ttft", "max": 1}, "percentile", "needs a percentile"),
        ({"kind": "error-rate", "percentile": "p95", "max": 1}, "percentile", "no percentile"),
        ({"kind": "ttft", "percentile": "p90", "max": 1}, "percentile", "'p50', 'p95' or 'p99'"),
        ({"kind": "custom", "max": 1}, "query", "needs a query"),
        ({"kind": "error-rate", "query": "x{ {{selector}} }", "max": 1}, "query", "no query"),
        ({"query": "x{ {{selectr}} }", "max": 1}, "query", "unknown template variable(s) selectr"),
        ({"query": "sum(x[{{window}}])", "max": 1}, "query", "{{selector}} or {{variant}}"),
        ({"kind": "error-rate"}, "", "at least one threshold"),
        ({"kind": "error-rate", "min": 0.2, "max": 0.1}, "", "min > max"),
        ({"kind": "error-rate", "minRatio": 2, "maxRatio": 1}, "", "minRatio > maxRatio"),
        ({"kind": "error-rate", "maxRatio": 0}, "maxRatio", "greater than 0"),
        ({"kind": "error-rate", "maxRatio": -1}, "maxRatio", "greater than 0"),
        ({"kind": "error-rate", "max": 1, "threshold": 1}, "threshold", "Extra inputs"),
        ({"max": 1}, "kind", "Field required"),
        ({"kind": "error-rate", "max": 1, "name": "Bad Name"}, "name", "pattern"),
    ],
)
def test_invalid_metric_is_reported_at_its_field(
    metric: dict[str, Any], expected_path: str, message_part: str
) -> None:
    errors = error_paths(with_change("spec.analysis.metrics", [metric]))
    full_path = "spec.analysis.metrics[0]" + (f".{expected_path}" if expected_path else "")
    assert full_path in errors, errors
    assert message_part in errors[full_path]


def test_duplicate_metric_names_are_rejected() -> None:
    metrics = [{"kind": "error-rate", "max": 0.1}, {"kind": "error-rate", "max": 0.2}]
    errors = error_paths(with_change("spec.analysis.metrics", metrics))
    assert "used twice" in errors["spec.analysis.metrics"]


@pytest.mark.parametrize(
    "extra_at",
    [
        "",
        "metadata",
        "spec",
        "spec.route",
        "spec.stable",
        "spec.analysis",
        "spec.analysis.metrics.0",
    ],
)
def test_unknown_keys_are_rejected_everywhere(extra_at: str) -> None:
    document = minimal_policy()
    node: Any = document
    for part in filter(None, extra_at.split(".")):
        node = node[int(part)] if isinstance(node, list) else node[part]
    node["typo"] = 1
    errors = error_paths(document)
    expected = format_field_path(
        [int(p) if p.isdigit() else p for p in filter(None, extra_at.split("."))] + ["typo"]
    )
    assert errors == {expected: "Extra inputs are not permitted"}


def test_unknown_keys_in_rate_limit_are_rejected() -> None:
    document = with_change("spec.rateLimit", {"tenantHeader": "x-tenant", "tokenBudget": 5, "x": 1})
    assert "spec.rateLimit.x" in error_paths(document)


def test_variant_needs_a_selector_or_a_model_name() -> None:
    errors = error_paths(with_change("spec.canary", {"backend": "chat-v2"}))
    assert "gateway metrics have no backend label" in errors["spec.canary"]


def test_reserved_prometheus_labels_are_rejected() -> None:
    document = with_change(
        "spec.canary", {"backend": "chat-v2", "metricSelector": {"__name__": "x"}}
    )
    assert "reserved" in error_paths(document)["spec.canary.metricSelector"]


def test_rule_name_and_index_are_exclusive() -> None:
    document = with_change(
        "spec.route", {"namespace": "llm", "name": "chat", "ruleName": "a", "ruleIndex": 0}
    )
    assert "not both" in error_paths(document)["spec.route"]


@pytest.mark.parametrize(
    ("canary", "message_part"),
    [
        ({"backend": "chat-v1", "modelNameOverride": "llama-v2"}, "different backends"),
        ({"backend": "chat-v2", "modelNameOverride": "llama-v1"}, "select the same metrics"),
        (
            {"backend": "chat-v2", "metricSelector": {"gen_ai_request_model": "llama-v1"}},
            "select the same metrics",
        ),
    ],
)
def test_stable_and_canary_must_be_distinguishable(
    canary: dict[str, Any], message_part: str
) -> None:
    assert message_part in error_paths(with_change("spec.canary", canary))["spec"]


def test_rate_limit() -> None:
    document = with_change(
        "spec.rateLimit",
        {"tenantHeader": "x-tenant-id", "tokenBudget": 1000, "budgetPeriod": "monthly"},
    )
    rate_limit = RolloutPolicy.model_validate(document).spec.rate_limit
    assert rate_limit is not None
    assert rate_limit.budget_period is BudgetPeriod.MONTHLY
    assert rate_limit.requests_per_minute is None


@pytest.mark.parametrize(
    ("rate_limit", "field", "message_part"),
    [
        ({"tenantHeader": "x", "tokenBudget": 1, "budgetPeriod": "weekly"}, "budgetPeriod", "Week"),
        ({"tenantHeader": "x"}, "", "tokenBudget, requestsPerMinute"),
        ({"tenantHeader": "bad header", "tokenBudget": 1}, "tenantHeader", "pattern"),
        ({"tenantHeader": "x", "requestsPerMinute": 0}, "requestsPerMinute", "greater than"),
    ],
)
def test_invalid_rate_limit(rate_limit: dict[str, Any], field: str, message_part: str) -> None:
    errors = error_paths(with_change("spec.rateLimit", rate_limit))
    path = "spec.rateLimit" + (f".{field}" if field else "")
    assert message_part in errors[path]


def test_budget_periods_match_the_gateway_model() -> None:
    # The reconciler converts one into the other by value.
    from rollout.gateway.models import BudgetPeriod as GatewayBudgetPeriod

    assert {p.value for p in BudgetPeriod} == {p.value for p in GatewayBudgetPeriod}


# --------------------------------------------------------------------------------------------
# Durations and templates


@pytest.mark.parametrize(
    ("text", "expected", "formatted"),
    [
        ("30s", timedelta(seconds=30), "30s"),
        ("5m", timedelta(minutes=5), "5m"),
        ("1h30m", timedelta(minutes=90), "1h30m"),
        ("90s", timedelta(seconds=90), "1m30s"),
        ("500ms", timedelta(milliseconds=500), "500ms"),
        ("2d", timedelta(days=2), "2d"),
    ],
)
def test_durations(text: str, expected: timedelta, formatted: str) -> None:
    assert parse_duration(text) == expected
    assert format_duration(expected) == formatted
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "30", "5 m", "1w", "-5s", "0m", "m", 30, None, True])
def test_invalid_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_label_matchers_are_sorted_and_escaped() -> None:
    assert render_label_matchers({"b": 'say "hi"', "a": "back\\slash"}) == (
        'a="back\\\\slash", b="say \\"hi\\""'
    )


def test_query_template_rendering() -> None:
    template = "sum(rate(x{ {{selector}} }[{{ window }}])) # {{variant}}"
    rendered = render_query_template(
        template, {"selector": 'm="v2"', "window": "5m", "variant": "canary"}
    )
    assert rendered == 'sum(rate(x{ m="v2" }[5m])) # canary'
    with pytest.raises(KeyError):
        render_query_template(template, {"selector": "x"})


def test_json_schema() -> None:
    schema = policy_json_schema()
    json.dumps(schema)  # serializable
    defs = schema["$defs"]
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    assert schema["additionalProperties"] is False
    analysis = defs["AnalysisSpec"]["properties"]
    assert analysis["interval"]["type"] == "string"
    assert analysis["interval"]["default"] == "1m"
    assert "minRequests" in analysis
    metric = defs["MetricCheck"]
    assert "required" not in metric  # name and kind are derived when missing
    assert {"min", "max", "maxRatio", "maxDifference"} <= set(metric["properties"])


# --------------------------------------------------------------------------------------------
# Loading files


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


GOOD_POLICY = """
    apiVersion: rollout.model-registry.io/v1alpha1
    kind: RolloutPolicy
    metadata:
      name: {name}
    spec:
      route: {{namespace: llm, name: {route}}}
      stable: {{backend: a-v1, modelNameOverride: a-v1}}
      canary: {{backend: a-v2, modelNameOverride: a-v2}}
      steps: [10, 50]
      analysis:
        metrics:
          - kind: error-rate
            max: 0.05
    """


def good_policy(name: str, route: str | None = None) -> str:
    return GOOD_POLICY.format(name=name, route=route or name)


BAD_METRIC_POLICY = """
    apiVersion: rollout.model-registry.io/v1alpha1
    kind: RolloutPolicy
    metadata:
      name: chat-canary
    spec:
      route: {namespace: llm, name: chat}
      stable: {backend: a-v1, modelNameOverride: a-v1}
      canary: {backend: a-v2, modelNameOverride: a-v2}
      steps: [10, 50]
      analysis:
        metrics:
          - kind: error-rate
            max: 0.05
          - kind: ttft
            percentile: p95
            max: fast
    """


def test_bad_file_error_names_file_policy_field_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", BAD_METRIC_POLICY)
    result = load_policy_paths([path])
    assert result.policies == []
    (error,) = result.errors
    assert error == PolicyError(
        file=path,
        policy_name="chat-canary",
        field_path="spec.analysis.metrics[1].max",
        message="Input should be a valid number",
        line=16,
    )
    assert str(error) == (
        f'{path}:16: policy "chat-canary": spec.analysis.metrics[1].max: '
        "Input should be a valid number"
    )


def test_missing_field_points_at_its_parent_line(tmp_path: Path) -> None:
    text = good_policy("a").replace("      canary: {backend: a-v2, modelNameOverride: a-v2}\n", "")
    path = write(tmp_path, "a.yaml", text)
    (error,) = load_policy_paths([path]).errors
    assert (error.field_path, error.message, error.line) == ("spec.canary", "Field required", 5)


def test_yaml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", good_policy("a") + "  steps: [10, 50\n")
    (error,) = load_policy_paths([path]).errors
    assert error.file == path
    assert error.policy_name is None
    assert error.message.startswith("invalid YAML")
    assert error.line is not None and error.line >= 15


def test_duplicate_yaml_keys_are_errors(tmp_path: Path) -> None:
    text = good_policy("a").replace("steps: [10, 50]", "steps: [10, 50]\n      steps: [50]")
    path = write(tmp_path, "dup.yaml", text)
    (error,) = load_policy_paths([path]).errors
    assert "duplicate key 'steps'" in error.message
    assert error.line == 10  # the second `steps:`


def test_one_bad_document_does_not_hide_the_good_ones(tmp_path: Path) -> None:
    text = "---\n".join(textwrap.dedent(t) for t in (good_policy("a"), BAD_METRIC_POLICY, ""))
    path = tmp_path / "multi.yaml"
    path.write_text(text)
    result = load_policy_paths([path])
    assert [p.name for p in result.policies] == ["a"]
    bad_line = text.splitlines().index("        max: fast") + 1
    assert [(e.policy_name, e.line) for e in result.errors] == [("chat-canary", bad_line)]


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", good_policy("a"))
    write(tmp_path, "b.yml", good_policy("b"))
    write(tmp_path, "broken.yaml", "spec: [unclosed\n")
    write(tmp_path, "notes.txt", "not a policy")
    result = load_policy_paths([tmp_path])
    assert sorted(p.name for p in result.policies) == ["a", "b"]
    assert [e.file.name for e in result.errors] == ["broken.yaml"]
    assert result.sources["b"] == tmp_path / "b.yml"
    assert not result.ok


def test_missing_path_and_non_mapping_documents(tmp_path: Path) -> None:
    scalar = write(tmp_path, "scalar.yaml", "just a string\n")
    missing = tmp_path / "missing.yaml"
    result = load_policy_paths([missing, scalar])
    assert [(e.file, e.message) for e in result.errors] == [
        (missing, "no such file or directory"),
        (scalar, "expected a mapping (a policy)"),
    ]


def test_empty_documents_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "---\n" + textwrap.dedent(good_policy("a")) + "---\n")
    assert [p.name for p in load_policy_file(path)] == ["a"]


def test_duplicate_names_drop_every_copy(tmp_path: Path) -> None:
    first = write(tmp_path, "one.yaml", good_policy("same", route="r1"))
    second = write(tmp_path, "two.yaml", good_policy("same", route="r2"))
    write(tmp_path, "other.yaml", good_policy("other"))
    result = load_policy_paths([tmp_path])
    assert [p.name for p in result.policies] == ["other"]
    assert sorted((e.file, e.field_path) for e in result.errors) == [
        (first, "metadata.name"),
        (second, "metadata.name"),
    ]
    assert all("another policy" in e.message for e in result.errors)


def test_two_policies_on_one_route_drop_both(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", good_policy("one", route="chat"))
    write(tmp_path, "two.yaml", good_policy("two", route="chat"))
    result = load_policy_paths([tmp_path])
    assert result.policies == []
    assert sorted((e.policy_name, e.field_path) for e in result.errors) == [
        ("one", "spec.route"),
        ("two", "spec.route"),
    ]
    assert "route llm/chat" in result.errors[0].message


def test_load_policy_file_raises_with_every_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yaml", BAD_METRIC_POLICY)
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_file(path)
    assert [e.field_path for e in caught.value.errors] == ["spec.analysis.metrics[1].max"]
    assert "spec.analysis.metrics[1].max" in str(caught.value)


def test_parse_policy_text_names_the_given_source() -> None:
    policies, errors = parse_policy_text("kind: RolloutPolicy\n", Path("configmap:policies"))
    assert policies == []
    assert {e.field_path for e in errors} == {"apiVersion", "metadata", "spec"}
    assert all(e.file == Path("configmap:policies") and e.line == 1 for e in errors)


def test_error_without_line_or_policy_formats_compactly() -> None:
    error = PolicyError(Path("p.yaml"), None, "", "no such file or directory")
    assert str(error) == "p.yaml: no such file or directory"


def test_minimal_policy_is_valid() -> None:
    # Guards the helpers above: every rejection test starts from a valid document.
    RolloutPolicy.model_validate(copy.deepcopy(minimal_policy()))


# --------------------------------------------------------------------------------------------
# LLM checks: cost, tokens, cache, warm-up, per-tenant, judge

PRICING = {"input": 3.0, "cachedInput": 0.3, "cacheCreationInput": 3.75, "output": 15.0}


def llm_policy(*metrics: dict[str, Any], **analysis: Any) -> dict[str, Any]:
    document = minimal_policy()
    document["spec"]["stable"]["pricing"] = dict(PRICING)
    document["spec"]["canary"]["pricing"] = dict(PRICING)
    document["spec"]["analysis"] = {"metrics": list(metrics), **analysis}
    return document


def test_new_kinds_validate_with_their_default_names() -> None:
    document = llm_policy(
        {"kind": "cost-per-request", "max": 0.01, "maxRatio": 1.2},
        {"kind": "tokens-per-request", "tokenType": "output", "minRatio": 0.7, "maxRatio": 1.5},
        {"kind": "tokens-per-request", "tokenType": "reasoning", "max": 4000},
        {"kind": "cache-hit-ratio", "minDifference": -0.2},
        {"kind": "ttft", "judge": {"test": "mann-whitney", "confidence": 0.99, "maxShift": 0.1}},
        {"kind": "request-duration", "percentile": "p95", "maxRatio": 1.3, "judge": {}},
    )
    metrics = RolloutPolicy.model_validate(document).spec.analysis.metrics
    assert [m.name for m in metrics] == [
        "cost-per-request",
        "tokens-per-request-output",
        "tokens-per-request-reasoning",
        "cache-hit-ratio",
        "ttft",
        "request-duration-p95",
    ]
    assert metrics[1].token_type is TokenType.OUTPUT
    units = ["USD/request", "tokens/request", "tokens/request", "ratio", "s", "s"]
    assert [m.unit for m in metrics] == units
    judge = metrics[4].judge
    assert judge == JudgeSpec(test=JudgeTest.MANN_WHITNEY, confidence=0.99, max_shift=0.1)
    assert metrics[4].percentile is None and metrics[4].thresholds() == {}
    assert metrics[5].judge == JudgeSpec()  # defaults: mann-whitney, 0.99, 0.1
    assert metrics[4].needs_stable is False  # the judge reads buckets, not a value


def test_judge_descriptions_join_the_thresholds() -> None:
    alone = MetricCheck.model_validate({"kind": "ttft", "judge": {"confidence": 0.95}})
    assert alone.threshold_description() == (
        "mann-whitney: fails if slower at 95% confidence by > 10%"
    )
    both = MetricCheck.model_validate(
        {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2, "judge": {"maxShift": 0.25}}
    )
    assert both.threshold_description() == (
        "canary/stable <= 1.2, mann-whitney: fails if slower at 99% confidence by > 25%"
    )


def test_units_per_kind() -> None:
    assert {kind.value: kind.unit for kind in MetricKind} == {
        "error-rate": "ratio",
        "ttft": "s",
        "time-per-output-token": "s",
        "request-duration": "s",
        "output-tokens-per-second": "tokens/s",
        "cost-per-request": "USD/request",
        "tokens-per-request": "tokens/request",
        "cache-hit-ratio": "ratio",
        "custom": "",
        "webhook": "",
    }


@pytest.mark.parametrize(
    ("metric", "expected_path", "message_part"),
    [
        ({"kind": "tokens-per-request", "max": 1}, "tokenType", "needs a tokenType"),
        (
            {"kind": "tokens-per-request", "tokenType": "thinking", "max": 1},
            "tokenType",
            "'input', 'output', 'reasoning', 'cached_input'",
        ),
        ({"kind": "ttft", "percentile": "p95", "tokenType": "output", "max": 1}, "tokenType", "no"),
        ({"kind": "error-rate", "max": 0.1, "judge": {}}, "judge", "error-rate has none"),
        ({"kind": "cost-per-request", "max": 1, "judge": {}}, "judge", "latency histograms"),
        ({"kind": "ttft", "judge": {"confidence": 0}}, "judge.confidence", "greater than 0"),
        ({"kind": "ttft", "judge": {"confidence": 1}}, "judge.confidence", "less than 1"),
        ({"kind": "ttft", "judge": {"confidence": 1.5}}, "judge.confidence", "less than 1"),
        ({"kind": "ttft", "judge": {"confidence": "high"}}, "judge.confidence", "valid number"),
        ({"kind": "ttft", "judge": {"maxShift": -0.1}}, "judge.maxShift", "greater than or"),
        ({"kind": "ttft", "judge": {"test": "t-test"}}, "judge.test", "'mann-whitney'"),
        ({"kind": "ttft", "judge": {"alpha": 0.01}}, "judge.alpha", "Extra inputs"),
        # thresholds on a latency need a percentile even beside a judge
        ({"kind": "ttft", "maxRatio": 1.2, "judge": {}}, "percentile", "needs a percentile"),
        ({"kind": "ttft"}, "percentile", "needs a percentile"),
        ({"kind": "ttft", "percentile": "p95"}, "", "or a judge"),
        ({"kind": "cache-hit-ratio"}, "", "at least one threshold"),
        # fractions: error-rate and cache-hit-ratio thresholds that can never decide
        ({"kind": "error-rate", "max": 2}, "max", "fraction between 0 and 1"),
        ({"kind": "error-rate", "max": 1.0001}, "max", "1.0001 can never decide"),
        ({"kind": "error-rate", "min": -0.1}, "min", "fraction between 0 and 1"),
        ({"kind": "error-rate", "maxDifference": 1.5}, "maxDifference", "[-1, 1]"),
        ({"kind": "cache-hit-ratio", "min": 50}, "min", "fraction between 0 and 1"),
        ({"kind": "error-rate", "max": 0.1, "name": "per-tenant"}, "name", "per-tenant verdict"),
    ],
)
def test_invalid_llm_metric_is_reported_at_its_field(
    metric: dict[str, Any], expected_path: str, message_part: str
) -> None:
    errors = error_paths(llm_policy(metric))
    full_path = "spec.analysis.metrics[0]" + (f".{expected_path}" if expected_path else "")
    assert full_path in errors, errors
    assert message_part in errors[full_path]


@pytest.mark.parametrize(
    "metric",
    [
        {"kind": "error-rate", "max": 1, "min": 0, "maxDifference": -1, "minDifference": -1},
        {"kind": "error-rate", "maxRatio": 20},  # ratios are not fractions
        {"kind": "cache-hit-ratio", "min": 0.3, "maxDifference": 1},
        {"kind": "ttft", "percentile": "p95", "judge": {}},  # the p95 is shown beside the judge
        {"kind": "ttft", "judge": {"maxShift": 0}},
    ],
)
def test_valid_edge_thresholds(metric: dict[str, Any]) -> None:
    RolloutPolicy.model_validate(llm_policy(metric))


def test_cost_check_needs_pricing_on_both_variants() -> None:
    document = llm_policy({"kind": "cost-per-request", "maxRatio": 1.2})
    del document["spec"]["canary"]["pricing"]
    errors = error_paths(document)
    assert list(errors) == ["spec.canary.pricing"]
    assert "cost-per-request check needs pricing for both variants" in errors["spec.canary.pricing"]
    del document["spec"]["stable"]["pricing"]
    assert sorted(error_paths(document)) == ["spec.canary.pricing", "spec.stable.pricing"]
    # an explicit null is as missing as no key
    document["spec"]["stable"]["pricing"] = None
    assert "spec.stable.pricing" in error_paths(document)
    # without a cost check, no pricing is needed
    document["spec"]["analysis"]["metrics"] = [{"kind": "error-rate", "max": 0.1}]
    RolloutPolicy.model_validate(document)


@pytest.mark.parametrize(
    ("pricing", "field", "message_part"),
    [
        ({"input": -1, "output": 1}, "input", "greater than or equal to 0"),
        ({"input": 1, "output": 1, "cachedInput": -0.1}, "cachedInput", "greater than or equal"),
        ({"input": 1}, "output", "Field required"),
        ({"input": 1, "output": "cheap"}, "output", "valid number"),
        ({"input": 1, "output": 1, "reasoning": 2}, "reasoning", "Extra inputs"),
        ({"input": 1, "output": float("inf")}, "output", "finite"),
    ],
)
def test_invalid_pricing(pricing: dict[str, Any], field: str, message_part: str) -> None:
    document = llm_policy({"kind": "cost-per-request", "max": 1})
    document["spec"]["canary"]["pricing"] = pricing
    errors = error_paths(document)
    assert message_part in errors[f"spec.canary.pricing.{field}"], errors


def test_cache_prices_default_to_the_input_price() -> None:
    pricing = Pricing.model_validate({"input": 2.0, "output": 8.0})
    assert (pricing.cached_input_price, pricing.cache_creation_input_price) == (2.0, 2.0)
    explicit = Pricing.model_validate(PRICING)
    assert (explicit.cached_input_price, explicit.cache_creation_input_price) == (0.3, 3.75)


def test_request_cost_takes_cached_tokens_out_of_input_and_counts_reasoning_once() -> None:
    pricing = Pricing.model_validate(PRICING)  # USD per 1M: in 3, cached 0.3, write 3.75, out 15
    # 1000 input tokens of which 600 cached and 100 written to the cache; 200 output tokens
    # (reasoning is inside output and has no price of its own)
    cost = pricing.request_cost(input=1000, cached_input=600, cache_creation_input=100, output=200)
    assert cost == pytest.approx((300 * 3 + 600 * 0.3 + 100 * 3.75 + 200 * 15) / 1e6)
    # no cache: everything at the input price
    assert pricing.request_cost(
        input=1000, cached_input=0, cache_creation_input=0, output=0
    ) == pytest.approx(1000 * 3 / 1e6)
    # counts that contradict the gateway's accounting never give a negative uncached part
    assert pricing.request_cost(
        input=100, cached_input=300, cache_creation_input=0, output=0
    ) == pytest.approx(300 * 0.3 / 1e6)


def test_warmup_and_per_tenant() -> None:
    document = llm_policy(
        {"kind": "error-rate", "max": 0.05},
        interval="1m",
        window="5m",
        warmup="20s",
        perTenant={"label": "tenant", "minRequests": 30, "maxFailingTenants": 1},
    )
    analysis = RolloutPolicy.model_validate(document).spec.analysis
    assert analysis.warmup == timedelta(seconds=20)
    assert analysis.per_tenant == PerTenantSpec(
        label="tenant", min_requests=30, max_failing_tenants=1
    )
    defaults = RolloutPolicy.model_validate(minimal_policy()).spec.analysis
    assert defaults.warmup == timedelta(0) and defaults.per_tenant is None
    assert PerTenantSpec(label="t").min_requests == 20
    assert PerTenantSpec(label="t").max_failing_tenants == 0
    zero = RolloutPolicy.model_validate(llm_policy({"kind": "error-rate", "max": 0.1}, warmup="0s"))
    assert zero.spec.analysis.warmup == timedelta(0)
    assert zero.model_dump(mode="json")["spec"]["analysis"]["warmup"] == "0s"


@pytest.mark.parametrize(
    ("analysis", "field", "message_part"),
    [
        ({"interval": "1m", "window": "30s"}, "window", "shorter than the interval 1m"),
        ({"interval": "10m"}, "window", "window 5m is shorter than the interval 10m"),
        ({"interval": "1m", "warmup": "5m"}, "warmup", "not shorter than the window 5m"),
        ({"interval": "1m", "warmup": "6m"}, "warmup", "more traffic than any check"),
        ({"interval": "1m", "warmup": "-5s"}, "warmup", "duration"),
        ({"interval": "1m", "warmup": 30}, "warmup", "duration"),
        ({"perTenant": {"minRequests": 5}}, "perTenant.label", "Field required"),
        ({"perTenant": {"label": "bad-label"}}, "perTenant.label", "pattern"),
        ({"perTenant": {"label": "__name__"}}, "perTenant.label", "reserved"),
        ({"perTenant": {"label": "le"}}, "perTenant.label", "queries use themselves"),
        ({"perTenant": {"label": "t", "minRequests": 0}}, "perTenant.minRequests", "greater"),
        ({"perTenant": {"label": "t", "maxFailingTenants": -1}}, "perTenant.maxFailingTenants", ""),
        ({"perTenant": {"label": "t", "max": 1}}, "perTenant.max", "Extra inputs"),
    ],
)
def test_invalid_analysis_timing_and_tenants(
    analysis: dict[str, Any], field: str, message_part: str
) -> None:
    errors = error_paths(llm_policy({"kind": "error-rate", "max": 0.1}, **analysis))
    path = f"spec.analysis.{field}"
    assert path in errors, errors
    assert message_part in errors[path]


def test_tenant_label_must_not_select_a_variant() -> None:
    document = llm_policy(
        {"kind": "error-rate", "max": 0.1}, perTenant={"label": "gen_ai_request_model"}
    )
    errors = error_paths(document)
    assert "also selects the stable variant" in errors["spec.analysis"]


LLM_POLICY_WITHOUT_CANARY_PRICE = """
    apiVersion: rollout.model-registry.io/v1alpha1
    kind: RolloutPolicy
    metadata:
      name: llm
    spec:
      route: {namespace: llm, name: chat}
      stable:
        backend: a-v1
        modelNameOverride: a-v1
        pricing: {input: 3, output: 15}
      canary:
        backend: a-v2
        modelNameOverride: a-v2
      steps: [10, 50]
      analysis:
        interval: 1m
        warmup: 5m
        metrics:
          - kind: cost-per-request
            maxRatio: 1.2
          - kind: ttft
            judge: {confidence: 1.2}
    """


def test_llm_policy_errors_name_file_line_policy_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "llm.yaml", LLM_POLICY_WITHOUT_CANARY_PRICE)
    result = load_policy_paths([path])
    assert result.policies == []
    lines = textwrap.dedent(LLM_POLICY_WITHOUT_CANARY_PRICE).lstrip().splitlines()
    found = {(e.field_path, e.line) for e in result.errors}
    assert found == {
        # a missing field is reported at its parent's key
        ("spec.canary.pricing", lines.index("  canary:") + 1),
        ("spec.analysis.warmup", lines.index("    warmup: 5m") + 1),
        (
            "spec.analysis.metrics[1].judge.confidence",
            lines.index("        judge: {confidence: 1.2}") + 1,
        ),
    }
    assert all(e.policy_name == "llm" and e.file == path for e in result.errors)


def test_json_schema_covers_the_llm_fields() -> None:
    defs = policy_json_schema()["$defs"]
    assert {"warmup", "perTenant"} <= set(defs["AnalysisSpec"]["properties"])
    assert defs["AnalysisSpec"]["properties"]["warmup"]["default"] == "0s"
    assert set(defs["PerTenantSpec"]["properties"]) == {"label", "minRequests", "maxFailingTenants"}
    assert defs["PerTenantSpec"]["required"] == ["label"]
    assert "pricing" in defs["Variant"]["properties"]
    assert set(defs["Pricing"]["properties"]) == {
        "input",
        "cachedInput",
        "cacheCreationInput",
        "output",
    }
    assert defs["Pricing"]["properties"]["input"]["minimum"] == 0
    metric = defs["MetricCheck"]["properties"]
    assert {"judge", "tokenType"} <= set(metric)
    judge = defs["JudgeSpec"]["properties"]
    assert judge["confidence"]["exclusiveMinimum"] == 0
    assert judge["confidence"]["exclusiveMaximum"] == 1
    assert set(defs["MetricKind"]["enum"]) >= {
        "cost-per-request",
        "tokens-per-request",
        "cache-hit-ratio",
    }
    assert set(defs["TokenType"]["enum"]) >= {"input", "output", "reasoning", "cached_input"}
