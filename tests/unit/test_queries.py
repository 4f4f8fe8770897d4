"""PromQL building: built-in queries, escaping, batching across rollouts, splitting answers."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.exceptions import MaxRetryError, NewConnectionError

from rollout.analysis import AnalysisRequest, Measurement, plan_queries
from rollout.analysis.prometheus import decode_result, describe_api_error, transport_cause
from rollout.analysis.queries import (
    REQUESTS,
    SUCCESSES,
    TOKENS,
    BatchedQuery,
    CustomQuery,
    Member,
    QueryFailure,
    QueryPlan,
    QueryResult,
    Role,
    Sample,
    Scalar,
    Signal,
    SignalKind,
    VariantRef,
    Vector,
    assemble_measurements,
    promql_duration,
    promql_string,
    regex_literal,
    render_custom_query,
    set_matcher,
    signal_promql,
)
from rollout.analysis.verdicts import TenantMeasurement
from rollout.policy import AnalysisSpec, MetricCheck, Percentile, Pricing, RolloutPolicy

MODEL = "gen_ai_request_model"
PROVIDER = "gen_ai_provider_name"

BUILTIN_METRICS: list[dict[str, Any]] = [
    {"kind": "error-rate", "max": 0.05},
    {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2},
    {"kind": "time-per-output-token", "percentile": "p50", "maxRatio": 1.2},
    {"kind": "request-duration", "percentile": "p99", "maxRatio": 1.5},
    {"kind": "output-tokens-per-second", "minRatio": 0.8},
]
CUSTOM_METRIC: dict[str, Any] = {
    "name": "kv-cache",
    "query": "max(vllm_kv_cache_usage{ {{selector}} }[{{window}}])",
    "max": 0.9,
}


def analysis(
    metrics: Sequence[Mapping[str, Any]] = BUILTIN_METRICS,
    window: str = "5m",
    min_requests: int = 10,
) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"window": window, "minRequests": min_requests, "metrics": list(metrics)}
    )


def request(
    key: str,
    stable: Mapping[str, str] | str = "m-v1",
    canary: Mapping[str, str] | str = "m-v2",
    spec: AnalysisSpec | None = None,
) -> AnalysisRequest:
    return AnalysisRequest(
        key=key,
        analysis=spec or analysis(),
        stable={MODEL: stable} if isinstance(stable, str) else dict(stable),
        canary={MODEL: canary} if isinstance(canary, str) else dict(canary),
        route="chat",
        namespace="llm",
    )


def batched(plan: QueryPlan) -> list[BatchedQuery]:
    return [query for query in plan.queries if isinstance(query, BatchedQuery)]


def customs(plan: QueryPlan) -> list[CustomQuery]:
    return [query for query in plan.queries if isinstance(query, CustomQuery)]


# ---------------------------------------------------------------------------------------------
# A tiny PromQL string-literal lexer, to check that values never leave their literal.


def literals(promql: str) -> tuple[str, list[str]]:
    """(the query with every "..." literal replaced by "_", the decoded literals).

    Decoding follows Prometheus (Go escapes) for the escapes we emit and rejects any other,
    as Prometheus would reject an unknown escape such as `\\.`.
    """
    skeleton: list[str] = []
    found: list[str] = []
    position = 0
    while position < len(promql):
        char = promql[position]
        if char != '"':
            assert char != "\n", "a raw newline outside a string"
            skeleton.append(char)
            position += 1
            continue
        decoded: list[str] = []
        position += 1
        while True:
            assert position < len(promql), f"unterminated string in {promql!r}"
            char = promql[position]
            assert char != "\n", "a raw newline inside a string is a PromQL parse error"
            if char == '"':
                position += 1
                break
            if char == "\\":
                escape = promql[position + 1]
                assert escape in '\\"nr', f"PromQL rejects the escape \\{escape}"
                decoded.append({"n": "\n", "r": "\r"}.get(escape, escape))
                position += 2
                continue
            decoded.append(char)
            position += 1
        skeleton.append('"_"')
        found.append("".join(decoded))
    return "".join(skeleton), found


def structure(promql: str) -> str:
    return literals(promql)[0]


# ---------------------------------------------------------------------------------------------
# Built-in PromQL, written out in full: these strings are what runs against the gateway.


def test_request_count_query() -> None:
    query = signal_promql(REQUESTS, 'm="a"', ["m"], timedelta(minutes=5))
    assert query == (
        'sum by (m) (increase(gen_ai_server_request_duration_seconds_count{m="a"}[5m]))'
    )


def test_error_rate_counts_failed_attempts_and_zero_errors_as_zero() -> None:
    query = signal_promql(Signal(SignalKind.ERROR_RATE), 'm="a"', ["m"], timedelta(minutes=5))
    total = 'sum by (m) (increase(gen_ai_server_request_duration_seconds_count{m="a"}[5m]))'
    errors = (
        "sum by (m) (increase(gen_ai_server_request_duration_seconds_count"
        '{m="a", error_type!=""}[5m]))'
    )
    assert query == f"({errors} or (0 * {total})) / {total}"


@pytest.mark.parametrize(
    ("kind", "percentile", "expected"),
    [
        (
            SignalKind.TTFT,
            Percentile.P95,
            "histogram_quantile(0.95, sum by (m, le) "
            '(rate(gen_ai_server_time_to_first_token_seconds_bucket{m="a"}[30s])))',
        ),
        (
            SignalKind.TIME_PER_OUTPUT_TOKEN,
            Percentile.P50,
            "histogram_quantile(0.5, sum by (m, le) "
            '(rate(gen_ai_server_time_per_output_token_seconds_bucket{m="a"}[30s])))',
        ),
        (
            SignalKind.REQUEST_DURATION,
            Percentile.P99,
            "histogram_quantile(0.99, sum by (m, le) "
            '(rate(gen_ai_server_request_duration_seconds_bucket{m="a", error_type=""}[30s])))',
        ),
    ],
)
def test_latency_percentiles(kind: SignalKind, percentile: Percentile, expected: str) -> None:
    assert signal_promql(Signal(kind, percentile), 'm="a"', ["m"], timedelta(seconds=30)) == (
        expected
    )


def test_latency_without_percentile_is_refused() -> None:
    with pytest.raises(ValueError, match="percentile"):
        signal_promql(Signal(SignalKind.TTFT), 'm="a"', ["m"], timedelta(minutes=1))


def test_output_tokens_per_second_divides_output_tokens_by_successful_request_time() -> None:
    query = signal_promql(
        Signal(SignalKind.OUTPUT_TOKENS_PER_SECOND), 'm="a"', ["m", "p"], timedelta(hours=1)
    )
    assert query == (
        "sum by (m, p) (rate(gen_ai_client_token_usage_sum"
        '{m="a", gen_ai_token_type="output"}[1h])) / '
        'sum by (m, p) (rate(gen_ai_server_request_duration_seconds_sum{m="a", error_type=""}[1h]))'
    )


@pytest.mark.parametrize(
    ("window", "rendered"),
    [
        (timedelta(minutes=5), "5m"),
        (timedelta(seconds=30), "30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(milliseconds=1500), "1s500ms"),
    ],
)
def test_window_as_promql_duration(window: timedelta, rendered: str) -> None:
    assert promql_duration(window) == rendered


@pytest.mark.parametrize("window", [timedelta(0), timedelta(seconds=-5)])
def test_window_must_be_positive(window: timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        promql_duration(window)


# ---------------------------------------------------------------------------------------------
# Escaping


def test_regex_literal_quotes_only_metacharacters() -> None:
    assert regex_literal("llama-3.1-8b") == r"llama-3\.1-8b"
    assert regex_literal(r"a|b(c)*+?[x]{2}^$\ ") == r"a\|b\(c\)\*\+\?\[x\]\{2\}\^\$\\ "


def test_promql_string_escapes_quotes_backslashes_and_newlines() -> None:
    assert promql_string('say "hi"\\\n\r') == r'"say \"hi\"\\\n\r"'


def test_set_matcher_uses_exact_match_for_one_value_and_an_alternation_for_several() -> None:
    assert set_matcher(MODEL, ["m-v1", "m-v1"]) == 'gen_ai_request_model="m-v1"'
    assert set_matcher(MODEL, ["m.v2", "m-v1"]) == r'gen_ai_request_model=~"m-v1|m\\.v2"'
    with pytest.raises(ValueError):
        set_matcher(MODEL, [])


@given(st.lists(st.text(), min_size=1, max_size=5), st.text())
def test_set_matcher_matches_exactly_its_values(values: list[str], other: str) -> None:
    # Python's re agrees with RE2 on escaped metacharacters; Prometheus anchors the regex.
    skeleton, (pattern,) = literals(set_matcher(MODEL, values))
    if len(set(values)) == 1:
        assert skeleton == f'{MODEL}="_"'
        assert pattern == values[0]
    else:
        assert skeleton == f'{MODEL}=~"_"'
        for value in values:
            assert re.fullmatch(pattern, value, flags=re.DOTALL)
        assert bool(re.fullmatch(pattern, other, flags=re.DOTALL)) == (other in values)


INJECTIONS = [
    '"} or vector(1) #',
    '"}) or vector(1) or sum(x{a="',
    "\\",
    '\\"',
    "a\nb",
    "m-v2|.*",
    ".*",
    "{{window}}",
    "`raw`",
    "'single'",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_label_values_cannot_change_the_structure_of_batched_queries(value: str) -> None:
    benign = plan_queries([request("r1", canary="benign"), request("r2", canary="other")])
    hostile = plan_queries([request("r1", canary=value), request("r2", canary="other")])
    assert [structure(query.promql) for query in hostile.queries] == [
        structure(query.promql) for query in benign.queries
    ]
    for query in hostile.queries:
        decoded = literals(query.promql)[1]
        assert any(re.fullmatch(pattern, value, flags=re.DOTALL) for pattern in decoded)


@pytest.mark.parametrize("value", INJECTIONS)
def test_label_values_cannot_change_the_structure_of_custom_queries(value: str) -> None:
    spec = analysis([CUSTOM_METRIC])
    benign = plan_queries([request("r", canary="benign", spec=spec)])
    hostile = plan_queries([request("r", canary=value, spec=spec)])
    assert [structure(q.promql) for q in hostile.queries] == [
        structure(q.promql) for q in benign.queries
    ]
    (canary,) = [q for q in customs(hostile) if q.ref.role is Role.CANARY]
    assert literals(canary.promql)[1] == [value]


@settings(max_examples=200)
@given(st.text(min_size=1), st.text(min_size=1))
def test_no_label_value_changes_the_query_structure(stable: str, canary: str) -> None:
    spec = analysis([*BUILTIN_METRICS, CUSTOM_METRIC])
    reference = plan_queries([request("r", "s", "c", spec=spec)])
    plan = plan_queries([request("r", stable, canary, spec=spec)])
    # Equal values collapse into one `=` matcher, which is a different (and harmless) shape.
    if stable != canary:
        assert [structure(q.promql) for q in plan.queries] == [
            structure(q.promql) for q in reference.queries
        ]
    for query in plan.queries:
        literals(query.promql)  # every literal decodes with Prometheus's escapes


# ---------------------------------------------------------------------------------------------
# Custom queries


def test_custom_query_gets_every_template_variable_per_variant() -> None:
    check = MetricCheck.model_validate(
        {
            "name": "c",
            "query": 'x{ {{selector}}, v="{{variant}}", r="{{namespace}}/{{route}}" }[{{window}}]',
            "max": 1,
        }
    )
    spec = analysis([check.model_dump(by_alias=True, exclude_none=True)], window="1h30m")
    req = request("r", stable={MODEL: "m-v1", PROVIDER: "openai"}, spec=spec)
    assert render_custom_query(check, req, Role.STABLE) == (
        'x{ gen_ai_provider_name="openai", gen_ai_request_model="m-v1", v="stable", '
        'r="llm/chat" }[1h30m]'
    )
    assert render_custom_query(check, req, Role.CANARY) == (
        'x{ gen_ai_request_model="m-v2", v="canary", r="llm/chat" }[1h30m]'
    )


def test_custom_template_substitution_is_single_pass() -> None:
    spec = analysis([CUSTOM_METRIC])
    plan = plan_queries([request("r", canary="{{window}}", spec=spec)])
    (canary,) = [q for q in customs(plan) if q.ref.role is Role.CANARY]
    assert canary.promql == 'max(vllm_kv_cache_usage{ gen_ai_request_model="{{window}}" }[5m])'


def test_render_custom_query_refuses_a_builtin_check() -> None:
    check = MetricCheck.model_validate(BUILTIN_METRICS[0])
    with pytest.raises(ValueError, match="not a custom query"):
        render_custom_query(check, request("r"), Role.CANARY)


# ---------------------------------------------------------------------------------------------
# Batching: one query per signal for all rollouts


@pytest.mark.parametrize("rollouts", [1, 5, 1000])
def test_one_query_per_metric_whatever_the_number_of_rollouts(rollouts: int) -> None:
    requests_ = [request(f"r{i}", f"m{i}-v1", f"m{i}-v2") for i in range(rollouts)]
    plan = plan_queries(requests_)
    assert len(plan.queries) == len(BUILTIN_METRICS) + 1  # + the request count
    assert sorted(query.purpose for query in plan.queries) == sorted(
        [
            "requests",
            "error-rate",
            "ttft-p95",
            "time-per-output-token-p50",
            "request-duration-p99",
            "output-tokens-per-second",
        ]
    )
    for query in batched(plan):
        # the request count needs canaries only; every other signal both variants
        per_rollout = 1 if query.signal == REQUESTS else 2
        assert len(query.members) == per_rollout * rollouts
    assert len(plan.checks) == len(BUILTIN_METRICS) * rollouts


def test_custom_checks_cost_two_queries_per_rollout() -> None:
    spec = analysis([*BUILTIN_METRICS, CUSTOM_METRIC])
    plan = plan_queries([request(f"r{i}", f"a{i}", f"b{i}", spec=spec) for i in range(7)])
    assert len(batched(plan)) == len(BUILTIN_METRICS) + 1
    assert len(customs(plan)) == 2 * 7


def test_windows_and_label_names_split_groups() -> None:
    five = analysis(window="5m")
    ten = analysis(window="10m")
    plan = plan_queries(
        [
            request("a", spec=five),
            request("b", "x1", "x2", spec=five),
            request("c", spec=ten),
            # same window, but selected by two labels: another group for each signal
            request("d", {MODEL: "m-v1", PROVIDER: "openai"}, {MODEL: "m-v2", PROVIDER: "aws"}),
            # stable and canary selected by different label names: both groups are used
            request("e", {MODEL: "m-v1"}, {MODEL: "m-v2", PROVIDER: "aws"}),
        ]
    )
    groups = {(q.signal, q.window, q.label_names) for q in batched(plan)}
    assert len(groups) == len(plan.queries)
    signals = len(BUILTIN_METRICS) + 1
    assert len(plan.queries) == 3 * signals  # (5m, model), (10m, model), (5m, model+provider)
    two_labels = [q for q in batched(plan) if q.label_names == (PROVIDER, MODEL)]
    ttft = next(q for q in two_labels if q.purpose == "ttft-p95")
    assert {m.ref for m in ttft.members} == {
        VariantRef("d", Role.STABLE),
        VariantRef("d", Role.CANARY),
        VariantRef("e", Role.CANARY),
    }
    assert f'{PROVIDER}=~"aws|openai"' in ttft.promql
    assert f"sum by ({PROVIDER}, {MODEL}, le)" in ttft.promql


def test_variants_shared_by_rollouts_are_matched_once() -> None:
    plan = plan_queries([request("a", "m-v1", "m-v2"), request("b", "m-v1", "m-v3")])
    error_rate = next(q for q in batched(plan) if q.purpose == "error-rate")
    assert f'{MODEL}=~"m-v1|m-v2|m-v3"' in error_rate.promql
    assert len(error_rate.members) == 4


def expected_query_count(requests_: Sequence[AnalysisRequest]) -> int:
    """The documented formula, computed independently of the planner."""
    groups: set[tuple[str, timedelta, frozenset[str]]] = set()
    custom = 0
    for req in requests_:
        window = req.analysis.window
        groups.add(("requests", window, frozenset(req.canary)))
        for check in req.analysis.metrics:
            if check.query is not None:
                custom += 2
                continue
            groups.add((check.name, window, frozenset(req.stable)))
            groups.add((check.name, window, frozenset(req.canary)))
    return len(groups) + custom


selectors = st.sampled_from(
    [
        {MODEL: "a"},
        {MODEL: "b"},
        {MODEL: "c.d"},
        {MODEL: "a", PROVIDER: "openai"},
        {PROVIDER: "aws"},
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            selectors,
            selectors,
            st.sampled_from(["1m", "5m"]),
            st.lists(st.sampled_from(range(len(BUILTIN_METRICS) + 1)), min_size=1, unique=True),
        ),
        max_size=12,
    )
)
def test_query_count_follows_the_formula(
    rollouts: list[tuple[dict[str, str], dict[str, str], str, list[int]]],
) -> None:
    catalogue = [*BUILTIN_METRICS, CUSTOM_METRIC]
    requests_ = [
        request(f"r{i}", stable, canary, analysis([catalogue[n] for n in metrics], window))
        for i, (stable, canary, window, metrics) in enumerate(rollouts)
    ]
    plan = plan_queries(requests_)
    assert len(plan.queries) == expected_query_count(requests_)
    # every check of every rollout is planned exactly once
    assert sorted((c.rollout, c.metric) for c in plan.checks) == sorted(
        (r.key, check.name) for r in requests_ for check in r.analysis.metrics
    )


def test_no_requests_no_queries() -> None:
    assert plan_queries([]) == QueryPlan(queries=(), checks=())


def test_rollout_keys_must_be_unique() -> None:
    with pytest.raises(ValueError, match="repeated: a"):
        plan_queries([request("a"), request("b"), request("a")])


def test_plans_do_not_depend_on_request_order() -> None:
    requests_ = [request(f"r{i}", f"s{i}", f"c{i}") for i in range(5)]
    forward = plan_queries(requests_).queries
    backward = plan_queries(list(reversed(requests_))).queries
    assert [q.promql for q in forward] == [q.promql for q in backward]


# ---------------------------------------------------------------------------------------------
# Splitting answers back per rollout and variant


def vector(*samples: tuple[dict[str, str], float]) -> Vector:
    return Vector(tuple(Sample(labels=labels, value=value) for labels, value in samples))


def results_for(plan: QueryPlan, answer: Mapping[str, QueryResult]) -> list[QueryResult]:
    """One result per planned query, chosen by its purpose (custom: purpose/role)."""
    results: list[QueryResult] = []
    for query in plan.queries:
        if isinstance(query, CustomQuery):
            results.append(answer[f"{query.purpose}/{query.ref.role.value}"])
        else:
            results.append(answer[query.purpose])
    return results


def test_batched_answers_are_split_back_per_rollout_and_variant() -> None:
    spec = analysis([BUILTIN_METRICS[0]])
    plan = plan_queries(
        [
            request("a", "m-v1", "m-v2", spec),
            request("b", "m-v1", "m-v3", spec),
            request("c", "m-v4", "m-v5", spec),
        ]
    )
    answers = {
        "requests": vector(({MODEL: "m-v2"}, 120.0), ({MODEL: "m-v3"}, 3.0)),
        "error-rate": vector(
            ({MODEL: "m-v1"}, 0.01),
            ({MODEL: "m-v2"}, 0.05),
            ({MODEL: "m-v3"}, math.nan),
            ({MODEL: "unrelated"}, 0.9),
        ),
    }
    measured = assemble_measurements(plan, results_for(plan, answers))
    assert measured["a"]["error-rate"] == Measurement(
        metric="error-rate", canary=0.05, stable=0.01, canary_requests=120.0
    )
    b = measured["b"]["error-rate"]
    assert b.stable == 0.01 and b.canary is not None and math.isnan(b.canary)
    assert b.canary_requests == 3.0 and b.error is None
    # no series at all: no data, which is not an error
    assert measured["c"]["error-rate"] == Measurement(metric="error-rate")


def test_split_ignores_cross_combinations_of_several_labels() -> None:
    spec = analysis([BUILTIN_METRICS[0]])
    plan = plan_queries(
        [
            request("a", {MODEL: "x", PROVIDER: "p1"}, {MODEL: "y", PROVIDER: "p1"}, spec),
            request("b", {MODEL: "x", PROVIDER: "p2"}, {MODEL: "y", PROVIDER: "p2"}, spec),
        ]
    )
    answers = {
        "requests": vector(
            ({MODEL: "y", PROVIDER: "p1"}, 10.0), ({MODEL: "y", PROVIDER: "p2"}, 20.0)
        ),
        "error-rate": vector(
            ({MODEL: "x", PROVIDER: "p1"}, 0.1),
            ({MODEL: "y", PROVIDER: "p1"}, 0.2),
            ({MODEL: "x", PROVIDER: "p2"}, 0.3),
            ({MODEL: "y", PROVIDER: "p2"}, 0.4),
        ),
    }
    measured = assemble_measurements(plan, results_for(plan, answers))
    assert (measured["a"]["error-rate"].stable, measured["a"]["error-rate"].canary) == (0.1, 0.2)
    assert (measured["b"]["error-rate"].stable, measured["b"]["error-rate"].canary) == (0.3, 0.4)
    assert measured["b"]["error-rate"].canary_requests == 20.0


def test_an_empty_selector_value_matches_the_series_without_that_label() -> None:
    spec = analysis([BUILTIN_METRICS[0]])
    plan = plan_queries(
        [request("a", {MODEL: "x", PROVIDER: ""}, {MODEL: "y", PROVIDER: "p"}, spec)]
    )
    answers = {
        "requests": vector(({MODEL: "y", PROVIDER: "p"}, 10.0)),
        "error-rate": vector(({MODEL: "x"}, 0.1), ({MODEL: "y", PROVIDER: "p"}, 0.2)),
    }
    measured = assemble_measurements(plan, results_for(plan, answers))["a"]["error-rate"]
    assert (measured.stable, measured.canary) == (0.1, 0.2)


def test_a_failed_query_is_an_error_on_every_check_that_needs_it() -> None:
    spec = analysis(BUILTIN_METRICS[:2])
    plan = plan_queries([request("a", spec=spec), request("b", "m-v3", "m-v4", spec)])
    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 50.0), ({MODEL: "m-v4"}, 50.0)),
        "error-rate": vector(({MODEL: "m-v1"}, 0.0), ({MODEL: "m-v2"}, 0.0)),
        "ttft-p95": QueryFailure("Prometheus answered HTTP 503 (timeout): query timed out"),
    }
    measured = assemble_measurements(plan, results_for(plan, answers))
    for rollout in ("a", "b"):
        ttft = measured[rollout]["ttft-p95"]
        # stated once, although the query carried both variants
        assert ttft.error == (
            "ttft-p95 query failed: Prometheus answered HTTP 503 (timeout): query timed out"
        )
        assert ttft.canary is None and ttft.stable is None
    assert measured["a"]["error-rate"].error is None
    assert measured["a"]["error-rate"].canary == 0.0


@pytest.mark.parametrize(("min_requests", "is_error"), [(10, True), (0, False)])
def test_a_failed_request_count_matters_only_when_min_requests_needs_it(
    min_requests: int, is_error: bool
) -> None:
    spec = analysis([BUILTIN_METRICS[0]], min_requests=min_requests)
    plan = plan_queries([request("a", spec=spec)])
    answers: dict[str, QueryResult] = {
        "requests": QueryFailure("boom"),
        "error-rate": vector(({MODEL: "m-v1"}, 0.0), ({MODEL: "m-v2"}, 0.1)),
    }
    measured = assemble_measurements(plan, results_for(plan, answers))["a"]["error-rate"]
    assert measured.canary == 0.1 and measured.canary_requests is None
    assert (measured.error == "requests query failed: boom") is is_error
    assert (measured.error is None) is not is_error


def test_custom_answers_one_value_per_variant() -> None:
    spec = analysis([CUSTOM_METRIC])
    plan = plan_queries([request("a", spec=spec)])
    many = vector(({"x": "1"}, 1.0), ({"x": "2"}, 2.0))

    def measure(canary: QueryResult, stable: QueryResult) -> Measurement:
        answers = {
            "requests": vector(({MODEL: "m-v2"}, 30.0)),
            "custom:kv-cache/canary": canary,
            "custom:kv-cache/stable": stable,
        }
        return assemble_measurements(plan, results_for(plan, answers))["a"]["kv-cache"]

    assert measure(vector(({}, 0.5)), Scalar(0.25)) == Measurement(
        metric="kv-cache", canary=0.5, stable=0.25, canary_requests=30.0
    )
    assert measure(vector(), vector()) == Measurement(metric="kv-cache", canary_requests=30.0)
    too_many = measure(many, vector(({}, 1.0)))
    assert too_many.error is not None
    assert "canary query" in too_many.error and "returned 2 series" in too_many.error
    assert too_many.stable == 1.0
    broken = measure(QueryFailure("parse error"), QueryFailure("parse error"))
    assert broken.error is not None
    assert "canary query `max(" in broken.error and "stable query `max(" in broken.error


def test_a_batched_query_answering_a_scalar_is_an_error() -> None:
    spec = analysis([BUILTIN_METRICS[0]])
    plan = plan_queries([request("a", spec=spec)])
    answers: dict[str, QueryResult] = {"requests": Scalar(1.0), "error-rate": vector()}
    measured = assemble_measurements(plan, results_for(plan, answers))["a"]["error-rate"]
    assert measured.error == "requests query returned a scalar, expected a vector"


def test_results_must_match_the_plan() -> None:
    plan = plan_queries([request("a")])
    with pytest.raises(ValueError, match="6 queries planned, 1 results given"):
        assemble_measurements(plan, [vector()])


def test_every_check_gets_a_measurement() -> None:
    spec = analysis([*BUILTIN_METRICS, CUSTOM_METRIC])
    plan = plan_queries([request("a", spec=spec), request("b", spec=spec)])
    measured = assemble_measurements(plan, [Vector() for _ in plan.queries])
    assert {key: sorted(m) for key, m in measured.items()} == {
        key: sorted(c.name for c in spec.metrics) for key in ("a", "b")
    }


def test_split_members_are_in_label_order() -> None:
    plan = plan_queries([request("a", {PROVIDER: "p", MODEL: "x"}, {PROVIDER: "q", MODEL: "y"})])
    ttft = next(q for q in batched(plan) if q.purpose == "ttft-p95")
    assert ttft.label_names == (PROVIDER, MODEL)  # sorted by name
    assert Member(VariantRef("a", Role.CANARY), ("q", "y")) in ttft.members


# ---------------------------------------------------------------------------------------------
# The request model


def test_request_for_policy_uses_the_variant_selectors() -> None:
    policy = RolloutPolicy.model_validate(
        {
            "apiVersion": "rollout.model-registry.io/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat-canary"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": "chat-v1", "modelNameOverride": "llama-v1"},
                "canary": {"backend": "chat-v2", "metricSelector": {PROVIDER: "aws"}},
                "steps": [10, 50],
                "analysis": {"metrics": BUILTIN_METRICS},
            },
        }
    )
    req = AnalysisRequest.for_policy(policy)
    assert (req.key, req.route, req.namespace) == ("chat-canary", "chat", "llm")
    assert req.stable == {MODEL: "llama-v1"} and req.canary == {PROVIDER: "aws"}
    assert AnalysisRequest.for_policy(policy, key="llm/chat-canary").key == "llm/chat-canary"


@pytest.mark.parametrize(
    "selector",
    [{}, {"__name__": "x"}, {"bad-label": "x"}, {'a"}': "x"}],
)
def test_request_refuses_selectors_that_would_change_the_query(selector: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        request("a", canary=selector)


# ---------------------------------------------------------------------------------------------
# Decoding Prometheus's answers (pure helpers of the adapter)


def test_decode_vector_with_special_floats() -> None:
    raw = [
        {"metric": {MODEL: "a"}, "value": [1.0, "0.25"]},
        {"metric": {MODEL: "b"}, "value": [1.0, "NaN"]},
        {"metric": {MODEL: "c"}, "value": [1.0, "+Inf"]},
        {"metric": {}, "value": [1.0, "-Inf"]},
    ]
    result = decode_result(raw)
    assert isinstance(result, Vector)
    values = [sample.value for sample in result.samples]
    assert values[0] == 0.25 and math.isnan(values[1])
    assert values[2] == math.inf and values[3] == -math.inf
    assert result.samples[0].labels == {MODEL: "a"}


def test_decode_scalar_empty_and_unusable_results() -> None:
    assert decode_result([1.0, "3"]) == Scalar(3.0)
    assert decode_result([]) == Vector()
    assert decode_result([1.0, "text"]) == QueryFailure(
        "the query returned a string, not a number: 'text'"
    )
    matrix = decode_result([{"metric": {}, "values": [[1.0, "1"]]}])
    assert isinstance(matrix, QueryFailure) and "range vector" in matrix.message
    assert isinstance(decode_result({"oops": 1}), QueryFailure)
    assert isinstance(decode_result([{"metric": {}, "value": [1.0, "x"]}]), QueryFailure)


def test_describe_api_error_keeps_prometheus_text() -> None:
    body = (
        b'{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": '
        b'1:5: parse error: unclosed left parenthesis"}'
    )
    text = f"HTTP Status Code 400 ({body!r})"
    assert describe_api_error(text) == (
        'Prometheus answered HTTP 400 (bad_data): invalid parameter "query": '
        "1:5: parse error: unclosed left parenthesis"
    )
    assert describe_api_error("HTTP Status Code 502 (b'<html>Bad Gateway</html>')") == (
        "Prometheus answered HTTP 502: <html>Bad Gateway</html>"
    )
    assert describe_api_error("something else") == "Prometheus error: something else"


def test_transport_cause_drops_the_url_long_wrappers() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    new_connection = NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
    new_connection.__cause__ = refused
    url = "/api/v1/query?query=" + "x" * 5000
    wrapped = requests.ConnectionError(MaxRetryError(None, url, new_connection))  # type: ignore[arg-type]
    assert transport_cause(wrapped) == "[Errno 111] Connection refused"


# ---------------------------------------------------------------------------------------------
# LLM checks: tokens, cost, cache, judges' histograms, per-tenant, effective windows

TENANT = "tenant"
STABLE_PRICE = Pricing(input=3.0, cached_input=0.3, cache_creation_input=3.75, output=15.0)
CANARY_PRICE = Pricing(input=1.0, output=5.0)  # no cache prices: the input price applies
TOKEN_MATCHER = 'gen_ai_token_type=~"cache_creation_input|cached_input|input|output|reasoning"'
LLM_METRICS: list[dict[str, Any]] = [
    {"kind": "cost-per-request", "maxRatio": 1.2},
    {"kind": "tokens-per-request", "tokenType": "output", "minRatio": 0.6},
    {"kind": "tokens-per-request", "tokenType": "reasoning", "max": 5000},
    {"kind": "cache-hit-ratio", "min": 0.1},
    {"kind": "ttft", "judge": {}},
    {"kind": "request-duration", "percentile": "p95", "maxRatio": 1.3, "judge": {}},
]


def llm_analysis(
    metrics: Sequence[Mapping[str, Any]] = LLM_METRICS,
    window: str = "5m",
    per_tenant: Mapping[str, Any] | None = None,
) -> AnalysisSpec:
    document: dict[str, Any] = {"window": window, "metrics": list(metrics)}
    if per_tenant is not None:
        document["perTenant"] = dict(per_tenant)
    return AnalysisSpec.model_validate(document)


def llm_request(
    key: str,
    stable: str = "m-v1",
    canary: str = "m-v2",
    spec: AnalysisSpec | None = None,
    effective_window: timedelta | None = None,
) -> AnalysisRequest:
    return AnalysisRequest(
        key=key,
        analysis=spec or llm_analysis(),
        stable={MODEL: stable},
        canary={MODEL: canary},
        route="chat",
        namespace="llm",
        stable_pricing=STABLE_PRICE,
        canary_pricing=CANARY_PRICE,
        effective_window=effective_window,
    )


def test_token_and_success_queries() -> None:
    window = timedelta(minutes=5)
    assert signal_promql(SUCCESSES, 'm="a"', ["m"], window) == (
        'sum by (m) (increase(gen_ai_server_request_duration_seconds_count{m="a", error_type=""}'
        "[5m]))"
    )
    assert signal_promql(TOKENS, 'm="a"', ["m"], window) == (
        "sum by (m, gen_ai_token_type) (increase(gen_ai_client_token_usage_sum"
        f'{{m="a", {TOKEN_MATCHER}}}[5m]))'
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            SignalKind.TTFT_BUCKETS,
            "sum by (m, le) (increase(gen_ai_server_time_to_first_token_seconds_bucket"
            '{m="a"}[1m]))',
        ),
        (
            SignalKind.TIME_PER_OUTPUT_TOKEN_BUCKETS,
            "sum by (m, le) (increase(gen_ai_server_time_per_output_token_seconds_bucket"
            '{m="a"}[1m]))',
        ),
        (
            SignalKind.REQUEST_DURATION_BUCKETS,
            "sum by (m, le) (increase(gen_ai_server_request_duration_seconds_bucket"
            '{m="a", error_type=""}[1m]))',
        ),
    ],
)
def test_histogram_bucket_queries(kind: SignalKind, expected: str) -> None:
    assert signal_promql(Signal(kind), 'm="a"', ["m"], timedelta(minutes=1)) == expected


def test_the_tenant_label_joins_the_by_clause_of_the_same_queries() -> None:
    spec = llm_analysis(
        [{"kind": "error-rate", "max": 0.05}, {"kind": "ttft", "percentile": "p95", "maxRatio": 2}],
        per_tenant={"label": TENANT, "minRequests": 5},
    )
    plan = plan_queries([llm_request("a", spec=spec), llm_request("b", "x-v1", "x-v2", spec)])
    by_purpose = {q.purpose: q.promql for q in batched(plan)}
    assert sorted(by_purpose) == [
        "error-rate",
        "error-rate by tenant",
        "requests",
        "requests by tenant",
        "ttft-p95",
        "ttft-p95 by tenant",
    ]
    models = 'gen_ai_request_model=~"m-v1|m-v2|x-v1|x-v2"'
    total = (
        f"sum by ({MODEL}, {TENANT}) (increase(gen_ai_server_request_duration_seconds_count"
        f"{{{models}}}[5m]))"
    )
    errors = (
        f"sum by ({MODEL}, {TENANT}) (increase(gen_ai_server_request_duration_seconds_count"
        f'{{{models}, error_type!=""}}[5m]))'
    )
    assert by_purpose["error-rate by tenant"] == f"({errors} or (0 * {total})) / {total}"
    assert by_purpose["ttft-p95 by tenant"] == (
        f"histogram_quantile(0.95, sum by ({MODEL}, {TENANT}, le) "
        f"(rate(gen_ai_server_time_to_first_token_seconds_bucket{{{models}}}[5m])))"
    )
    assert by_purpose["requests by tenant"] == (
        f"sum by ({MODEL}, {TENANT}) (increase(gen_ai_server_request_duration_seconds_count"
        f'{{gen_ai_request_model=~"m-v2|x-v2"}}[5m]))'
    )


@pytest.mark.parametrize("rollouts", [1, 7, 500])
def test_all_token_checks_of_all_rollouts_cost_two_queries(rollouts: int) -> None:
    spec = llm_analysis(LLM_METRICS[:4])  # cost, output tokens, reasoning tokens, cache hits
    plan = plan_queries([llm_request(f"r{i}", f"s{i}", f"c{i}", spec) for i in range(rollouts)])
    assert sorted(q.purpose for q in plan.queries) == [
        "requests",
        "successful-requests",
        "tokens",
    ]
    assert len(plan.checks) == 4 * rollouts


def test_judges_add_one_histogram_query_per_latency_metric() -> None:
    plan = plan_queries([llm_request(f"r{i}", f"s{i}", f"c{i}") for i in range(20)])
    assert sorted(q.purpose for q in plan.queries) == [
        "request-duration-buckets",
        "request-duration-p95",
        "requests",
        "successful-requests",
        "tokens",
        "ttft-buckets",
    ]


# What each check of LLM_METRICS and of the tenant catalogue reads, written independently of the
# planner: (aggregate signals, per-tenant signals).
SIGNALS_BY_CHECK: dict[str, tuple[set[str], set[str]]] = {
    "cost-per-request": ({"tokens", "successful-requests"}, {"tokens", "successful-requests"}),
    "tokens-per-request-output": (
        {"tokens", "successful-requests"},
        {"tokens", "successful-requests"},
    ),
    "tokens-per-request-reasoning": ({"tokens", "successful-requests"}, set()),  # max only
    "cache-hit-ratio": ({"tokens"}, set()),  # min only
    "ttft": ({"ttft-buckets"}, {"ttft-buckets"}),
    "request-duration-p95": (
        {"request-duration-p95", "request-duration-buckets"},
        {"request-duration-p95", "request-duration-buckets"},
    ),
    "error-rate": ({"error-rate"}, {"error-rate"}),
}
CATALOGUE = [*LLM_METRICS, {"kind": "error-rate", "max": 0.05}]


def expected_llm_query_count(requests_: Sequence[AnalysisRequest]) -> int:
    groups: set[tuple[str, timedelta, bool]] = set()
    for req in requests_:
        tenants = req.analysis.per_tenant is not None
        groups.add(("requests", req.window, False))
        if tenants:
            groups.add(("requests", req.window, True))
        for check in req.analysis.metrics:
            aggregate, per_tenant = SIGNALS_BY_CHECK[check.name]
            groups.update((signal, req.window, False) for signal in aggregate)
            if tenants:
                groups.update((signal, req.window, True) for signal in per_tenant)
    return len(groups)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1m", "5m"]),
            st.booleans(),
            st.lists(st.sampled_from(range(len(CATALOGUE))), min_size=1, unique=True),
            st.sampled_from([None, 30.2, 30.9, 45.0, 600.0]),
        ),
        max_size=10,
    )
)
def test_llm_query_count_follows_the_formula(
    rollouts: list[tuple[str, bool, list[int], float | None]],
) -> None:
    requests_ = []
    for i, (window, tenants, metrics, effective) in enumerate(rollouts):
        checks = [CATALOGUE[n] for n in metrics]
        # perTenant needs a check it can judge per tenant
        per_tenant = tenants and any(
            SIGNALS_BY_CHECK[c.name][1] for c in llm_analysis(checks).metrics
        )
        spec = llm_analysis(checks, window, {"label": TENANT} if per_tenant else None)
        effective_window = None if effective is None else timedelta(seconds=effective)
        requests_.append(llm_request(f"r{i}", f"s{i}", f"c{i}", spec, effective_window))
    plan = plan_queries(requests_)
    assert len(plan.queries) == expected_llm_query_count(requests_)
    assert sorted((c.rollout, c.metric) for c in plan.checks) == sorted(
        (r.key, check.name) for r in requests_ for check in r.analysis.metrics
    )


@pytest.mark.parametrize("value", INJECTIONS)
def test_label_values_cannot_change_the_structure_of_llm_queries(value: str) -> None:
    spec = llm_analysis(
        [*LLM_METRICS, {"kind": "error-rate", "max": 0.1}], per_tenant={"label": TENANT}
    )
    benign = plan_queries(
        [llm_request("r1", canary="benign", spec=spec), llm_request("r2", spec=spec)]
    )
    hostile = plan_queries(
        [llm_request("r1", canary=value, spec=spec), llm_request("r2", spec=spec)]
    )
    assert [structure(q.promql) for q in hostile.queries] == [
        structure(q.promql) for q in benign.queries
    ]


# Effective windows


def test_the_effective_window_clips_and_rounds_down_to_whole_seconds() -> None:
    spec = llm_analysis(window="5m")
    assert llm_request("a", spec=spec).window == timedelta(minutes=5)
    assert llm_request("a", spec=spec, effective_window=timedelta(seconds=42.9)).window == (
        timedelta(seconds=42)
    )
    # never longer than the policy's window
    assert llm_request("a", spec=spec, effective_window=timedelta(hours=1)).window == (
        timedelta(minutes=5)
    )
    # a policy window that is not whole seconds is kept as it is when not clipped
    odd = AnalysisSpec.model_validate(
        {"interval": "1s", "window": "1500ms", "metrics": [{"kind": "error-rate", "max": 0.1}]}
    )
    assert llm_request("a", spec=odd, effective_window=timedelta(seconds=2)).window == (
        timedelta(milliseconds=1500)
    )
    assert llm_request("a", spec=odd, effective_window=timedelta(seconds=1.2)).window == (
        timedelta(seconds=1)
    )


@pytest.mark.parametrize("effective", [timedelta(0), timedelta(milliseconds=999), timedelta(-1)])
def test_an_effective_window_below_a_second_is_refused(effective: timedelta) -> None:
    with pytest.raises(ValueError, match="no traffic to judge yet"):
        llm_request("a", effective_window=effective)


def test_effective_windows_reach_the_promql_and_group_the_batches() -> None:
    spec = llm_analysis([{"kind": "error-rate", "max": 0.1}, CUSTOM_METRIC])
    plan = plan_queries(
        [
            llm_request("a", "a1", "a2", spec, timedelta(seconds=42.2)),
            llm_request("b", "b1", "b2", spec, timedelta(seconds=42.9)),  # same second as a
            llm_request("c", "c1", "c2", spec, timedelta(seconds=41.9)),
            llm_request("d", "d1", "d2", spec),  # the policy's 5m
        ]
    )
    windows = sorted({q.window for q in batched(plan)})
    assert windows == [timedelta(seconds=41), timedelta(seconds=42), timedelta(minutes=5)]
    assert len(batched(plan)) == 2 * 3  # (requests, error-rate) x 3 windows
    error_rate_42 = next(
        q for q in batched(plan) if q.purpose == "error-rate" and q.window.seconds == 42
    )
    assert {m.ref.rollout for m in error_rate_42.members} == {"a", "b"}
    assert "[42s]" in error_rate_42.promql and "[5m]" not in error_rate_42.promql
    custom_a = next(q for q in customs(plan) if q.ref == VariantRef("a", Role.CANARY))
    assert custom_a.promql.endswith("[42s])")


def test_request_for_policy_carries_pricing_and_the_effective_window() -> None:
    policy = RolloutPolicy.model_validate(
        {
            "apiVersion": "rollout.model-registry.io/v1alpha1",
            "kind": "RolloutPolicy",
            "metadata": {"name": "llm"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {
                    "backend": "v1",
                    "modelNameOverride": "m-v1",
                    "pricing": {"input": 3, "output": 15},
                },
                "canary": {
                    "backend": "v2",
                    "modelNameOverride": "m-v2",
                    "pricing": {"input": 1, "output": 5},
                },
                "steps": [10],
                "analysis": {"metrics": [{"kind": "cost-per-request", "maxRatio": 1.2}]},
            },
        }
    )
    req = AnalysisRequest.for_policy(policy, effective_window=timedelta(seconds=30))
    assert req.stable_pricing == Pricing(input=3, output=15)
    assert req.canary_pricing == Pricing(input=1, output=5)
    assert req.window == timedelta(seconds=30)
    assert AnalysisRequest.for_policy(policy).effective_window is None


def test_a_cost_check_needs_both_prices_in_the_request() -> None:
    with pytest.raises(ValueError, match="need stable_pricing and canary_pricing"):
        AnalysisRequest(
            key="a",
            analysis=llm_analysis(LLM_METRICS[:1]),
            stable={MODEL: "m-v1"},
            canary={MODEL: "m-v2"},
            route="chat",
            namespace="llm",
            stable_pricing=STABLE_PRICE,
        )


# Turning the answers into values


def tokens_vector(*rows: tuple[str, str, float]) -> Vector:
    return vector(
        *(({MODEL: model, "gen_ai_token_type": kind}, value) for model, kind, value in rows)
    )


def llm_measure(
    spec: AnalysisSpec, answers: Mapping[str, QueryResult], key: str = "a"
) -> dict[str, Measurement]:
    plan = plan_queries([llm_request(key, spec=spec)])
    return assemble_measurements(plan, results_for(plan, answers))[key]


def test_cost_per_request_from_token_sums_prices_and_successful_requests() -> None:
    spec = llm_analysis(LLM_METRICS[:4])
    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 110.0)),
        "successful-requests": vector(({MODEL: "m-v1"}, 200.0), ({MODEL: "m-v2"}, 100.0)),
        "tokens": tokens_vector(
            # stable: 200 requests, 1000 input tokens each of which 600 cached and 100 written
            ("m-v1", "input", 200_000),
            ("m-v1", "cached_input", 120_000),
            ("m-v1", "cache_creation_input", 20_000),
            ("m-v1", "output", 40_000),
            ("m-v1", "reasoning", 30_000),  # inside output: never billed twice
            # canary: no cache at all, no reasoning series
            ("m-v2", "input", 100_000),
            ("m-v2", "output", 50_000),
        ),
    }
    measured = llm_measure(spec, answers)
    cost = measured["cost-per-request"]
    stable_usd = (60_000 * 3.0 + 120_000 * 0.3 + 20_000 * 3.75 + 40_000 * 15.0) / 1e6
    canary_usd = (100_000 * 1.0 + 50_000 * 5.0) / 1e6
    assert cost.stable == pytest.approx(stable_usd / 200)
    assert cost.canary == pytest.approx(canary_usd / 100)
    assert cost.canary_requests == 110.0 and cost.error is None

    output = measured["tokens-per-request-output"]
    assert (output.canary, output.stable) == (pytest.approx(500.0), pytest.approx(200.0))
    reasoning = measured["tokens-per-request-reasoning"]
    # a type the canary never reported: none of those tokens
    assert (reasoning.canary, reasoning.stable) == (0.0, pytest.approx(150.0))
    hits = measured["cache-hit-ratio"]
    assert (hits.canary, hits.stable) == (0.0, pytest.approx(0.6))


def test_token_checks_without_series_are_no_data_and_without_requests_nan() -> None:
    spec = llm_analysis(LLM_METRICS[:4])
    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 0.0)),
        "successful-requests": vector(({MODEL: "m-v2"}, 0.0)),
        # the canary has series but no traffic in the window; stable has no series at all
        "tokens": tokens_vector(("m-v2", "input", 0.0), ("m-v2", "output", 0.0)),
    }
    measured = llm_measure(spec, answers)
    for name in ("cost-per-request", "tokens-per-request-output", "cache-hit-ratio"):
        m = measured[name]
        assert m.stable is None, name
        assert m.canary is not None and math.isnan(m.canary), name
        assert m.error is None


def test_a_failed_token_query_is_an_error_on_every_token_check() -> None:
    spec = llm_analysis(LLM_METRICS[:4])
    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 50.0)),
        "successful-requests": vector(({MODEL: "m-v1"}, 1.0), ({MODEL: "m-v2"}, 1.0)),
        "tokens": QueryFailure("boom"),
    }
    for m in llm_measure(spec, answers).values():
        assert m.error == "tokens query failed: boom"


def test_histograms_come_back_as_sorted_buckets() -> None:
    spec = llm_analysis([LLM_METRICS[4]])  # a judge alone: no value query

    def buckets(model: str, *counts: float) -> list[tuple[dict[str, str], float]]:
        return [
            ({MODEL: model, "le": le}, count)
            for le, count in zip(["0.1", "+Inf", "0.5"], counts, strict=True)
        ]

    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 30.0)),
        "ttft-buckets": vector(
            *buckets("m-v1", 5.0, 100.0, 60.0), *buckets("m-v2", 1.0, 30.0, 9.0)
        ),
    }
    ttft = llm_measure(spec, answers)["ttft"]
    assert (ttft.canary, ttft.stable) == (None, None)
    assert ttft.stable_buckets == ((0.1, 5.0), (0.5, 60.0), (math.inf, 100.0))
    assert ttft.canary_buckets == ((0.1, 1.0), (0.5, 9.0), (math.inf, 30.0))
    assert ttft.tenants is None


def test_per_tenant_shares_are_measured_for_each_tenant_with_canary_traffic() -> None:
    spec = llm_analysis(
        [
            {"kind": "error-rate", "max": 0.05},
            {"kind": "tokens-per-request", "tokenType": "output", "minRatio": 0.5},
            {"kind": "cache-hit-ratio", "min": 0.1},  # absolute only: not per tenant
        ],
        per_tenant={"label": TENANT, "minRequests": 5},
    )

    def by_tenant(*rows: tuple[str, str, float], **extra: str) -> Vector:
        return vector(*(({MODEL: m, TENANT: t, **extra}, v) for m, t, v in rows))

    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 100.0)),
        "requests by tenant": by_tenant(("m-v2", "acme", 60.0), ("m-v2", "", 40.0)),
        "error-rate": vector(({MODEL: "m-v1"}, 0.0), ({MODEL: "m-v2"}, 0.3)),
        "error-rate by tenant": by_tenant(
            ("m-v1", "acme", 0.0), ("m-v2", "acme", 0.5), ("m-v1", "globex", 0.0)
        ),
        "successful-requests": vector(({MODEL: "m-v1"}, 100.0), ({MODEL: "m-v2"}, 70.0)),
        "successful-requests by tenant": by_tenant(("m-v1", "acme", 50.0), ("m-v2", "acme", 30.0)),
        "tokens": tokens_vector(("m-v1", "output", 10_000), ("m-v2", "output", 7_000)),
        "tokens by tenant": vector(
            ({MODEL: "m-v1", TENANT: "acme", "gen_ai_token_type": "output"}, 5_000.0),
            ({MODEL: "m-v2", TENANT: "acme", "gen_ai_token_type": "output"}, 1_500.0),
        ),
    }
    measured = llm_measure(spec, answers)
    errors = measured["error-rate"]
    assert (errors.canary, errors.stable) == (0.3, 0.0)
    assert errors.tenants == (
        TenantMeasurement(tenant="", canary_requests=40.0),
        TenantMeasurement(tenant="acme", canary=0.5, stable=0.0, canary_requests=60.0),
    )
    tokens = measured["tokens-per-request-output"].tenants
    assert tokens is not None
    acme = next(t for t in tokens if t.tenant == "acme")
    assert (acme.canary, acme.stable) == (pytest.approx(50.0), pytest.approx(100.0))
    assert measured["cache-hit-ratio"].tenants is None


def test_a_failed_tenant_query_spares_the_aggregate() -> None:
    spec = llm_analysis([{"kind": "error-rate", "max": 0.05}], per_tenant={"label": TENANT})
    answers: dict[str, QueryResult] = {
        "requests": vector(({MODEL: "m-v2"}, 100.0)),
        "requests by tenant": vector(({MODEL: "m-v2", TENANT: "acme"}, 100.0)),
        "error-rate": vector(({MODEL: "m-v1"}, 0.0), ({MODEL: "m-v2"}, 0.01)),
        "error-rate by tenant": QueryFailure("too many series"),
    }
    errors = llm_measure(spec, answers)["error-rate"]
    assert errors.error is None and errors.canary == 0.01
    assert errors.tenants_error == "error-rate by tenant query failed: too many series"
