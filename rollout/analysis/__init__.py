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
    JudgeSummary,
    Measurement,
    MetricVerdict,
    TenantMeasurement,
    TenantVerdict,
    canary_stable_ratio,
    evaluate_analysis,
    evaluate_measurements,
    evaluate_metric,
    evaluate_tenants,
)

__all__ = [
    "AnalysisRequest",
    "AnalysisVerdict",
    "CheckOutcome",
    "JudgeSummary",
    "Measurement",
    "Measurements",
    "MetricVerdict",
    "MetricsProvider",
    "PrometheusMetricsProvider",
    "QueryEvent",
    "QueryPlan",
    "TenantMeasurement",
    "TenantVerdict",
    "assemble_measurements",
    "canary_stable_ratio",
    "evaluate_analysis",
    "evaluate_measurements",
    "evaluate_metric",
    "evaluate_tenants",
    "plan_queries",
]
