"""The metrics port: what the controller asks of a metrics backend, and what it gets back.

Contract: no I/O here. The controller depends on `MetricsProvider` only; adapters (Prometheus
today) implement it and tests fake it. One `measure` call covers every rollout due in a tick,
so that an adapter can batch: the number of backend queries must not grow with the number of
rollouts.

A provider never raises for a backend failure: it reports it in `Measurement.error` for each
affected metric, because the verdicts keep "could not measure" apart from "measured bad".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rollout.analysis.verdicts import Measurement
from rollout.frozen import PerObject, copy_without_validation
from rollout.policy.schema import (
    AnalysisSpec,
    KubeName,
    KubeNamespace,
    MetricKind,
    Pricing,
    PromLabelName,
    RolloutPolicy,
)

# The shortest range a check can be asked for: Prometheus ranges below a second say nothing.
MIN_EFFECTIVE_WINDOW = timedelta(seconds=1)

Selector = Annotated[dict[PromLabelName, str], Field(min_length=1)]


class AnalysisRequest(BaseModel):
    """One rollout's analysis for this tick: what to measure, and how to find each variant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, description="Identifies the rollout in the answer.")
    analysis: AnalysisSpec
    stable: Selector = Field(description="Labels selecting the stable variant's requests.")
    canary: Selector = Field(description="Labels selecting the canary variant's requests.")
    route: KubeName
    namespace: KubeNamespace
    stable_pricing: Pricing | None = Field(
        default=None, description="The stable variant's token prices (cost-per-request)."
    )
    canary_pricing: Pricing | None = Field(
        default=None, description="The canary variant's token prices (cost-per-request)."
    )
    effective_window: timedelta | None = Field(
        default=None,
        description="How far back this tick may look: the time since the current weights "
        "were written, minus the warm-up. None: the policy's window. The range used is never "
        "longer than the policy's window, and is rounded down to whole seconds (see `window`).",
    )

    @field_validator("effective_window")
    @classmethod
    def _long_enough(cls, window: timedelta | None) -> timedelta | None:
        if window is not None and window < MIN_EFFECTIVE_WINDOW:
            raise ValueError(
                f"effective window {window} is shorter than {MIN_EFFECTIVE_WINDOW.seconds}s: "
                "there is no traffic to judge yet, so do not measure this rollout now"
            )
        return window

    @model_validator(mode="after")
    def _priced_when_needed(self) -> AnalysisRequest:
        costs = [m.name for m in self.analysis.metrics if m.kind is MetricKind.COST_PER_REQUEST]
        if costs and (self.stable_pricing is None or self.canary_pricing is None):
            raise ValueError(f"check(s) {', '.join(costs)} need stable_pricing and canary_pricing")
        return self

    @property
    def window(self) -> timedelta:
        """The PromQL range of this tick: the policy's window, or the effective window when
        shorter, rounded DOWN to whole seconds. Down, so that a check never reaches back into
        the traffic before the weights (plus warm-up); whole seconds, so that rollouts whose
        weights changed in the same second share their batched queries."""
        window = self.analysis.window
        if self.effective_window is None or self.effective_window >= window:
            return window
        return timedelta(seconds=math.floor(self.effective_window.total_seconds()))

    @field_validator("stable", "canary")
    @classmethod
    def _no_reserved_labels(cls, selector: dict[str, str]) -> dict[str, str]:
        # `__name__` and friends would turn `sum by (...)` into a different query altogether.
        reserved = sorted(label for label in selector if label.startswith("__"))
        if reserved:
            raise ValueError(f"reserved Prometheus label name(s): {', '.join(reserved)}")
        return selector

    @classmethod
    def for_policy(
        cls,
        policy: RolloutPolicy,
        key: str | None = None,
        *,
        effective_window: timedelta | None = None,
    ) -> AnalysisRequest:
        """The request for a policy; the key defaults to the policy name, the window to the
        policy's (see `effective_window`)."""
        if cls is AnalysisRequest and key is None:
            if effective_window is None:
                return _requests(policy)
            if effective_window >= MIN_EFFECTIVE_WINDOW:
                # The policy's request, validated once, with this tick's window (already
                # checked: the one field that differs).
                return copy_without_validation(
                    _requests(policy), {"effective_window": effective_window}
                )
        return cls._of_policy(policy, key, effective_window)

    @classmethod
    def _of_policy(
        cls, policy: RolloutPolicy, key: str | None, effective_window: timedelta | None
    ) -> AnalysisRequest:
        spec = policy.spec
        return cls(
            key=key if key is not None else policy.name,
            analysis=spec.analysis,
            stable=spec.stable.selector,
            canary=spec.canary.selector,
            route=spec.route.name,
            namespace=spec.route.namespace,
            stable_pricing=spec.stable.pricing,
            canary_pricing=spec.canary.pricing,
            effective_window=effective_window,
        )


# The request of each policy object (without an effective window), built once: the scheduler
# asks for one per rollout and tick, and validating it again each time cost more than the
# rest of for_policy (policies are frozen; a reload makes new objects).
_requests: PerObject[RolloutPolicy, AnalysisRequest] = PerObject(
    lambda policy: AnalysisRequest._of_policy(policy, None, None)
)


# rollout key -> metric (check) name -> what was measured
Measurements = dict[str, dict[str, Measurement]]


@dataclass(frozen=True)
class QueryEvent:
    """One backend query, for the controller's own metrics and for benchmarks."""

    purpose: str  # what it measured: "requests", "ttft-p95", "custom:<metric>" ...
    seconds: float
    failed: bool


class MetricsProvider(Protocol):
    def measure(self, requests: Sequence[AnalysisRequest]) -> Measurements:
        """Measure every check of every request over its window.

        The answer has an entry for every request key and every check name of that request.
        Missing data is a None value; a backend failure is `Measurement.error`; never raises
        for either.
        """
        ...

    def is_online(self) -> bool:
        """Whether the backend answers at all (checked before a rollout starts)."""
        ...
