"""The metrics port: what the controller asks of a metrics backend, and what it gets back.

Contract: no I/O here. The controller depends on `MetricsProvider` only; adapters (Prometheus
today) implement it and tests fake it. One `measure` call covers every rollout due in a tick,
so that an adapter can batch: the number of backend queries must not grow with the number of
rollouts.

A provider never raises for a backend failure: it reports it in `Measurement.error` for each
affected metric, because the verdicts keep "could not measure" apart from "measured bad".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rollout.analysis.verdicts import Measurement
from rollout.policy.schema import (
    AnalysisSpec,
    KubeName,
    KubeNamespace,
    PromLabelName,
    RolloutPolicy,
)

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

    @field_validator("stable", "canary")
    @classmethod
    def _no_reserved_labels(cls, selector: dict[str, str]) -> dict[str, str]:
        # `__name__` and friends would turn `sum by (...)` into a different query altogether.
        reserved = sorted(label for label in selector if label.startswith("__"))
        if reserved:
            raise ValueError(f"reserved Prometheus label name(s): {', '.join(reserved)}")
        return selector

    @classmethod
    def for_policy(cls, policy: RolloutPolicy, key: str | None = None) -> AnalysisRequest:
        """The request for a policy; the key defaults to the policy name."""
        spec = policy.spec
        return cls(
            key=key if key is not None else policy.name,
            analysis=spec.analysis,
            stable=spec.stable.selector,
            canary=spec.canary.selector,
            route=spec.route.name,
            namespace=spec.route.namespace,
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
