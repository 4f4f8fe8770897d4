"""Canary analysis: pure verdicts over measurements (and, later, the Prometheus adapter).

`verdicts` is pure: it judges numbers handed to it and never talks to Prometheus.
"""

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
    "AnalysisVerdict",
    "CheckOutcome",
    "Measurement",
    "MetricVerdict",
    "canary_stable_ratio",
    "evaluate_analysis",
    "evaluate_measurements",
    "evaluate_metric",
]
