"""Canary analysis: pure verdicts, the metrics port, PromQL building and the Prometheus adapter.

`verdicts` and `queries` are pure: they judge numbers and build query strings, and never talk
to Prometheus. `provider` is the port the controller depends on; `prometheus` is its adapter and
the only module that imports prometheus_api_client.
"""

from rollout.analysis.prometheus import PrometheusMetricsProvider
from rollout.analysis.provider import (
    AnalysisRequest,
    Measurements,
    MetricsProvider,
    QueryEvent,
)
from rollout.analysis.queries import QueryPlan, assemble_measurements, plan_queries
from rollout.analysis.verdicts import (
    AnalysisVerdict,
    CheckOutcome,
    Measurement,
    MetricVerdict,
    canary_stable_ratio,
    evaluate_analysis,
    evaluate_measurements,
    evaluate_metric,
)

__all__ = [
    "AnalysisRequest",
    "AnalysisVerdict",
    "CheckOutcome",
    "Measurement",
    "Measurements",
    "MetricVerdict",
    "MetricsProvider",
    "PrometheusMetricsProvider",
    "QueryEvent",
    "QueryPlan",
    "assemble_measurements",
    "canary_stable_ratio",
    "evaluate_analysis",
    "evaluate_measurements",
    "evaluate_metric",
    "plan_queries",
]
