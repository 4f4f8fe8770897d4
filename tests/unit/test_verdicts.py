"""Verdicts: one measurement against one check, and many checks folded into one."""

from __future__ import annotations

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
