"""Judging measurements against a policy's metric checks.

Contract: pure functions over values; no Prometheus client, no clock, no logging.

Four outcomes are kept apart, because users of canary controllers are burnt by mixing them up:
- FAIL: the canary was measured and breached a threshold;
- INCONCLUSIVE: too little traffic or no data (an empty result, NaN), so nothing is known;
- ERROR: the metrics provider could not be asked (it is down, the query is broken);
- PASS: measured, and every threshold holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from rollout.analysis.judge import Bucket, Histogram, JudgeOutcome, JudgeResult, judge_latency
from rollout.policy.schema import PER_TENANT_CHECK, AnalysisSpec, MetricCheck, PerTenantSpec

# Failing tenants kept in a verdict (it is persisted in the route's state annotation) and
# named in its reason.
MAX_TENANTS_KEPT = 20
MAX_TENANTS_NAMED = 10
TENANTS_UNIT = "tenants"


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


class TenantMeasurement(_Value):
    """One tenant's share of a check: the same numbers as a Measurement, for its requests."""

    tenant: str
    canary: float | None = None
    stable: float | None = None
    canary_requests: float | None = None
    canary_buckets: tuple[Bucket, ...] | None = None
    stable_buckets: tuple[Bucket, ...] | None = None


class Measurement(_Value):
    """What the metrics adapter measured for one check over the analysis window.

    `canary`/`stable` are None when the query returned no series; `error` is set when the
    provider could not answer (then the values are meaningless). A check with a judge also
    carries both histograms (`le` -> cumulative count); with perTenant, `tenants` holds every
    tenant seen in the canary's traffic (None: not measured per tenant) and `tenants_error`
    a failure of the per-tenant queries alone.
    """

    metric: str
    canary: float | None = None
    stable: float | None = None
    canary_requests: float | None = None  # canary requests in the window
    error: str | None = None
    canary_buckets: tuple[Bucket, ...] | None = None
    stable_buckets: tuple[Bucket, ...] | None = None
    tenants: tuple[TenantMeasurement, ...] | None = None
    tenants_error: str | None = None


class _PersistedValue(_Value):
    # Verdicts are kept in the persisted rollout state: a state written by a newer controller
    # (with fields this one does not know) must still load after a downgrade.
    model_config = ConfigDict(extra="ignore")


class JudgeSummary(_PersistedValue):
    """What the statistical judge found (see rollout.analysis.judge)."""

    outcome: CheckOutcome
    n_canary: float
    n_stable: float
    p_value: float | None = None  # one-sided: the canary is slower
    relative_shift: float | None = None  # +0.2: the canary is 20% slower


class TenantVerdict(_PersistedValue):
    """A tenant that failed on its own, and why."""

    tenant: str
    canary_requests: float
    failed: tuple[str, ...]  # "<check>: <reason>"


class MetricVerdict(_PersistedValue):
    metric: str
    outcome: CheckOutcome
    canary: float | None
    stable: float | None
    threshold: str  # the pass condition, e.g. "canary <= 0.02, canary/stable <= 1.2"
    reason: str  # why this outcome, with the numbers
    unit: str = ""  # of canary and stable: "s", "ratio", "USD/request", "tokens/request"...
    judge: JudgeSummary | None = None
    tenants: tuple[TenantVerdict, ...] = ()  # the per-tenant verdict's failing tenants

    def describe(self) -> str:
        """One line for Events, logs and the CLI: values with their unit against the pass
        condition, e.g. `ttft-p95 fail: canary 0.9 s, stable 0.3 s (canary/stable <= 1.2)`."""
        text = f"{self.metric} {self.outcome.value.lower()}: canary {self.value_text(self.canary)}"
        if self.stable is not None:
            text += f", stable {self.value_text(self.stable)}"
        if self.judge is not None and self.judge.relative_shift is not None:
            text += f", shift {self.judge.relative_shift * 100:+.3g}%"
            if self.judge.p_value is not None:
                text += f" (p={self.judge.p_value:.2g})"
        if self.tenants:
            text += f": {_tenant_list([t.tenant for t in self.tenants])}"
        return f"{text} ({self.threshold})"

    def value_text(self, value: float | None) -> str:
        """A value with its unit ("0.0042 USD/request"); "no data" for None."""
        if value is None:
            return "no data"
        return f"{value:.4g} {self.unit}" if self.unit else f"{value:.4g}"


class AnalysisVerdict(_PersistedValue):
    outcome: CheckOutcome
    metrics: tuple[MetricVerdict, ...]
    reason: str  # the metrics that decided the outcome, "; "-separated

    def failed_metrics(self) -> tuple[MetricVerdict, ...]:
        return tuple(verdict for verdict in self.metrics if verdict.outcome is CheckOutcome.FAIL)


