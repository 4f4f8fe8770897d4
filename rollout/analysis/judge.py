"""The statistical judge: is the canary's latency distribution slower than stable's?

Contract: pure functions over bucket counts; no Prometheus client, no clock, no logging.

Input: each variant's histogram over the same window, as Prometheus answers
`sum by (..., le) (increase(<metric>_bucket[window]))`: cumulative counts per upper bound `le`.

The bucket handling (ours, not a library's):

- `le` values are parsed as floats, so "1" and "1.0" (two exporters) are the same bound, and
  their counts are added;
- cumulative counts are forced monotonic (a running maximum, as Prometheus's own
  histogram_quantile does): `increase()` extrapolates every bucket series on its own, and a
  counter reset in one of them can leave a bucket with fewer observations than the one below,
  which would be a negative count; NaN and negative counts are taken as 0;
- a histogram without a +Inf bucket gets one holding no observation beyond its last bound;
- two histograms with different bucket layouts are compared on the bounds they share (the
  coarsest common partition), where both cumulative counts are exact;
- the first bucket spans [0, le] (latencies are not negative); the +Inf bucket is a point at
  the highest finite bound, like histogram_quantile: it can only underestimate a slowdown.

The test: the one-sided Mann-Whitney U test of "the canary is slower" (its observations tend to
be larger), computed from the bucket counts: every observation of a bucket shares the bucket's
mid-rank, so bucketed data is all ties within a bucket, and the variance of U takes the tie
correction `sum(t^3 - t)`. U is asymptotically normal (scipy.stats.norm gives the p-value),
with a continuity correction of 0.5, as scipy.stats.mannwhitneyu(method="asymptotic").

The shift estimate: a latency regression is multiplicative (a slower model or a busier GPU
stretches every request, long ones more), so the shift is estimated as a ratio: the
Hodges-Lehmann estimate of the scale shift, the median of canary / stable over all pairs of
observations (the two-sample Hodges-Lehmann shift of the logarithms), with each bucket's
observations spread uniformly over the bucket (the assumption under histogram_quantile's
interpolation too). For each pair of buckets P(X <= r Y) has a closed form, and the median of
their mixture is found by Brent's method on log r. The relative shift is that ratio minus 1:
a canary that takes 1.2 times as long on every request has a shift of +20%, whatever stable's
spread, and stable's median is the yardstick the ratio is read against ("+20% of stable's
median").
Bucket midpoints alone would put every pair within one bucket at a ratio of exactly 1, so with
coarse buckets the median sticks at 1 under a real 20-30% slowdown; the uniform spread moves
it smoothly. Within one bucket no method sees anything: a slowdown that keeps every
observation in its bucket is invisible to a histogram.

Verdict: FAIL only when the canary is slower with the given confidence (p < 1 - confidence)
AND the relative shift exceeds maxShift; INCONCLUSIVE with fewer than MIN_OBSERVATIONS on
either side; PASS otherwise (a significant but small slowdown passes: with enough traffic
every difference is significant, and only the size matters then).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from rollout.policy.schema import JudgeSpec

# scipy (norm, brentq) is imported where a judge runs, not at module load: scipy.stats adds
# ~70 MiB to every controller process, and most policies have no judge.

# Observations each variant needs in the window: below, the normal approximation of U is poor
# and the median of a few requests says little.
MIN_OBSERVATIONS = 20

# (upper bound `le`, cumulative count) as Prometheus answers it.
Bucket = tuple[float, float]

# The ratio estimate is searched within e^-30 .. e^30: far beyond any two latencies.
_LOG_RATIO_RANGE = 30.0

FloatArray = npt.NDArray[np.float64]


class JudgeOutcome(StrEnum):
    # The same values as verdicts.CheckOutcome.
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts over ascending upper bounds; the last bound is +inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def from_buckets(cls, buckets: Iterable[Bucket]) -> Histogram:
        """A histogram from `le` -> cumulative count pairs (see the module doc)."""
        merged: dict[float, float] = {}
        for bound, count in buckets:
            if math.isnan(bound):
                continue
            usable = count if count > 0 else 0.0  # NaN > 0 is false: NaN counts as 0
            merged[bound] = merged.get(bound, 0.0) + usable
        bounds = sorted(merged)
        cumulative: list[float] = []
        running = 0.0
        for bound in bounds:
            running = max(running, merged[bound])
            cumulative.append(running)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
            cumulative.append(running)
        return cls(tuple(bounds), tuple(cumulative))

    @property
    def total(self) -> float:
        return self.cumulative[-1]

    @property
    def counts(self) -> tuple[float, ...]:
        """Observations per bucket."""
        return tuple(
            count - (self.cumulative[index - 1] if index else 0.0)
            for index, count in enumerate(self.cumulative)
        )

    def restricted(self, bounds: Iterable[float]) -> Histogram:
        """The same observations over fewer buckets: `bounds` must be a subset of ours."""
        index = {bound: position for position, bound in enumerate(self.bounds)}
        kept = sorted(bounds)
        return Histogram(tuple(kept), tuple(self.cumulative[index[bound]] for bound in kept))

    def quantile(self, q: float) -> float:
        """Prometheus's histogram_quantile(q) over these buckets: linear interpolation inside
        the bucket holding the rank; the +Inf bucket answers the highest finite bound."""
        if math.isnan(q):
            return math.nan
        if q < 0:
            return -math.inf
        if q > 1:
            return math.inf
        if len(self.bounds) < 2 or self.total <= 0:
            return math.nan
        rank = q * self.total
        # The first bucket (not +Inf) whose cumulative count reaches the rank.
        position = next(
            (i for i, count in enumerate(self.cumulative[:-1]) if count >= rank),
            len(self.bounds) - 1,
        )
        if position == len(self.bounds) - 1:
            return self.bounds[-2]
        if position == 0 and self.bounds[0] <= 0:
            return self.bounds[0]
        start = 0.0 if position == 0 else self.bounds[position - 1]
        below = 0.0 if position == 0 else self.cumulative[position - 1]
        in_bucket = self.cumulative[position] - below
        return start + (self.bounds[position] - start) * ((rank - below) / in_bucket)

    def intervals(self) -> tuple[FloatArray, FloatArray]:
        """(low, high) of each bucket's values: [0, le] first, the +Inf bucket a point at the
        highest finite bound (see the module doc)."""
        finite = [bound for bound in self.bounds if bound != math.inf]
        top = finite[-1] if finite else 0.0
        lows: list[float] = []
        highs: list[float] = []
        previous: float | None = None
        for bound in self.bounds:
            if bound == math.inf:
                low = high = top
            elif previous is None:
                low, high = (0.0, bound) if bound > 0 else (bound, bound)
            else:
                low, high = previous, bound
            lows.append(low)
            highs.append(high)
            previous = bound
        return np.array(lows, dtype=np.float64), np.array(highs, dtype=np.float64)


def common_layout(canary: Histogram, stable: Histogram) -> tuple[Histogram, Histogram]:
    """Both histograms over the bounds they share (+Inf always is)."""
    shared = set(canary.bounds) & set(stable.bounds)
    return canary.restricted(shared), stable.restricted(shared)


@dataclass(frozen=True)
class MannWhitney:
    """The one-sided test of "canary observations tend to be larger than stable's"."""

    u: float  # canary's U: pairs with canary > stable, ties counting one half
    z: float
    p_value: float  # P(U >= u) if both came from one distribution
    n_canary: float
    n_stable: float


def mann_whitney_slower(canary: Histogram, stable: Histogram) -> MannWhitney:
    """Mann-Whitney U with tie correction from bucket counts over the same bounds."""
    if canary.bounds != stable.bounds:
        raise ValueError("the histograms must share one bucket layout (see common_layout)")
    c, s = canary.counts, stable.counts
    n_c, n_s = canary.total, stable.total
    n = n_c + n_s
    u = 0.0
    stable_below = 0.0
    ties = 0.0
    for in_canary, in_stable in zip(c, s, strict=True):
        u += in_canary * (stable_below + in_stable / 2)
        stable_below += in_stable
        t = in_canary + in_stable
        ties += t**3 - t
    mean = n_c * n_s / 2
    variance = n_c * n_s / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        # Every observation in one bucket: nothing tells the two apart.
        return MannWhitney(u=u, z=0.0, p_value=1.0, n_canary=n_c, n_stable=n_s)
    z = (u - mean - 0.5) / math.sqrt(variance)
    from scipy.stats import norm

    return MannWhitney(u=u, z=z, p_value=float(norm.sf(z)), n_canary=n_c, n_stable=n_s)


def hodges_lehmann_ratio(canary: Histogram, stable: Histogram) -> float:
    """The median of canary / stable over all pairs of observations, each spread uniformly
    over its bucket (see the module doc). Above 1: the canary is slower."""
    if canary.bounds != stable.bounds:
        raise ValueError("the histograms must share one bucket layout (see common_layout)")
    counts_c = np.array(canary.counts, dtype=np.float64)
    counts_s = np.array(stable.counts, dtype=np.float64)
    total = counts_c.sum() * counts_s.sum()
    if total <= 0:
        return math.nan
    # Only the pairs of buckets that hold observations on both sides, flattened.
    rows, columns = np.nonzero(np.outer(counts_c > 0, counts_s > 0))
    weights = counts_c[rows] * counts_s[columns] / total
    low_c, high_c = canary.intervals()  # canary bucket k: X ~ U[a_k, b_k]
    low_s, high_s = stable.intervals()  # stable bucket l: Y ~ U[c_l, d_l]
    a, b = low_c[rows], high_c[rows]
    c, d = low_s[columns], high_s[columns]

    def excess(log_ratio: float) -> float:
        """P(X / Y <= e^log_ratio) - 1/2 for the mixture of all bucket pairs."""
        return float(weights @ _ratio_cdf(math.exp(log_ratio), a, b, c, d)) - 0.5

    low, high = -_LOG_RATIO_RANGE, _LOG_RATIO_RANGE
    if excess(high) < 0:
        return math.inf  # most pairs divide by a stable observation at 0
    if excess(low) >= 0:
        return 0.0
    # Brent's method needs a sign change only, so the steps of point masses are fine.
    from scipy.optimize import brentq

    return math.exp(float(brentq(excess, low, high, xtol=1e-10)))


def _ratio_cdf(r: float, a: FloatArray, b: FloatArray, c: FloatArray, d: FloatArray) -> FloatArray:
    """P(X <= r Y) for X ~ U[a, b], Y ~ U[c, d] independent and not negative (a point where
    a == b or c == d), r > 0.

    Averaged over Y: (1 / (d - c)) * integral of F_X(r y) dy from c to d
    = (G(r d) - G(r c)) / (r (d - c)), G being an antiderivative of X's CDF F_X; with Y a
    point, F_X(r c).
    """
    width_x = b - a
    width_y = d - c
    spread_x = width_x > 0
    safe_x = np.where(spread_x, width_x, 1.0)

    def x_cdf(t: FloatArray) -> FloatArray:
        return np.where(spread_x, np.clip((t - a) / safe_x, 0.0, 1.0), (t >= a) * 1.0)

    def x_cdf_integral(t: FloatArray) -> FloatArray:
        inside = (t - a) ** 2 / (2 * safe_x)
        spread = np.where(t <= a, 0.0, np.where(t >= b, t - (a + b) / 2, inside))
        return np.where(spread_x, spread, np.maximum(t - a, 0.0))

    point_y = width_y <= 0
    averaged = (x_cdf_integral(r * d) - x_cdf_integral(r * c)) / (
        r * np.where(point_y, 1.0, width_y)
    )
    return np.where(point_y, x_cdf(r * c), averaged)


@dataclass(frozen=True)
class JudgeResult:
    outcome: JudgeOutcome
    reason: str
    n_canary: float
    n_stable: float
    p_value: float | None = None  # one-sided: the canary is slower
    relative_shift: float | None = None  # Hodges-Lehmann ratio - 1: +0.2 is 20% slower
    canary_median: float | None = None
    stable_median: float | None = None


def judge_latency(
    spec: JudgeSpec,
    canary_buckets: Iterable[Bucket],
    stable_buckets: Iterable[Bucket],
    *,
    min_observations: int = MIN_OBSERVATIONS,
    unit: str = "s",
) -> JudgeResult:
    """The judge's verdict on two histograms over the same window (see the module doc)."""
    canary, stable = common_layout(
        Histogram.from_buckets(canary_buckets), Histogram.from_buckets(stable_buckets)
    )
    n_c, n_s = canary.total, stable.total
    counted = f"{_count(n_c)} canary and {_count(n_s)} stable observations"
    if n_c < min_observations or n_s < min_observations:
        return JudgeResult(
            JudgeOutcome.INCONCLUSIVE,
            f"too few observations for the judge: {counted}, {min_observations} needed on each "
            "side",
            n_c,
            n_s,
        )
    if len(canary.bounds) < 2:
        return JudgeResult(
            JudgeOutcome.INCONCLUSIVE,
            "the histograms share no finite bucket bound: nothing to compare",
            n_c,
            n_s,
        )
    test = mann_whitney_slower(canary, stable)
    relative = hodges_lehmann_ratio(canary, stable) - 1
    canary_median, stable_median = canary.quantile(0.5), stable.quantile(0.5)
    alpha = 1 - spec.confidence
    slower = test.p_value < alpha
    found = (
        f"shift {_signed(relative * 100)}% (medians {_num(canary_median)}{unit} vs "
        f"{_num(stable_median)}{unit}), p={test.p_value:.2g}"
    )
    if slower and relative > spec.max_shift:
        outcome = JudgeOutcome.FAIL
        reason = (
            f"canary slower at {spec.confidence:.4g} confidence by more than maxShift "
            f"{spec.max_shift * 100:.4g}%: {found} ({counted})"
        )
    elif slower:
        outcome = JudgeOutcome.PASS
        reason = f"canary slower, but within maxShift {spec.max_shift * 100:.4g}%: {found}"
    else:
        outcome = JudgeOutcome.PASS
        reason = f"canary not slower at {spec.confidence:.4g} confidence: {found}"
    return JudgeResult(
        outcome,
        reason,
        n_c,
        n_s,
        p_value=test.p_value,
        relative_shift=relative,
        canary_median=canary_median,
        stable_median=stable_median,
    )


def _count(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.3g}"
