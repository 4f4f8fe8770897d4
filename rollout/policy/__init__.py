"""Rollout policies: the RolloutPolicy schema (pure) and loading it from YAML files.

`schema` does no I/O; `loading` reads files and returns errors instead of raising, so one bad
policy file never stops the others.
"""

from rollout.gateway.models import BudgetPeriod
from rollout.policy.loading import (
    LoadResult,
    PolicyError,
    PolicyLoadError,
    format_field_path,
    load_policy_file,
    load_policy_paths,
    parse_policy_text,
)
from rollout.policy.schema import (
    API_VERSION,
    KIND,
    REQUEST_MODEL_LABEL,
    TEMPLATE_VARIABLES,
    AnalysisSpec,
    DriftAction,
    FailureAction,
    MetricCheck,
    MetricKind,
    Percentile,
    PolicyMetadata,
    RateLimitSpec,
    RolloutPolicy,
    RolloutSpec,
    RouteTarget,
    Variant,
    format_duration,
    parse_duration,
    policy_json_schema,
    render_label_matchers,
    render_query_template,
    template_variables,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "REQUEST_MODEL_LABEL",
    "TEMPLATE_VARIABLES",
    "AnalysisSpec",
    "BudgetPeriod",
    "DriftAction",
    "FailureAction",
    "LoadResult",
    "MetricCheck",
    "MetricKind",
    "Percentile",
    "PolicyError",
    "PolicyLoadError",
    "PolicyMetadata",
    "RateLimitSpec",
    "RolloutPolicy",
    "RolloutSpec",
    "RouteTarget",
    "Variant",
    "format_duration",
    "format_field_path",
    "load_policy_file",
    "load_policy_paths",
    "parse_duration",
    "parse_policy_text",
    "policy_json_schema",
    "render_label_matchers",
    "render_query_template",
    "template_variables",
]
