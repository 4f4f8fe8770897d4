"""Judging measurements against a policy's metric checks.

Contract: pure functions over values; no Prometheus client, no clock, no logging.

Four outcomes are kept apart, because users of canary controllers are burnt by mixing them up:
- FAIL: the canary was measured and breached a threshold;
- INCONCLUSIVE: too little traffic or no data (an empty result, NaN), so nothing is known;
- ERROR: the metrics provider could not be asked (it is down, the query is broken);
- PASS: measured, and every threshold holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from rollout.policy.schema import AnalysisSpec, MetricCheck


class CheckOutcome(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class _Value(BaseModel):
    # Measured values may be +/-inf (histogram_quantile in the +Inf bucket) or NaN; they are
    # written as the strings "Infinity"/"NaN" because JSON has no such numbers and the verdicts
    # end up in the rollout state annotation.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")


class Measurement(_Value):
    """What the metrics adapter measured for one check over the analysis window.

    `canary`/`stable` are None when the query returned no series; `error` is set when the
    provider could not answer (then the values are meaningless).
    """

    metric: str
    canary: float | None = None
    stable: float | None = None
    canary_requests: float | None = None  # canary requests in the window
    error: str | None = None


class _PersistedValue(_Value):
    # Verdicts are kept in the persisted rollout state: a state written by a newer controller
    # (with fields this one does not know) must still load after a downgrade.
    model_config = ConfigDict(extra="ignore")


class MetricVerdict(_PersistedValue):
    metric: str
    outcome: CheckOutcome
    canary: float | None
    stable: float | None
    threshold: str  # the pass condition, e.g. "canary <= 0.02, canary/stable <= 1.2"
    reason: str  # why this outcome, with the numbers


class AnalysisVerdict(_PersistedValue):
    outcome: CheckOutcome
    metrics: tuple[MetricVerdict, ...]
    reason: str  # the metrics that decided the outcome, "; "-separated

    def failed_metrics(self) -> tuple[MetricVerdict, ...]:
        return tuple(verdict for verdict in self.metrics if verdict.outcome is CheckOutcome.FAIL)


def evaluate_metric(
    check: MetricCheck, measurement: Measurement, min_requests: int
) -> MetricVerdict:
    """Judge one measurement. Order: provider error, traffic, missing data, then thresholds.

    Too little canary traffic is INCONCLUSIVE even if the few requests breached a threshold:
    three requests are noise, and failing on noise causes needless rollbacks. A missing stable
    value only makes the check INCONCLUSIVE when no absolute threshold has already failed.
    """
    threshold = check.threshold_description()

    def verdict(outcome: CheckOutcome, reason: str) -> MetricVerdict:
        return MetricVerdict(
            metric=check.name,
            outcome=outcome,
            canary=measurement.canary,
            stable=measurement.stable,
            threshold=threshold,
            reason=reason,
        )

    if measurement.error is not None:
        return verdict(CheckOutcome.ERROR, f"metrics provider error: {measurement.error}")

    if min_requests > 0:
        requests = measurement.canary_requests
        if requests is None or math.isnan(requests):
            return verdict(CheckOutcome.INCONCLUSIVE, "canary request count unknown")
        if requests < min_requests:
            return verdict(
                CheckOutcome.INCONCLUSIVE,
                f"too little canary traffic: {_number(requests)} requests in the window, "
                f"{min_requests} needed",
            )

    canary = measurement.canary
    if canary is None:
        return verdict(CheckOutcome.INCONCLUSIVE, "no canary data in the window")
    if math.isnan(canary):
        return verdict(CheckOutcome.INCONCLUSIVE, "canary value is NaN (no observations)")

    breaches = _absolute_breaches(check, canary)
    if check.needs_stable:
        stable = measurement.stable
        if stable is None or math.isnan(stable):
            if breaches:
                return verdict(CheckOutcome.FAIL, "; ".join(breaches))
            missing = "no stable data" if stable is None else "stable value is NaN"
            return verdict(CheckOutcome.INCONCLUSIVE, f"{missing} for the relative threshold")
        relative_breaches, undefined = _relative_breaches(check, canary, stable)
        breaches += relative_breaches
        if not breaches and undefined:
            return verdict(CheckOutcome.INCONCLUSIVE, "; ".join(undefined))

    if breaches:
        return verdict(CheckOutcome.FAIL, "; ".join(breaches))
    return verdict(CheckOutcome.PASS, f"canary {_number(canary)} within {threshold}")


def evaluate_analysis(verdicts: Sequence[MetricVerdict]) -> AnalysisVerdict:
    """Fold metric verdicts into one: FAIL > ERROR > INCONCLUSIVE > PASS.

    FAIL wins because a measured breach is evidence whatever the other metrics say. ERROR beats
    INCONCLUSIVE because with a provider error we cannot tell whether data exists, and the
    operator should see "metrics are down", not "low traffic". No verdicts at all is
    INCONCLUSIVE: nothing judged must never read as a pass.
    """
    if not verdicts:
        return AnalysisVerdict(
            outcome=CheckOutcome.INCONCLUSIVE, metrics=(), reason="no metric was evaluated"
        )
    for outcome in (CheckOutcome.FAIL, CheckOutcome.ERROR, CheckOutcome.INCONCLUSIVE):
        deciding = [verdict for verdict in verdicts if verdict.outcome is outcome]
        if deciding:
            reason = "; ".join(f"{verdict.metric}: {verdict.reason}" for verdict in deciding)
            return AnalysisVerdict(outcome=outcome, metrics=tuple(verdicts), reason=reason)
    return AnalysisVerdict(
        outcome=CheckOutcome.PASS,
        metrics=tuple(verdicts),
        reason=f"all {len(verdicts)} metric(s) passed",
    )


def evaluate_measurements(
    analysis: AnalysisSpec, measurements: Mapping[str, Measurement]
) -> AnalysisVerdict:
    """Judge every check of a policy; a check without a measurement is an ERROR, not a pass."""
    verdicts = [
        evaluate_metric(
            check,
            measurements.get(check.name)
            or Measurement(metric=check.name, error="no measurement was taken for this metric"),
            analysis.min_requests,
        )
        for check in analysis.metrics
    ]
    return evaluate_analysis(verdicts)


# ---------------------------------------------------------------------------------------------


def _absolute_breaches(check: MetricCheck, canary: float) -> list[str]:
    breaches: list[str] = []
    if check.min_value is not None and canary < check.min_value:
        breaches.append(f"canary {_number(canary)} < min {_number(check.min_value)}")
    if check.max_value is not None and canary > check.max_value:
        breaches.append(f"canary {_number(canary)} > max {_number(check.max_value)}")
    return breaches


def _relative_breaches(
    check: MetricCheck, canary: float, stable: float
) -> tuple[list[str], list[str]]:
    """(breaches, reasons a relative threshold could not be judged)."""
    breaches: list[str] = []
    undefined: list[str] = []
    values = f"({_number(canary)} vs {_number(stable)})"

    if check.min_ratio is not None or check.max_ratio is not None:
        ratio = canary_stable_ratio(canary, stable)
        if ratio is None:
            undefined.append(f"canary/stable ratio undefined {values}")
        else:
            if check.min_ratio is not None and ratio < check.min_ratio:
                breaches.append(
                    f"canary/stable {_number(ratio)} {values} < minRatio {_number(check.min_ratio)}"
                )
            if check.max_ratio is not None and ratio > check.max_ratio:
                breaches.append(
                    f"canary/stable {_number(ratio)} {values} > maxRatio {_number(check.max_ratio)}"
                )

    if check.min_difference is not None or check.max_difference is not None:
        difference = canary - stable
        if math.isnan(difference):  # inf - inf
            undefined.append(f"canary-stable difference undefined {values}")
        else:
            if check.min_difference is not None and difference < check.min_difference:
                breaches.append(
                    f"canary-stable {_number(difference)} {values} "
                    f"< minDifference {_number(check.min_difference)}"
                )
            if check.max_difference is not None and difference > check.max_difference:
                breaches.append(
                    f"canary-stable {_number(difference)} {values} "
                    f"> maxDifference {_number(check.max_difference)}"
                )
    return breaches, undefined


def canary_stable_ratio(canary: float, stable: float) -> float | None:
    """canary/stable, or None where a ratio means nothing.

    0/0 is 1 (both perfect, e.g. no errors on either side); x/0 is +inf for x > 0 (worse than a
    perfect stable). Negative values (only possible from custom queries) have no meaningful
    ratio, nor has inf/inf.
    """
    if canary < 0 or stable < 0:
        return None
    if stable == 0:
        return 1.0 if canary == 0 else math.inf
    ratio = canary / stable
    return None if math.isnan(ratio) else ratio


def _number(value: float) -> str:
    return f"{value:.4g}"