def evaluate_metric(
    check: MetricCheck, measurement: Measurement, min_requests: int
) -> MetricVerdict:
    """Judge one measurement. Order: provider error, traffic, missing data, then thresholds
    and the judge (a check with both fails when either fails).

    Too little canary traffic is INCONCLUSIVE even if the few requests breached a threshold:
    three requests are noise, and failing on noise causes needless rollbacks. A missing stable
    value only makes the check INCONCLUSIVE when no absolute threshold has already failed.
    """
    threshold = check.threshold_description()
    canary, stable = measurement.canary, measurement.stable
    if not check.has_thresholds and check.judge is not None:
        # A judge alone: the medians are the values shown.
        canary = _median(measurement.canary_buckets)
        stable = _median(measurement.stable_buckets)

    def verdict(
        outcome: CheckOutcome, reason: str, judge: JudgeSummary | None = None
    ) -> MetricVerdict:
        return MetricVerdict(
            metric=check.name,
            outcome=outcome,
            canary=canary,
            stable=stable,
            threshold=threshold,
            reason=reason,
            unit=check.unit,
            judge=judge,
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

    parts: list[tuple[CheckOutcome, str]] = []
    if check.has_thresholds:
        parts.append(_judge_thresholds(check, measurement))
    summary: JudgeSummary | None = None
    if check.judge is not None:
        judged = _judge(check, measurement)
        summary = judged_summary = _summary(judged)
        label = "judge: " if check.has_thresholds else ""
        parts.append((judged_summary.outcome, label + judged.reason))
    for outcome in (CheckOutcome.FAIL, CheckOutcome.INCONCLUSIVE, CheckOutcome.PASS):
        if any(part_outcome is outcome for part_outcome, _ in parts):
            return verdict(outcome, "; ".join(reason for _, reason in parts), summary)
    raise AssertionError("a check has thresholds or a judge (schema)")  # pragma: no cover


def _judge_thresholds(check: MetricCheck, measurement: Measurement) -> tuple[CheckOutcome, str]:
    threshold = check.threshold_description(judge=False)
    canary = measurement.canary
    if canary is None:
        return CheckOutcome.INCONCLUSIVE, "no canary data in the window"
    if math.isnan(canary):
        return CheckOutcome.INCONCLUSIVE, "canary value is NaN (no observations)"

    breaches = _absolute_breaches(check, canary)
    if check.needs_stable:
        stable = measurement.stable
        if stable is None or math.isnan(stable):
            if breaches:
                return CheckOutcome.FAIL, "; ".join(breaches)
            missing = "no stable data" if stable is None else "stable value is NaN"
            return CheckOutcome.INCONCLUSIVE, f"{missing} for the relative threshold"
        relative_breaches, undefined = _relative_breaches(check, canary, stable)
        breaches += relative_breaches
        if not breaches and undefined:
            return CheckOutcome.INCONCLUSIVE, "; ".join(undefined)

    if breaches:
        return CheckOutcome.FAIL, "; ".join(breaches)
    return CheckOutcome.PASS, f"canary {_number(canary)} within {threshold}"


def _judge(check: MetricCheck, measurement: Measurement) -> JudgeResult:
    assert check.judge is not None
    if measurement.canary_buckets is None or measurement.stable_buckets is None:
        missing = "canary" if measurement.canary_buckets is None else "stable"
        return JudgeResult(
            outcome=JudgeOutcome.INCONCLUSIVE,
            reason=f"no {missing} histogram in the window",
            n_canary=0.0,
            n_stable=0.0,
        )
    return judge_latency(
        check.judge, measurement.canary_buckets, measurement.stable_buckets, unit=check.unit
    )


def _summary(result: JudgeResult) -> JudgeSummary:
    return JudgeSummary(
        outcome=CheckOutcome(result.outcome.value),
        n_canary=result.n_canary,
        n_stable=result.n_stable,
        p_value=result.p_value,
        relative_shift=result.relative_shift,
    )


def _median(buckets: Sequence[Bucket] | None) -> float | None:
    if buckets is None:
        return None
    return Histogram.from_buckets(buckets).quantile(0.5)


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
    """Judge every check of a policy; a check without a measurement is an ERROR, not a pass.
    With perTenant, one more verdict, named "per-tenant", judges the tenants one by one."""

    def measurement(check: MetricCheck) -> Measurement:
        return measurements.get(check.name) or Measurement(
            metric=check.name, error="no measurement was taken for this metric"
        )

    verdicts = [
        evaluate_metric(check, measurement(check), analysis.min_requests)
        for check in analysis.metrics
    ]
    if analysis.per_tenant is not None:
        checks = [check for check in analysis.metrics if check.judged_per_tenant]
        verdicts.append(
            evaluate_tenants(
                analysis.per_tenant,
                [(check, measurement(check)) for check in checks],
                analysis.min_requests,
            )
        )
    return evaluate_analysis(verdicts)


def evaluate_tenants(
    spec: PerTenantSpec,
    checks: Sequence[tuple[MetricCheck, Measurement]],
    min_requests: int,
) -> MetricVerdict:
    """The per-tenant verdict: each tenant with at least spec.min_requests canary requests is
    judged on its own (MetricCheck.for_tenant, against the same tenant on stable); FAIL when
    more than spec.max_failing_tenants tenants fail, naming them.

    The traffic gate of the whole analysis comes first (too little canary traffic: nothing is
    judged). Tenants below spec.min_requests are not judged at all, so a rollout whose tenants
    are all small passes here and is judged in aggregate only. Canary traffic without the
    tenant label at all is INCONCLUSIVE: the gateway is not labelling its metrics by tenant.
    """
    threshold = f"failing tenants <= {spec.max_failing_tenants}"

    def verdict(
        outcome: CheckOutcome,
        reason: str,
        failing: float | None = None,
        tenants: tuple[TenantVerdict, ...] = (),
    ) -> MetricVerdict:
        return MetricVerdict(
            metric=PER_TENANT_CHECK,
            outcome=outcome,
            canary=failing,
            stable=None,
            threshold=threshold,
            reason=reason,
            unit=TENANTS_UNIT,
            tenants=tenants,
        )

    errors = list(
        dict.fromkeys(
            error for _, m in checks for error in (m.error, m.tenants_error) if error is not None
        )
    )
    if errors:
        return verdict(CheckOutcome.ERROR, f"metrics provider error: {'; '.join(errors)}")
    if not checks:
        return verdict(CheckOutcome.INCONCLUSIVE, "no check is judged per tenant")

    if min_requests > 0:
        counts = [m.canary_requests for _, m in checks]
        requests = max((c for c in counts if c is not None and not math.isnan(c)), default=None)
        if requests is None:
            return verdict(CheckOutcome.INCONCLUSIVE, "canary request count unknown")
        if requests < min_requests:
            return verdict(
                CheckOutcome.INCONCLUSIVE,
                f"too little canary traffic: {_number(requests)} requests in the window, "
                f"{min_requests} needed",
            )

    by_tenant: dict[str, dict[str, TenantMeasurement]] = {}
    for check, measured in checks:
        for share in measured.tenants or ():
            if share.tenant:  # "": requests without the label, judged in aggregate only
                by_tenant.setdefault(share.tenant, {})[check.name] = share
    if not by_tenant:
        return verdict(
            CheckOutcome.INCONCLUSIVE,
            f"no canary request carries the tenant label {spec.label} (does the gateway's "
            "controller.metricsRequestHeaderAttributes map the tenant header to it?)",
        )

    def requests_of(tenant: str) -> float:
        counts = [t.canary_requests for t in by_tenant[tenant].values()]
        return max((c for c in counts if c is not None and not math.isnan(c)), default=0.0)

    judged = sorted(t for t in by_tenant if requests_of(t) >= spec.min_requests)
    small = len(by_tenant) - len(judged)
    failing: list[TenantVerdict] = []
    for tenant in judged:
        failed = []
        for check, _ in checks:
            part = by_tenant[tenant].get(check.name, TenantMeasurement(tenant=tenant))
            tenant_verdict = evaluate_metric(
                check.for_tenant(),
                Measurement(
                    metric=check.name,
                    canary=part.canary,
                    stable=part.stable,
                    canary_requests=requests_of(tenant),
                    canary_buckets=part.canary_buckets,
                    stable_buckets=part.stable_buckets,
                ),
                spec.min_requests,
            )
            if tenant_verdict.outcome is CheckOutcome.FAIL:
                failed.append(f"{check.name}: {tenant_verdict.reason}")
        if failed:
            failing.append(
                TenantVerdict(
                    tenant=tenant, canary_requests=requests_of(tenant), failed=tuple(failed)
                )
            )

    not_judged = (
        f"; {small} tenant(s) below {spec.min_requests} canary requests not judged" if small else ""
    )
    kept = tuple(sorted(failing, key=lambda t: -t.canary_requests)[:MAX_TENANTS_KEPT])
    if len(failing) > spec.max_failing_tenants:
        named = ", ".join(
            f"{json.dumps(t.tenant)} ({'; '.join(t.failed)})" for t in kept[:MAX_TENANTS_NAMED]
        )
        more = len(failing) - min(len(kept), MAX_TENANTS_NAMED)
        return verdict(
            CheckOutcome.FAIL,
            f"{len(failing)} of {len(judged)} tenant(s) failed, more than maxFailingTenants "
            f"{spec.max_failing_tenants}: {named}"
            + (f" and {more} more" if more else "")
            + not_judged,
            float(len(failing)),
            kept,
        )
    if not judged:
        return verdict(
            CheckOutcome.PASS,
            f"no tenant has {spec.min_requests} canary requests: nothing to judge per tenant "
            f"({len(by_tenant)} tenant(s) seen)",
            0.0,
        )
    tolerated = f": {_tenant_list([t.tenant for t in kept])}" if failing else ""
    return verdict(
        CheckOutcome.PASS,
        f"{len(failing)} of {len(judged)} tenant(s) failed (maxFailingTenants "
        f"{spec.max_failing_tenants}){tolerated}" + not_judged,
        float(len(failing)),
        kept,
    )


def _tenant_list(tenants: Sequence[str]) -> str:
    named = ", ".join(json.dumps(t) for t in tenants[:MAX_TENANTS_NAMED])
    more = len(tenants) - MAX_TENANTS_NAMED
    return named + (f" and {more} more" if more > 0 else "")


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
