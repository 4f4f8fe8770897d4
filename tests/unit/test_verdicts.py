"""Verdicts: one measurement against one check, and many checks folded into one."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollout.analysis import (
    AnalysisVerdict,
    CheckOutcome,
    Measurement,
    MetricVerdict,
    TenantMeasurement,
    TenantVerdict,
    canary_stable_ratio,
    evaluate_analysis,
    evaluate_measurements,
    evaluate_metric,
)
from rollout.policy import AnalysisSpec, MetricCheck

PASS = CheckOutcome.PASS
FAIL = CheckOutcome.FAIL
INCONCLUSIVE = CheckOutcome.INCONCLUSIVE
ERROR = CheckOutcome.ERROR
INF = math.inf
NAN = math.nan


def check(**thresholds: float) -> MetricCheck:
    # A custom query accepts any value range, including the negative ones some tests need.
    return MetricCheck.model_validate({"name": "m", "query": "x{ {{selector}} }", **thresholds})


def measure(
    canary: float | None = None,
    stable: float | None = None,
    requests: float | None = 100,
    error: str | None = None,
) -> Measurement:
    return Measurement(
        metric="m", canary=canary, stable=stable, canary_requests=requests, error=error
    )


# (thresholds, measurement, min_requests, expected outcome, words expected in the reason)
CASES: list[tuple[str, dict[str, float], Measurement, int, CheckOutcome, str]] = [
    # The provider error comes first: nothing else about the measurement can be trusted.
    (
        "provider error",
        {"max": 1},
        measure(5, error="timeout"),
        10,
        ERROR,
        "provider error: timeout",
    ),
    ("error beats low traffic", {"max": 1}, measure(5, requests=0, error="x"), 10, ERROR, "x"),
    # Traffic gate
    ("unknown request count", {"max": 1}, measure(0.5, requests=None), 10, INCONCLUSIVE, "unknown"),
    ("NaN request count", {"max": 1}, measure(0.5, requests=NAN), 10, INCONCLUSIVE, "unknown"),
    ("too little traffic", {"max": 1}, measure(0.5, requests=9), 10, INCONCLUSIVE, "9 requests"),
    (
        "breach on too little traffic",
        {"max": 1},
        measure(50, requests=3),
        10,
        INCONCLUSIVE,
        "10 needed",
    ),
    ("exactly min requests", {"max": 1}, measure(0.5, requests=10), 10, PASS, "within"),
    ("no gate with minRequests 0", {"max": 1}, measure(0.5, requests=None), 0, PASS, "within"),
    (
        "zero traffic, gate off, no data",
        {"max": 1},
        measure(None, requests=0),
        0,
        INCONCLUSIVE,
        "no canary data",
    ),
    # Missing canary data
    ("empty result", {"max": 1}, measure(None), 10, INCONCLUSIVE, "no canary data"),
    ("NaN canary", {"max": 1}, measure(NAN), 10, INCONCLUSIVE, "NaN"),
    ("NaN canary with relative", {"maxRatio": 2}, measure(NAN, 1), 10, INCONCLUSIVE, "NaN"),
    # Absolute thresholds (inclusive bounds)
    ("below max", {"max": 1}, measure(0.5), 10, PASS, "within"),
    ("at max", {"max": 1}, measure(1), 10, PASS, "within"),
    ("above max", {"max": 1}, measure(1.5), 10, FAIL, "canary 1.5 > max 1"),
    ("at min", {"min": 10}, measure(10), 10, PASS, "within"),
    ("below min", {"min": 10}, measure(9), 10, FAIL, "canary 9 < min 10"),
    ("+inf against max", {"max": 2}, measure(INF), 10, FAIL, "canary inf > max 2"),
    ("+inf against min", {"min": 2}, measure(INF), 10, PASS, "within"),
    ("-inf against min", {"min": 2}, measure(-INF), 10, FAIL, "< min"),
    ("both bounds, between", {"min": 1, "max": 2}, measure(1.5), 10, PASS, "within"),
    # Ratio
    ("ratio within", {"maxRatio": 1.2}, measure(1.1, 1.0), 10, PASS, "within"),
    ("ratio at limit", {"maxRatio": 1.5}, measure(3, 2), 10, PASS, "within"),
    (
        "ratio above",
        {"maxRatio": 1.2},
        measure(1.3, 1.0),
        10,
        FAIL,
        "canary/stable 1.3 (1.3 vs 1) > maxRatio 1.2",
    ),
    ("ratio below min", {"minRatio": 0.8}, measure(7, 10), 10, FAIL, "< minRatio 0.8"),
    (
        "ratio, no stable data",
        {"maxRatio": 1.2},
        measure(1.0, None),
        10,
        INCONCLUSIVE,
        "no stable data",
    ),
    (
        "ratio, NaN stable",
        {"maxRatio": 1.2},
        measure(1.0, NAN),
        10,
        INCONCLUSIVE,
        "stable value is NaN",
    ),
    (
        "no stable but max breached",
        {"max": 1, "maxRatio": 2},
        measure(5, None),
        10,
        FAIL,
        "> max 1",
    ),
    ("0/0 is a ratio of 1", {"maxRatio": 1.2}, measure(0, 0), 10, PASS, "within"),
    ("0/0 against a ratio below 1", {"maxRatio": 0.5}, measure(0, 0), 10, FAIL, "canary/stable 1"),
    ("x/0 is infinitely worse", {"maxRatio": 10}, measure(0.001, 0), 10, FAIL, "canary/stable inf"),
    ("x/0 passes minRatio", {"minRatio": 0.5}, measure(0.001, 0), 10, PASS, "within"),
    ("inf/finite", {"maxRatio": 2}, measure(INF, 1), 10, FAIL, "canary/stable inf"),
    ("finite/inf", {"maxRatio": 2}, measure(1, INF), 10, PASS, "within"),
    ("finite/inf under minRatio", {"minRatio": 0.5}, measure(1, INF), 10, FAIL, "canary/stable 0"),
    ("inf/inf", {"maxRatio": 2}, measure(INF, INF), 10, INCONCLUSIVE, "ratio undefined"),
    ("negative stable", {"maxRatio": 2}, measure(1, -1), 10, INCONCLUSIVE, "ratio undefined"),
    ("negative canary", {"minRatio": 0.5}, measure(-1, 1), 10, INCONCLUSIVE, "ratio undefined"),
    # Difference
    ("difference within", {"maxDifference": 0.01}, measure(0.015, 0.01), 10, PASS, "within"),
    (
        "difference above",
        {"maxDifference": 0.01},
        measure(0.03, 0.01),
        10,
        FAIL,
        "canary-stable 0.02",
    ),
    (
        "difference below min",
        {"minDifference": -5},
        measure(40, 50),
        10,
        FAIL,
        "< minDifference -5",
    ),
    ("difference with zero stable", {"maxDifference": 0.01}, measure(0.005, 0), 10, PASS, "within"),
    (
        "inf - inf",
        {"maxDifference": 1},
        measure(INF, INF),
        10,
        INCONCLUSIVE,
        "difference undefined",
    ),
    (
        "difference, no stable",
        {"maxDifference": 1},
        measure(1, None),
        10,
        INCONCLUSIVE,
        "no stable data",
    ),
    # Several thresholds
    (
        "every breach listed",
        {"max": 1, "maxRatio": 1.1},
        measure(2, 1),
        10,
        FAIL,
        "> max 1; canary/stable 2",
    ),
    (
        "undefined ratio, breached difference",
        {"maxRatio": 2, "maxDifference": 0},
        measure(1, -1),
        10,
        FAIL,
        "> maxDifference 0",
    ),
    (
        "undefined ratio, absolute fine",
        {"max": 5, "maxRatio": 2},
        measure(1, -1),
        10,
        INCONCLUSIVE,
        "ratio undefined",
    ),
]


@pytest.mark.parametrize(
    ("thresholds", "measurement", "min_requests", "expected", "reason_part"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_evaluate_metric(
    thresholds: dict[str, float],
    measurement: Measurement,
    min_requests: int,
    expected: CheckOutcome,
    reason_part: str,
) -> None:
    verdict = evaluate_metric(check(**thresholds), measurement, min_requests)
    assert verdict.outcome is expected, verdict.reason
    assert reason_part in verdict.reason


def test_metric_verdict_carries_values_and_threshold() -> None:
    verdict = evaluate_metric(check(max=0.02, maxRatio=1.5), measure(0.05, 0.01), 10)
    assert verdict == MetricVerdict(
        metric="m",
        outcome=FAIL,
        canary=0.05,
        stable=0.01,
        threshold="canary <= 0.02, canary/stable <= 1.5",
        reason="canary 0.05 > max 0.02; canary/stable 5 (0.05 vs 0.01) > maxRatio 1.5",
    )


@pytest.mark.parametrize(
    ("canary", "stable", "expected"),
    [
        (1, 2, 0.5),
        (0, 0, 1.0),
        (3, 0, INF),
        (INF, 2, INF),
        (2, INF, 0.0),
        (INF, INF, None),
        (-1, 2, None),
        (1, -2, None),
    ],
)
def test_canary_stable_ratio(canary: float, stable: float, expected: float | None) -> None:
    assert canary_stable_ratio(canary, stable) == expected


# --------------------------------------------------------------------------------------------
# Folding


def metric_verdict(name: str, outcome: CheckOutcome) -> MetricVerdict:
    return MetricVerdict(
        metric=name, outcome=outcome, canary=1, stable=1, threshold="t", reason=f"{name} said so"
    )


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], INCONCLUSIVE),
        ([PASS], PASS),
        ([PASS, PASS, PASS], PASS),
        ([PASS, INCONCLUSIVE], INCONCLUSIVE),
        ([INCONCLUSIVE, ERROR], ERROR),
        ([PASS, ERROR], ERROR),
        ([ERROR, FAIL], FAIL),
        ([FAIL, INCONCLUSIVE, PASS], FAIL),
        ([PASS, PASS, FAIL], FAIL),
    ],
)
def test_evaluate_analysis_precedence(outcomes: list[CheckOutcome], expected: CheckOutcome) -> None:
    verdicts = [metric_verdict(f"m{i}", outcome) for i, outcome in enumerate(outcomes)]
    result = evaluate_analysis(verdicts)
    assert result.outcome is expected
    assert result.metrics == tuple(verdicts)


def test_reason_names_only_the_deciding_metrics() -> None:
    result = evaluate_analysis(
        [
            metric_verdict("ttft", PASS),
            metric_verdict("errors", FAIL),
            metric_verdict("latency", INCONCLUSIVE),
            metric_verdict("tpot", FAIL),
        ]
    )
    assert result.reason == "errors: errors said so; tpot: tpot said so"
    assert [v.metric for v in result.failed_metrics()] == ["errors", "tpot"]


PRECEDENCE = [PASS, INCONCLUSIVE, ERROR, FAIL]


@given(st.lists(st.sampled_from(list(CheckOutcome)), min_size=1), st.randoms())
def test_fold_is_the_worst_outcome_whatever_the_order(
    outcomes: list[CheckOutcome], random: Any
) -> None:
    verdicts = [metric_verdict(f"m{i}", outcome) for i, outcome in enumerate(outcomes)]
    shuffled = list(verdicts)
    random.shuffle(shuffled)
    expected = max(outcomes, key=PRECEDENCE.index)
    assert evaluate_analysis(verdicts).outcome is expected
    assert evaluate_analysis(shuffled).outcome is expected


def test_evaluate_measurements_matches_by_name_and_errors_on_missing() -> None:
    analysis = AnalysisSpec.model_validate(
        {
            "minRequests": 5,
            "metrics": [
                {"kind": "error-rate", "max": 0.1},
                {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2},
            ],
        }
    )
    measured = {
        "error-rate": Measurement(metric="error-rate", canary=0.01, canary_requests=50),
    }
    result = evaluate_measurements(analysis, measured)
    assert result.outcome is ERROR
    assert [(v.metric, v.outcome) for v in result.metrics] == [
        ("error-rate", PASS),
        ("ttft-p95", ERROR),
    ]
    assert "no measurement" in result.reason

    measured["ttft-p95"] = Measurement(metric="ttft-p95", canary=1, stable=1, canary_requests=4)
    low_traffic = evaluate_measurements(analysis, measured)
    assert low_traffic.outcome is INCONCLUSIVE  # 4 < minRequests 5 for ttft


def test_verdicts_survive_json_with_infinities_and_nan() -> None:
    verdict = evaluate_analysis(
        [
            evaluate_metric(check(max=1), measure(INF), 1),
            evaluate_metric(check(max=1), measure(NAN), 1),
        ]
    )
    text = verdict.model_dump_json()
    assert "Infinity" in text and "NaN" in text  # strings: JSON has no such numbers
    loaded = AnalysisVerdict.model_validate_json(text)
    assert loaded.metrics[0].canary == INF
    canary = loaded.metrics[1].canary
    assert canary is not None and math.isnan(canary)
    assert loaded.outcome is verdict.outcome


# --------------------------------------------------------------------------------------------
# Units, the judge and per-tenant verdicts

TTFT_BOUNDS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def histogram(values: list[float]) -> tuple[tuple[float, float], ...]:
    """Cumulative counts of these observations over TTFT_BOUNDS, as increase(_bucket) gives."""
    return (
        *((b, float(sum(v <= b for v in values))) for b in TTFT_BOUNDS),
        (INF, float(len(values))),
    )


def spread(median: float, n: int) -> list[float]:
    """n observations spread evenly (in log space) over median/2 .. median*2."""
    return [median * 2 ** (-1 + 2 * (i + 0.5) / n) for i in range(n)]


def latency_check(**fields: Any) -> MetricCheck:
    return MetricCheck.model_validate({"kind": "ttft", **fields})


def test_verdicts_carry_their_unit_and_describe_it() -> None:
    cost = MetricCheck.model_validate({"kind": "cost-per-request", "max": 0.01, "maxRatio": 1.2})
    verdict = evaluate_metric(
        cost,
        Measurement(metric="cost-per-request", canary=0.0042, stable=0.002, canary_requests=50),
        10,
    )
    assert verdict.unit == "USD/request"
    assert verdict.outcome is FAIL
    assert verdict.describe() == (
        "cost-per-request fail: canary 0.0042 USD/request, stable 0.002 USD/request "
        "(canary <= 0.01, canary/stable <= 1.2)"
    )
    tokens = MetricCheck.model_validate(
        {"kind": "tokens-per-request", "tokenType": "output", "min": 10}
    )
    described = evaluate_metric(
        tokens, Measurement(metric="t", canary=None, canary_requests=50), 10
    )
    assert described.describe() == (
        "tokens-per-request-output inconclusive: canary no data (canary >= 10)"
    )
    # custom queries have no known unit
    assert (
        evaluate_metric(check(max=1), measure(0.5), 10).describe()
        == "m pass: canary 0.5 (canary <= 1)"
    )


def test_a_judge_alone_shows_the_medians_and_decides() -> None:
    slow = Measurement(
        metric="ttft",
        canary_requests=60,
        canary_buckets=histogram(spread(0.6, 60)),
        stable_buckets=histogram(spread(0.3, 900)),
    )
    verdict = evaluate_metric(latency_check(judge={}), slow, 10)
    assert verdict.outcome is FAIL
    assert verdict.unit == "s"
    assert verdict.canary is not None and 0.45 < verdict.canary < 0.8  # interpolated medians
    assert verdict.stable is not None and 0.2 < verdict.stable < 0.4
    assert verdict.judge is not None and verdict.judge.outcome is FAIL
    assert verdict.judge.p_value is not None and verdict.judge.p_value < 0.01
    assert verdict.judge.relative_shift is not None and 0.6 < verdict.judge.relative_shift < 1.4
    assert (verdict.judge.n_canary, verdict.judge.n_stable) == (60, 900)
    assert verdict.reason.startswith("canary slower at 0.99 confidence by more than maxShift 10%")
    assert "shift +" in verdict.describe() and "(p=" in verdict.describe()

    same = slow.model_copy(update={"canary_buckets": histogram(spread(0.3, 60))})
    assert evaluate_metric(latency_check(judge={}), same, 10).outcome is PASS


def test_a_judge_needs_traffic_histograms_and_observations() -> None:
    check_ = latency_check(judge={})
    few = Measurement(
        metric="ttft",
        canary_requests=100,
        canary_buckets=histogram(spread(0.9, 10)),
        stable_buckets=histogram(spread(0.3, 900)),
    )
    verdict = evaluate_metric(check_, few, 10)
    assert verdict.outcome is INCONCLUSIVE and "too few observations" in verdict.reason
    no_histogram = few.model_copy(update={"canary_buckets": None})
    assert "no canary histogram" in evaluate_metric(check_, no_histogram, 10).reason
    # the traffic gate comes first, as for thresholds
    quiet = few.model_copy(update={"canary_requests": 3})
    assert "too little canary traffic" in evaluate_metric(check_, quiet, 10).reason
    broken = few.model_copy(update={"error": "ttft-buckets query failed: boom"})
    assert evaluate_metric(check_, broken, 10).outcome is ERROR


@pytest.mark.parametrize(
    ("canary_p95", "canary_median", "expected", "reason_parts"),
    [
        (0.5, 0.3, PASS, ["within canary/stable <= 1.5", "judge: canary not slower"]),
        (0.9, 0.3, FAIL, ["> maxRatio 1.5", "judge: canary not slower"]),  # the p95 alone
        (0.5, 0.6, FAIL, ["within canary/stable <= 1.5", "judge: canary slower"]),  # the judge
        (None, 0.3, INCONCLUSIVE, ["no canary data", "judge: canary not slower"]),
    ],
)
def test_thresholds_and_a_judge_together_fail_when_either_fails(
    canary_p95: float | None, canary_median: float, expected: CheckOutcome, reason_parts: list[str]
) -> None:
    check_ = latency_check(percentile="p95", maxRatio=1.5, judge={})
    measured = Measurement(
        metric="ttft-p95",
        canary=canary_p95,
        stable=0.5,
        canary_requests=80,
        canary_buckets=histogram(spread(canary_median, 80)),
        stable_buckets=histogram(spread(0.3, 1000)),
    )
    verdict = evaluate_metric(check_, measured, 10)
    assert verdict.outcome is expected, verdict.reason
    for part in reason_parts:
        assert part in verdict.reason
    assert (verdict.canary, verdict.stable) == (canary_p95, 0.5)  # the percentile is shown
    assert verdict.threshold == (
        "canary/stable <= 1.5, mann-whitney: fails if slower at 99% confidence by > 10%"
    )


# Per tenant

PER_TENANT_ANALYSIS = {
    "minRequests": 10,
    "perTenant": {"label": "tenant", "minRequests": 20, "maxFailingTenants": 0},
    "metrics": [
        {"kind": "error-rate", "max": 0.05},
        {"kind": "tokens-per-request", "tokenType": "output", "min": 100, "minRatio": 0.7},
    ],
}


def tenant_measurements(
    errors: dict[str, tuple[float, float, float]],
    tokens: dict[str, tuple[float, float]] | None = None,
    aggregate_errors: float = 0.01,
) -> dict[str, Measurement]:
    """errors: tenant -> (canary rate, stable rate, canary requests); tokens: tenant ->
    (canary, stable) output tokens per request."""
    requests = sum(r for _, _, r in errors.values())
    tokens = tokens or {}
    return {
        "error-rate": Measurement(
            metric="error-rate",
            canary=aggregate_errors,
            stable=0.0,
            canary_requests=requests,
            tenants=tuple(
                TenantMeasurement(tenant=t, canary=c, stable=s, canary_requests=r)
                for t, (c, s, r) in errors.items()
            ),
        ),
        "tokens-per-request-output": Measurement(
            metric="tokens-per-request-output",
            canary=500,
            stable=500,
            canary_requests=requests,
            tenants=tuple(
                TenantMeasurement(
                    tenant=t,
                    canary=tokens.get(t, (500, 500))[0],
                    stable=tokens.get(t, (500, 500))[1],
                    canary_requests=r,
                )
                for t, (_, _, r) in errors.items()
            ),
        ),
    }


def judge_tenants(measured: dict[str, Measurement], **per_tenant: Any) -> MetricVerdict:
    spec = AnalysisSpec.model_validate(
        {
            **PER_TENANT_ANALYSIS,
            "perTenant": {**PER_TENANT_ANALYSIS["perTenant"], **per_tenant},
        }
    )
    verdict = evaluate_measurements(spec, measured)
    assert [m.metric for m in verdict.metrics] == [
        "error-rate",
        "tokens-per-request-output",
        "per-tenant",
    ]
    return verdict.metrics[-1]


def test_one_broken_tenant_fails_while_the_aggregate_passes() -> None:
    measured = tenant_measurements(
        {"acme": (0.4, 0.0, 40), "globex": (0.0, 0.0, 300), "initech": (0.0, 0.01, 360)},
        aggregate_errors=0.02,
    )
    spec = AnalysisSpec.model_validate(PER_TENANT_ANALYSIS)
    verdict = evaluate_measurements(spec, measured)
    assert verdict.metrics[0].outcome is PASS  # 2% errors overall: within max 5%
    tenants = verdict.metrics[-1]
    assert tenants.outcome is FAIL and verdict.outcome is FAIL
    assert tenants.canary == 1 and tenants.unit == "tenants"
    assert tenants.threshold == "failing tenants <= 0"
    assert tenants.reason == (
        '1 of 3 tenant(s) failed, more than maxFailingTenants 0: "acme" '
        "(error-rate: canary 0.4 > max 0.05)"
    )
    assert tenants.tenants == (
        TenantVerdict(
            tenant="acme", canary_requests=40, failed=("error-rate: canary 0.4 > max 0.05",)
        ),
    )
    assert '"acme"' in verdict.reason  # the Event names the tenant
    assert tenants.describe() == (
        'per-tenant fail: canary 1 tenants: "acme" (failing tenants <= 0)'
    )


def test_max_failing_tenants_tolerates_some_and_still_names_them() -> None:
    measured = tenant_measurements({"acme": (0.4, 0.0, 40), "globex": (0.0, 0.0, 300)})
    verdict = judge_tenants(measured, maxFailingTenants=1)
    assert verdict.outcome is PASS
    assert verdict.reason == '1 of 2 tenant(s) failed (maxFailingTenants 1): "acme"'
    assert [t.tenant for t in verdict.tenants] == ["acme"]


def test_relative_checks_compare_a_tenant_with_the_same_tenant_on_stable() -> None:
    # acme's answers are short on both variants (a tenant of short prompts): absolute
    # thresholds are not applied per tenant, the ratio to acme on stable is what counts.
    short_but_same = tenant_measurements(
        {"acme": (0.0, 0.0, 50), "globex": (0.0, 0.0, 50)}, {"acme": (40, 42)}
    )
    assert judge_tenants(short_but_same).outcome is PASS
    truncated = tenant_measurements(
        {"acme": (0.0, 0.0, 50), "globex": (0.0, 0.0, 50)}, {"acme": (20, 42)}
    )
    verdict = judge_tenants(truncated)
    assert verdict.outcome is FAIL
    assert "tokens-per-request-output: canary/stable 0.4762 (20 vs 42) < minRatio 0.7" in (
        verdict.reason
    )
    assert "> max" not in verdict.reason and "< min 100" not in verdict.reason


def test_small_tenants_are_not_judged() -> None:
    measured = tenant_measurements({"acme": (1.0, 0.0, 19), "globex": (0.0, 0.0, 300)})
    verdict = judge_tenants(measured)
    assert verdict.outcome is PASS
    assert verdict.reason == (
        "0 of 1 tenant(s) failed (maxFailingTenants 0); 1 tenant(s) below 20 canary requests "
        "not judged"
    )
    none_large = judge_tenants(tenant_measurements({"acme": (1.0, 0.0, 15)}))
    assert none_large.outcome is PASS
    assert "no tenant has 20 canary requests" in none_large.reason


def test_traffic_without_the_tenant_label_is_inconclusive() -> None:
    # Prometheus reports a missing label as "": the gateway is not labelling by tenant
    verdict = judge_tenants(tenant_measurements({"": (0.0, 0.0, 500)}))
    assert verdict.outcome is INCONCLUSIVE
    assert "no canary request carries the tenant label tenant" in verdict.reason
    assert "metricsRequestHeaderAttributes" in verdict.reason
    # requests without the label beside labelled ones are judged in aggregate only
    mixed = judge_tenants(tenant_measurements({"": (0.9, 0.0, 500), "acme": (0.0, 0.0, 50)}))
    assert mixed.outcome is PASS


def test_per_tenant_errors_and_low_traffic() -> None:
    measured = tenant_measurements({"acme": (0.0, 0.0, 50)})
    measured["error-rate"] = measured["error-rate"].model_copy(
        update={"tenants": None, "tenants_error": "error-rate by tenant query failed: boom"}
    )
    verdict = judge_tenants(measured)
    assert verdict.outcome is ERROR and "boom" in verdict.reason
    quiet = tenant_measurements({"acme": (1.0, 0.0, 5)})
    low = judge_tenants(quiet)
    assert low.outcome is INCONCLUSIVE and "too little canary traffic" in low.reason
    missing = evaluate_measurements(AnalysisSpec.model_validate(PER_TENANT_ANALYSIS), {})
    assert missing.metrics[-1].outcome is ERROR


def test_tenant_names_are_quoted_as_data_and_long_lists_are_cut() -> None:
    hostile = 'x" (error-rate: fine); "y'
    errors = {f"t{i:02d}": (0.5, 0.0, 100 + i) for i in range(25)}
    errors[hostile] = (0.5, 0.0, 1000)
    verdict = judge_tenants(tenant_measurements(errors))
    assert verdict.outcome is FAIL
    assert verdict.reason.startswith("26 of 26 tenant(s) failed")
    assert json.dumps(hostile) in verdict.reason  # escaped: its quotes cannot close the name
    assert verdict.reason.count("(error-rate: canary") == 10  # ten named, largest first
    assert '"t24"' in verdict.reason and "and 16 more" in verdict.reason
    assert len(verdict.tenants) == 20  # what the state annotation keeps
    assert verdict.tenants[0].tenant == hostile
    assert verdict.canary == 26


def test_new_verdict_fields_round_trip_and_old_verdicts_still_load() -> None:
    verdict = judge_tenants(tenant_measurements({"acme": (0.4, 0.0, 40)}))
    assert MetricVerdict.model_validate_json(verdict.model_dump_json()) == verdict
    old = {
        "metric": "m",
        "outcome": "Pass",
        "canary": 1,
        "stable": 1,
        "threshold": "t",
        "reason": "r",
    }
    loaded = MetricVerdict.model_validate(old)
    assert (loaded.unit, loaded.judge, loaded.tenants) == ("", None, ())


def test_metrics_endpoint_shows_units_judges_and_failing_tenants() -> None:
    from prometheus_client import generate_latest

    from rollout.controller.observability import ControllerMetrics

    spec = AnalysisSpec.model_validate(
        {
            **PER_TENANT_ANALYSIS,
            "metrics": [*PER_TENANT_ANALYSIS["metrics"], {"kind": "ttft", "judge": {}}],
        }
    )
    measured = tenant_measurements({"acme": (0.4, 0.0, 40)})
    measured["ttft"] = Measurement(
        metric="ttft",
        canary_requests=40,
        canary_buckets=histogram(spread(0.6, 40)),
        stable_buckets=histogram(spread(0.3, 900)),
    )
    verdict = evaluate_measurements(spec, measured)
    metrics = ControllerMetrics()
    metrics.observe_verdict("llm", "ns", "chat", verdict)
    text = generate_latest(metrics.registry).decode()
    labels = 'namespace="ns",rollout="llm",route="chat"'

    def line(name: str, metric: str, extra: str = "") -> str:
        found = [
            row
            for row in text.splitlines()
            if row.startswith(name + "{") and f'metric="{metric}"' in row and extra in row
        ]
        assert len(found) == 1, (name, metric, found)
        return found[0]

    assert 'unit="tokens/request"' in line(
        "rollout_metric_threshold_info", "tokens-per-request-output"
    )
    assert 'unit="tenants"' in line("rollout_metric_threshold_info", "per-tenant")
    assert line("rollout_metric_value", "per-tenant").endswith(" 1.0")  # one failing tenant
    p_value = float(line("rollout_metric_judge_p_value", "ttft").split()[-1])
    shift = float(line("rollout_metric_judge_shift_ratio", "ttft").split()[-1])
    assert p_value < 0.01 and shift > 0.5
    assert labels.split(",")[0] in line("rollout_metric_judge_p_value", "ttft")

    # a policy edit that changes the unit replaces the info series instead of adding one
    edited = verdict.model_copy(
        update={"metrics": tuple(m.model_copy(update={"unit": "x"}) for m in verdict.metrics)}
    )
    metrics.observe_verdict("llm", "ns", "chat", edited)
    text = generate_latest(metrics.registry).decode()
    assert 'unit="x"' in line("rollout_metric_threshold_info", "ttft")
