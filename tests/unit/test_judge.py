"""The statistical judge: bucket handling, Mann-Whitney U from buckets, the shift estimate."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from rollout.analysis.judge import (
    MIN_OBSERVATIONS,
    Bucket,
    Histogram,
    JudgeOutcome,
    common_layout,
    hodges_lehmann_ratio,
    judge_latency,
    mann_whitney_slower,
)
from rollout.policy import JudgeSpec
from rollout.simulator.metrics import TTFT_BUCKETS

INF = math.inf
# Fine buckets (5% apart) for the estimator's accuracy; the gateway's for realism.
FINE = tuple(0.01 * 1.05**i for i in range(150))


def buckets_of(values: Sequence[float] | np.ndarray, bounds: Sequence[float]) -> list[Bucket]:
    """What `increase(..._bucket[w])` answers for these observations: cumulative counts."""
    array = np.asarray(values, dtype=float)
    return [(b, float((array <= b).sum())) for b in bounds] + [(INF, float(len(array)))]


def lognormal(
    rng: np.random.Generator, n: int, median: float = 0.3, sigma: float = 0.5
) -> np.ndarray:
    return rng.lognormal(math.log(median), sigma, n)


# ---------------------------------------------------------------------------------------------
# Buckets


def test_cumulative_counts_become_per_bucket_counts() -> None:
    histogram = Histogram.from_buckets([(0.5, 3.0), (0.1, 1.0), (INF, 10.0), (1.0, 7.0)])
    assert histogram.bounds == (0.1, 0.5, 1.0, INF)
    assert histogram.counts == (1.0, 2.0, 4.0, 3.0)
    assert histogram.total == 10.0


def test_equal_bounds_from_several_series_are_added() -> None:
    # "1" and "1.0" from two exporters parse to the same float
    histogram = Histogram.from_buckets(
        [(float("1"), 2.0), (float("1.0"), 3.0), (INF, 4.0), (INF, 6.0)]
    )
    assert histogram.bounds == (1.0, INF)
    assert histogram.cumulative == (5.0, 10.0)


def test_non_monotonic_nan_and_negative_counts_are_repaired() -> None:
    # extrapolated or reset series: a bucket below its predecessor, a NaN, a negative value
    histogram = Histogram.from_buckets(
        [(0.1, 4.0), (0.2, 3.5), (0.4, math.nan), (0.8, -2.0), (1.6, 9.0), (INF, 8.0)]
    )
    assert histogram.cumulative == (4.0, 4.0, 4.0, 4.0, 9.0, 9.0)
    assert histogram.counts == (4.0, 0.0, 0.0, 0.0, 5.0, 0.0)
    assert all(count >= 0 for count in histogram.counts)


def test_a_missing_inf_bucket_holds_nothing_beyond_the_last_bound() -> None:
    histogram = Histogram.from_buckets([(0.1, 2.0), (1.0, 5.0)])
    assert histogram.bounds == (0.1, 1.0, INF)
    assert histogram.counts == (2.0, 3.0, 0.0)
    assert Histogram.from_buckets([]).total == 0.0


def test_different_layouts_are_compared_on_their_shared_bounds() -> None:
    coarse = Histogram.from_buckets([(0.5, 4.0), (1.0, 6.0), (INF, 10.0)])
    fine = Histogram.from_buckets([(0.25, 1.0), (0.5, 2.0), (0.75, 3.0), (1.0, 5.0), (INF, 8.0)])
    a, b = common_layout(coarse, fine)
    assert a.bounds == b.bounds == (0.5, 1.0, INF)
    assert a.cumulative == (4.0, 6.0, 10.0)
    assert b.cumulative == (2.0, 5.0, 8.0)  # exact at the shared bounds
    assert (a.total, b.total) == (coarse.total, fine.total)


def test_bucket_intervals_start_at_zero_and_end_at_the_highest_finite_bound() -> None:
    lows, highs = Histogram.from_buckets([(0.1, 1.0), (0.5, 2.0), (INF, 3.0)]).intervals()
    assert list(lows) == [0.0, 0.1, 0.5]
    assert list(highs) == [0.1, 0.5, 0.5]  # +Inf: a point at 0.5


# ---------------------------------------------------------------------------------------------
# histogram_quantile, as Prometheus computes it


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.5 + 0.5 * (5 - 4) / 4),  # rank 5 in (0.5, 1]: 4 below, 4 inside
        (0.1, 0.1 * 1 / 2),  # rank 1 in [0, 0.1] holding 2
        (0.2, 0.1),  # rank 2 is exactly the first bucket's count
        (0.95, 1.0),  # rank 9.5 in +Inf: the highest finite bound
        (0.0, 0.0),
        (1.0, 1.0),
        (-0.1, -INF),
        (1.1, INF),
    ],
)
def test_quantile_interpolates_like_prometheus(q: float, expected: float) -> None:
    histogram = Histogram.from_buckets([(0.1, 2.0), (0.5, 4.0), (1.0, 8.0), (INF, 10.0)])
    assert histogram.quantile(q) == pytest.approx(expected)


def test_quantile_of_nothing_is_nan_and_a_non_positive_first_bound_is_returned() -> None:
    assert math.isnan(Histogram.from_buckets([(1.0, 0.0), (INF, 0.0)]).quantile(0.5))
    assert math.isnan(Histogram.from_buckets([(1.0, 3.0)]).quantile(math.nan))
    assert Histogram.from_buckets([(-1.0, 5.0), (1.0, 6.0), (INF, 6.0)]).quantile(0.5) == -1.0


# ---------------------------------------------------------------------------------------------
# Mann-Whitney U from bucket counts


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=12),
    st.lists(st.integers(0, 30), min_size=2, max_size=12),
)
def test_mann_whitney_from_buckets_equals_scipy_on_the_bucketed_values(
    canary_counts: list[int], stable_counts: list[int]
) -> None:
    size = min(len(canary_counts), len(stable_counts))
    canary_counts, stable_counts = canary_counts[:size], stable_counts[:size]
    if sum(canary_counts) < 2 or sum(stable_counts) < 2:
        return
    bounds = [0.1 * (i + 1) for i in range(size - 1)] + [INF]
    canary = Histogram.from_buckets(zip(bounds, np.cumsum(canary_counts), strict=True))
    stable = Histogram.from_buckets(zip(bounds, np.cumsum(stable_counts), strict=True))
    ours = mann_whitney_slower(canary, stable)
    # scipy on the data as a histogram sees it: every observation of a bucket is one tied value
    x = np.repeat(np.arange(size), canary_counts)
    y = np.repeat(np.arange(size), stable_counts)
    if len(set(x) | set(y)) == 1:
        assert ours.p_value == 1.0  # one bucket: no evidence either way
        return
    reference = mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert ours.u == pytest.approx(float(reference.statistic))
    assert ours.p_value == pytest.approx(float(reference.pvalue), rel=1e-9, abs=1e-12)


def test_mann_whitney_sees_direction() -> None:
    rng = np.random.default_rng(7)
    stable = Histogram.from_buckets(buckets_of(lognormal(rng, 800), TTFT_BUCKETS))
    slower = Histogram.from_buckets(buckets_of(lognormal(rng, 200) * 1.5, TTFT_BUCKETS))
    faster = Histogram.from_buckets(buckets_of(lognormal(rng, 200) / 1.5, TTFT_BUCKETS))
    assert mann_whitney_slower(slower, stable).p_value < 1e-6
    assert mann_whitney_slower(faster, stable).p_value > 0.999999


def test_mann_whitney_refuses_different_layouts() -> None:
    with pytest.raises(ValueError, match="one bucket layout"):
        mann_whitney_slower(
            Histogram.from_buckets([(1.0, 1.0), (INF, 2.0)]),
            Histogram.from_buckets([(2.0, 1.0), (INF, 2.0)]),
        )


# ---------------------------------------------------------------------------------------------
# The shift estimate


@pytest.mark.parametrize("factor", [1.0, 1.2, 1.5, 0.8])
def test_ratio_estimate_recovers_a_scale_change_on_fine_buckets(factor: float) -> None:
    rng = np.random.default_rng(11)
    canary = Histogram.from_buckets(buckets_of(lognormal(rng, 20_000) * factor, FINE))
    stable = Histogram.from_buckets(buckets_of(lognormal(rng, 20_000), FINE))
    assert hodges_lehmann_ratio(canary, stable) == pytest.approx(factor, rel=0.02)


def test_ratio_estimate_is_the_median_of_pairwise_ratios_under_uniform_buckets() -> None:
    # The estimator's own model, sampled: each observation uniform within its bucket.
    rng = np.random.default_rng(3)
    canary = Histogram.from_buckets(buckets_of(lognormal(rng, 300) * 1.3, TTFT_BUCKETS))
    stable = Histogram.from_buckets(buckets_of(lognormal(rng, 3000), TTFT_BUCKETS))
    canary, stable = common_layout(canary, stable)

    def sample(histogram: Histogram, n: int) -> np.ndarray:
        lows, highs = histogram.intervals()
        weights = np.array(histogram.counts) / histogram.total
        picked = rng.choice(len(weights), size=n, p=weights)
        return rng.uniform(lows[picked], highs[picked])

    sampled = np.median(sample(canary, 400_000) / sample(stable, 400_000))
    assert hodges_lehmann_ratio(canary, stable) == pytest.approx(sampled, rel=0.01)


def test_ratio_estimate_moves_within_coarse_buckets() -> None:
    # Everything between 0.25 and 1 s: three coarse TTFT buckets. Midpoints would say 1.0.
    rng = np.random.default_rng(5)
    stable = rng.uniform(0.26, 0.6, 5000)
    canary = stable * 1.25
    ratio = hodges_lehmann_ratio(
        Histogram.from_buckets(buckets_of(canary, TTFT_BUCKETS)),
        Histogram.from_buckets(buckets_of(stable, TTFT_BUCKETS)),
    )
    assert 1.12 < ratio < 1.4


# ---------------------------------------------------------------------------------------------
# The verdict

SPEC = JudgeSpec(confidence=0.99, max_shift=0.1)


def judge(canary: np.ndarray, stable: np.ndarray, spec: JudgeSpec = SPEC) -> JudgeOutcome:
    return judge_latency(
        spec, buckets_of(canary, TTFT_BUCKETS), buckets_of(stable, TTFT_BUCKETS)
    ).outcome


def test_too_few_observations_is_inconclusive() -> None:
    rng = np.random.default_rng(1)
    result = judge_latency(
        SPEC,
        buckets_of(lognormal(rng, MIN_OBSERVATIONS - 1) * 3, TTFT_BUCKETS),
        buckets_of(lognormal(rng, 1000), TTFT_BUCKETS),
    )
    assert result.outcome is JudgeOutcome.INCONCLUSIVE
    assert f"{MIN_OBSERVATIONS - 1} canary and 1000 stable observations" in result.reason
    assert result.p_value is None
    enough = judge_latency(
        SPEC,
        buckets_of(lognormal(rng, MIN_OBSERVATIONS) * 3, TTFT_BUCKETS),
        buckets_of(lognormal(rng, 1000), TTFT_BUCKETS),
    )
    assert enough.outcome is JudgeOutcome.FAIL
    assert judge_latency(SPEC, [], []).outcome is JudgeOutcome.INCONCLUSIVE


def test_a_clearly_slower_canary_fails_with_the_numbers() -> None:
    rng = np.random.default_rng(2)
    result = judge_latency(
        SPEC,
        buckets_of(lognormal(rng, 60) * 1.6, TTFT_BUCKETS),
        buckets_of(lognormal(rng, 1200), TTFT_BUCKETS),
    )
    assert result.outcome is JudgeOutcome.FAIL
    assert result.p_value is not None and result.p_value < 0.01
    assert result.relative_shift is not None and 0.3 < result.relative_shift < 0.9
    assert "canary slower at 0.99 confidence by more than maxShift 10%" in result.reason
    assert "60 canary and 1200 stable observations" in result.reason


def test_a_faster_canary_never_fails() -> None:
    rng = np.random.default_rng(4)
    assert judge(lognormal(rng, 200) / 2, lognormal(rng, 2000)) is JudgeOutcome.PASS


def test_a_significant_but_small_slowdown_passes() -> None:
    rng = np.random.default_rng(6)
    canary, stable = lognormal(rng, 50_000) * 1.04, lognormal(rng, 50_000)
    result = judge_latency(SPEC, buckets_of(canary, TTFT_BUCKETS), buckets_of(stable, TTFT_BUCKETS))
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.outcome is JudgeOutcome.PASS
    assert "within maxShift 10%" in result.reason
    # the same data against a stricter maxShift fails
    strict = judge(canary, stable, JudgeSpec(confidence=0.99, max_shift=0.01))
    assert strict is JudgeOutcome.FAIL


def test_all_observations_in_one_bucket_pass() -> None:
    # A histogram cannot see a shift that stays inside one bucket.
    result = judge_latency(
        SPEC, [(0.5, 0.0), (1.0, 50.0), (INF, 50.0)], [(0.5, 0), (1.0, 900), (INF, 900)]
    )
    assert result.outcome is JudgeOutcome.PASS
    assert result.p_value == 1.0


def test_false_alarms_stay_near_one_minus_confidence() -> None:
    # 400 checks of identical distributions at 5% traffic: at 99% confidence about 1% may be
    # significant, and the shift condition removes some of those.
    rng = np.random.default_rng(12345)
    fails = sum(
        judge(lognormal(rng, 40), lognormal(rng, 760)) is JudgeOutcome.FAIL for _ in range(400)
    )
    assert fails <= 8  # 2%: four standard deviations above 1% would be ~ 2.0%


def test_detection_of_a_50_percent_slowdown_at_40_requests() -> None:
    rng = np.random.default_rng(54321)
    fails = sum(
        judge(lognormal(rng, 40) * 1.5, lognormal(rng, 760)) is JudgeOutcome.FAIL
        for _ in range(200)
    )
    assert fails >= 180


def test_the_controller_loads_without_scipy_until_a_judge_runs() -> None:
    # scipy.stats is ~70 MiB of RSS; a controller whose policies have no judge never needs it.
    code = (
        "import sys, rollout.app, rollout.cli, rollout.analysis.judge as j\n"
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)\n"
        "c = j.Histogram.from_buckets([(0.1, 10.0), (1.0, 30.0), (float('inf'), 30.0)])\n"
        "s = j.Histogram.from_buckets([(0.1, 20.0), (1.0, 30.0), (float('inf'), 30.0)])\n"
        "print(j.mann_whitney_slower(c, s).p_value, 'scipy' in sys.modules)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert answer[1] == "True" and 0 < float(answer[0]) <= 1
