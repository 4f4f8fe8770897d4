"""The RolloutPolicy schema: what users write in policies/*.yaml.

Contract: pure data and validation, no I/O. YAML keys are camelCase (aliases) and Python
attributes snake_case; both are accepted on input. Unknown keys are rejected everywhere, because a
misspelt threshold that is silently dropped would promote a bad model.

Example::

    apiVersion: rollout.model-registry.io/v1alpha1
    kind: RolloutPolicy
    metadata: {name: chat-canary}
    spec:
      route: {namespace: llm, name: chat}          # ruleName or ruleIndex optional
      stable: {backend: chat-v1, modelNameOverride: llama-3-8b-v1}
      canary: {backend: chat-v2, modelNameOverride: llama-3-8b-v2}
      steps: [5, 25, 50]                           # 100 is appended: reaching it is success
      analysis:
        interval: 1m
        window: 5m
        minRequests: 50
        metrics:
          - kind: error-rate
            max: 0.02
          - kind: ttft
            percentile: p95
            maxRatio: 1.2
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

# The gateway's enum: a policy's budget period is exactly what the adapter can write.
from rollout.gateway.models import BudgetPeriod
from rollout.notifications.spec import NotificationSpec
from rollout.policy.jsonpath import JsonPath, parse_json_path
from rollout.secret_source import SecretSource

API_VERSION = "rollout.model-registry.io/v1alpha1"
KIND = "RolloutPolicy"

# The gateway sets this label to the backendRef's modelNameOverride, and it is the only label in
# the AI Gateway metrics (v1.1) that tells two backends of one route apart.
REQUEST_MODEL_LABEL = "gen_ai_request_model"

# Variables a custom `query` may use, written {{name}}.
TEMPLATE_VARIABLES: frozenset[str] = frozenset(
    {"selector", "window", "route", "namespace", "variant"}
)
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class _Schema(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's copy without the values `functools.cached_property` stored (derived
        values of these frozen models, e.g. MetricCheck's thresholds): pydantic copies the whole
        `__dict__`, so a copy with `update` would otherwise answer with the original's."""
        copied = super().model_copy(update=update, deep=deep)
        fields = type(self).__pydantic_fields__
        for name in [name for name in copied.__dict__ if name not in fields]:
            del copied.__dict__[name]
        return copied


# Validation context key (`RolloutPolicy.model_validate(data, context={SHARED_MODELS: {}})`):
# a mapping in which equal inputs of the shareable sections (an analysis, a metric check, a
# step) find the frozen object a previous policy validated them to, instead of a copy each.
# Thousands of policies written from one template hold one analysis object, not thousands
# (about half of a policy's memory), and an input already validated is not validated again.
SHARED_MODELS = "rollout.shared_models"

_KEYED_SCALARS = (str, int, float, bool, type(None), bytes, date, datetime)


def _input_key(value: object) -> object:
    """A hashable form of a YAML input (mappings in their order, every scalar with its exact
    type, floats by repr: 0.0 and -0.0 stay apart); None when it holds anything else."""
    kind = type(value)
    if kind is dict:
        items = []
        for key, item in value.items():  # type: ignore[attr-defined]
            frozen = (_input_key(key), _input_key(item))
            if frozen[0] is None or frozen[1] is None:
                return None
            items.append(frozen)
        return ("dict", tuple(items))
    if kind is list or kind is tuple:
        members = tuple(_input_key(item) for item in value)  # type: ignore[attr-defined]
        return None if any(m is None for m in members) else (kind.__name__, members)
    if kind in _KEYED_SCALARS:
        return (kind.__name__, repr(value))
    return None


class _Shareable(_Schema):
    """A section that equal inputs may share (see SHARED_MODELS). Without the context key,
    or for an input that is not plain YAML data, it is validated as any model."""

    @model_validator(mode="wrap")
    @classmethod
    def _share_equal_inputs(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        context = info.context
        shared = context.get(SHARED_MODELS) if isinstance(context, dict) else None
        if shared is None:
            return handler(data)
        frozen = _input_key(data)
        if frozen is None:
            return handler(data)
        digest = hashlib.sha256(repr(frozen).encode()).digest()
        key = (cls, info.mode, digest)
        found = shared.get(key)
        if found is not None:
            return found
        model = handler(data)  # raises for an invalid input: nothing is kept then
        shared[key] = model
        return model


# ---------------------------------------------------------------------------------------------
# Scalar types

_DURATION_UNITS: dict[str, timedelta] = {
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_DURATION_PATTERN = r"^([0-9]+(ms|s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Parse a Prometheus-style duration ("30s", "5m", "1h30m", "500ms") into a timedelta.

    Bare numbers are refused: "30" could mean seconds or minutes, and guessing is how an
    analysis interval ends up 60 times too long. Zero ("0s") only with `allow_zero`.
    """
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str) and re.fullmatch(_DURATION_PATTERN, value.strip()):
        duration = sum(
            (int(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(value)),
            timedelta(0),
        )
    else:
        raise ValueError(f'expected a duration such as "30s", "5m" or "1h30m", got {value!r}')
    if duration < timedelta(0) or (duration == timedelta(0) and not allow_zero):
        raise ValueError("duration must be greater than zero")
    return duration


def _parse_duration_or_zero(value: object) -> timedelta:
    return parse_duration(value, allow_zero=True)


def format_duration(duration: timedelta) -> str:
    """Format a timedelta as a Prometheus duration, largest units first ("1h30m", "45s")."""
    remaining_ms = round(duration / timedelta(milliseconds=1))
    if remaining_ms <= 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):
        unit_ms = round(_DURATION_UNITS[unit] / timedelta(milliseconds=1))
        amount, remaining_ms = divmod(remaining_ms, unit_ms)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DURATION_PATTERN, "examples": ["30s", "5m"]}),
]

# A duration that may be zero ("0s"), e.g. a warm-up that is off.
DurationOrZero = Annotated[
    timedelta,
    BeforeValidator(_parse_duration_or_zero),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DURATION_PATTERN, "examples": ["0s", "30s"]}),
]

# Kubernetes object names (DNS-1123 subdomain) and namespaces (DNS-1123 label).
KubeName = Annotated[
    str,
    StringConstraints(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
KubeNamespace = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
PromLabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
MetricName = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
]
HttpHeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
# Strict: YAML `true` must not pass as 1, nor "5" as a number.
Threshold = Annotated[StrictFloat, Field(allow_inf_nan=False)]
# USD per 1M tokens.
Price = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
CanaryPercent = Annotated[StrictInt, Field(ge=1, le=100)]
# Sub-percent steps (0.01% granularity) are written on a larger total of route weights.
WEIGHT_TOTAL_FINE = 10_000


def _hundredths(value: float) -> float:
    if value < 0.01 or value > 100:
        raise ValueError(f"a step is a percentage from 0.01 to 100, got {value:g}")
    if abs(value * 100 - round(value * 100)) > 1e-9:
        raise ValueError(f"steps go down to 0.01%: {value:g} has more decimals")
    return int(value) if float(value).is_integer() else round(value, 2)


StepPercent = Annotated[
    StrictInt | StrictFloat, AfterValidator(_hundredths), Field(json_schema_extra={"minimum": 0.01})
]
PositiveCount = Annotated[StrictInt, Field(ge=1)]


def _not_required(schema: dict[str, Any], *names: str) -> None:
    # For fields filled in by a before-validator: editors must not demand them.
    required = [name for name in schema.get("required", []) if name not in names]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)


def render_label_matchers(selector: Mapping[str, str]) -> str:
    """Render a selector as PromQL label matchers without braces: `a="x", b="y"` (sorted)."""
    return ", ".join(
        f'{label}="{_escape_promql_string(value)}"' for label, value in sorted(selector.items())
    )


def _escape_promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def template_variables(query: str) -> set[str]:
    """The {{variable}} names used in a custom query template."""
    return set(_TEMPLATE_VARIABLE.findall(query))


def render_query_template(template: str, variables: Mapping[str, str]) -> str:
    """Substitute {{name}} in a custom query. Raises KeyError for a variable not given."""
    return _TEMPLATE_VARIABLE.sub(lambda match: variables[match.group(1)], template)


# ---------------------------------------------------------------------------------------------
# Webhooks (gates and `kind: webhook` checks)

WEBHOOK_SCHEMES = frozenset({"http", "https"})
# A gate may run an eval suite; longer than this is a batch job, not a gate.
MAX_WEBHOOK_TIMEOUT = timedelta(hours=1)
DEFAULT_WEBHOOK_METRIC_TIMEOUT = timedelta(seconds=10)


def _webhook_url(value: object) -> object:
    """An absolute http(s) URL with a host and no credentials (secrets never sit in a policy)."""
    if not isinstance(value, str):
        return value  # the str type reports it
    parsed = urlsplit(value.strip())
    scheme = parsed.scheme.lower()
    if scheme not in WEBHOOK_SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        raise ValueError(
            f"only http and https URLs are allowed (scheme {shown}), e.g. http://evals.ml.svc/run"
        )
    if not parsed.hostname:
        raise ValueError(f"the URL {value!r} has no host")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(
            "the URL carries credentials: put a token in auth.bearerTokenFrom "
            "{env: NAME} or {file: PATH} instead"
        )
    return value.strip()


WebhookUrl = Annotated[str, BeforeValidator(_webhook_url)]


def _webhook_timeout(value: object) -> timedelta:
    timeout = parse_duration(value)
    if timeout > MAX_WEBHOOK_TIMEOUT:
        raise ValueError(
            f"timeout {format_duration(timeout)} is longer than "
            f"{format_duration(MAX_WEBHOOK_TIMEOUT)}"
        )
    return timeout


WebhookTimeout = Annotated[
    timedelta,
    BeforeValidator(_webhook_timeout),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DURATION_PATTERN, "examples": ["10s", "5m"]}),
]


class HttpMethod(StrEnum):
    GET = "GET"
    POST = "POST"


class WebhookAuth(_Schema):
    """How a webhook call authenticates: `Authorization: Bearer <token>`, the token read from
    an environment variable or a mounted file at each call."""

    bearer_token_from: SecretSource

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inline = sorted(
                key
                for key in data
                if isinstance(key, str)
                and key not in {"bearerTokenFrom", "bearer_token_from"}
                and any(word in key.lower() for word in ("token", "password", "secret"))
            )
            if inline:
                raise ValueError(
                    f"{inline[0]}: secrets are never written in a policy; use "
                    "bearerTokenFrom: {env: NAME} or {file: /path/to/token}"
                )
        return data


# ---------------------------------------------------------------------------------------------
# Route and variants


class RouteTarget(_Schema):
    """The AIGatewayRoute whose weights the rollout steps, and which of its rules."""

    namespace: KubeNamespace
    name: KubeName = Field(description="AIGatewayRoute name.")
    rule_name: str | None = Field(
        default=None,
        min_length=1,
        description="Name of the rule to step. Default: the rule whose backendRefs hold both "
        "the stable and the canary backend.",
    )
    rule_index: Annotated[StrictInt, Field(ge=0, le=14)] | None = Field(
        default=None, description="Index of the rule in spec.rules, instead of ruleName."
    )

    @model_validator(mode="after")
    def _one_rule_selector(self) -> RouteTarget:
        if self.rule_name is not None and self.rule_index is not None:
            raise ValueError("set ruleName or ruleIndex, not both")
        return self


class Pricing(_Schema):
    """What a variant's tokens cost, in USD per 1M tokens, for the cost-per-request check.

    The gateway's `input` tokens already include the cached and the cache-creation ones, so
    the input price applies to input - cachedInput - cacheCreationInput tokens only; reasoning
    tokens are part of `output` and billed at the output price.
    """

    input: Price = Field(description="USD per 1M (uncached) input tokens.")
    cached_input: Price | None = Field(
        default=None,
        description="USD per 1M input tokens read from the prompt cache. Default: "
        "the input price (no cache discount).",
    )
    cache_creation_input: Price | None = Field(
        default=None,
        description="USD per 1M input tokens written to the prompt cache. "
        "Default: the input price.",
    )
    output: Price = Field(description="USD per 1M output tokens (reasoning included).")

    @property
    def cached_input_price(self) -> float:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def cache_creation_input_price(self) -> float:
        return self.input if self.cache_creation_input is None else self.cache_creation_input

    def request_cost(
        self, *, input: float, cached_input: float, cache_creation_input: float, output: float
    ) -> float:
        """USD for these token counts (totals over any number of requests).

        `input` is the gateway's unified total: it includes cached_input and
        cache_creation_input, which are billed at their own prices and so taken out of it. When
        the two exceed it (a gateway that counts input without the cache), nothing is left at
        the input price rather than a negative amount.
        """
        uncached = max(input - cached_input - cache_creation_input, 0.0)
        return (
            uncached * self.input
            + cached_input * self.cached_input_price
            + cache_creation_input * self.cache_creation_input_price
            + output * self.output
        ) / 1_000_000


# Marks a variant whose pricing a cost-per-request check needs (see RolloutSpec._pricing_needed);
# an object, so that no YAML value can be it.
_PRICING_REQUIRED = object()


class Variant(_Schema):
    """One side of the split: an AIServiceBackend and how to find its traffic in the metrics."""

    backend: KubeName = Field(description="AIServiceBackend name referenced by the route rule.")
    model_name_override: str | None = Field(
        default=None,
        min_length=1,
        description="The backendRef's modelNameOverride; the gateway reports it as "
        f"{REQUEST_MODEL_LABEL}, so it doubles as the default metric selector.",
    )
    metric_selector: dict[PromLabelName, str] | None = Field(
        default=None,
        min_length=1,
        description="Prometheus label values (label -> exact value) selecting this variant's "
        f"requests. Default: {{{REQUEST_MODEL_LABEL}: <modelNameOverride>}}.",
    )
    pricing: Pricing | None = Field(
        default=None,
        description="Token prices (USD per 1M tokens); required on both variants by a "
        "cost-per-request check.",
    )

    @field_validator("pricing", mode="before")
    @classmethod
    def _pricing_given_when_needed(cls, value: object) -> object:
        if value is _PRICING_REQUIRED:
            raise ValueError(
                "the cost-per-request check needs pricing for both variants: set pricing "
                "{input, cachedInput, cacheCreationInput, output} in USD per 1M tokens"
            )
        return value

    @field_validator("metric_selector")
    @classmethod
    def _no_reserved_labels(cls, selector: dict[str, str] | None) -> dict[str, str] | None:
        # Prometheus keeps names starting with "__" for itself; they never reach a query.
        reserved = sorted(label for label in selector or {} if label.startswith("__"))
        if reserved:
            raise ValueError(f"reserved Prometheus label name(s): {', '.join(reserved)}")
        return selector

    @model_validator(mode="after")
    def _has_a_selector(self) -> Variant:
        if self.metric_selector is None and self.model_name_override is None:
            raise ValueError(
                "set metricSelector or modelNameOverride: the gateway metrics have no backend "
                "label, so the variant's traffic can only be found by its labels"
            )
        return self

    @property
    def selector(self) -> dict[str, str]:
        """The labels that select this variant's traffic (explicit or derived)."""
        if self.metric_selector is not None:
            return dict(self.metric_selector)
        assert self.model_name_override is not None  # guaranteed by _has_a_selector
        return {REQUEST_MODEL_LABEL: self.model_name_override}


# ---------------------------------------------------------------------------------------------
# Analysis


class MetricKind(StrEnum):
    """Built-in checks over the AI Gateway's gen_ai_* metrics, plus custom PromQL."""

    ERROR_RATE = "error-rate"  # failed / all requests (request-duration count, error_type set)
    TTFT = "ttft"  # time to first token, seconds (streaming requests only)
    TIME_PER_OUTPUT_TOKEN = "time-per-output-token"  # seconds per token (streaming only)
    REQUEST_DURATION = "request-duration"  # seconds
    # Output tokens per second of request time: a per-request speed, so independent of weight.
    OUTPUT_TOKENS_PER_SECOND = "output-tokens-per-second"
    # USD per successful request, from the token usage by type and each variant's pricing.
    COST_PER_REQUEST = "cost-per-request"
    # Mean tokens of one `tokenType` per successful request.
    TOKENS_PER_REQUEST = "tokens-per-request"
    # Share of the input tokens read from the prompt cache (cached_input / input).
    CACHE_HIT_RATIO = "cache-hit-ratio"
    CUSTOM = "custom"  # `query`, a PromQL template
    # A number read (jsonPath) from an HTTP endpoint's JSON answer, e.g. an LLM-judge score:
    # the canary's value only (no stable), fetched by the controller, not Prometheus.
    WEBHOOK = "webhook"

    @property
    def needs_percentile(self) -> bool:
        """Whether thresholds on this kind judge a percentile of a latency histogram."""
        return self in _LATENCY_KINDS

    @property
    def is_histogram(self) -> bool:
        """Whether the kind reads a latency histogram, so that a judge can compare them."""
        return self in _LATENCY_KINDS

    @property
    def is_fraction(self) -> bool:
        """Whether values are fractions in [0, 1] (so thresholds beyond it never decide)."""
        return self in {MetricKind.ERROR_RATE, MetricKind.CACHE_HIT_RATIO}

    @property
    def unit(self) -> str:
        """The unit of the measured values; "" for custom queries (we cannot know)."""
        return _UNITS[self]


_LATENCY_KINDS = frozenset(
    {MetricKind.TTFT, MetricKind.TIME_PER_OUTPUT_TOKEN, MetricKind.REQUEST_DURATION}
)
_UNITS: dict[MetricKind, str] = {
    MetricKind.ERROR_RATE: "ratio",
    MetricKind.TTFT: "s",
    MetricKind.TIME_PER_OUTPUT_TOKEN: "s",
    MetricKind.REQUEST_DURATION: "s",
    MetricKind.OUTPUT_TOKENS_PER_SECOND: "tokens/s",
    MetricKind.COST_PER_REQUEST: "USD/request",
    MetricKind.TOKENS_PER_REQUEST: "tokens/request",
    MetricKind.CACHE_HIT_RATIO: "ratio",
    MetricKind.CUSTOM: "",
    MetricKind.WEBHOOK: "",
}
# The name of the verdict that folds the per-tenant judgements (see AnalysisSpec.per_tenant).
PER_TENANT_CHECK = "per-tenant"


class Percentile(StrEnum):
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"

    @property
    def quantile(self) -> float:
        """The histogram_quantile argument, e.g. 0.95."""
        return int(self.value[1:]) / 100


class TokenType(StrEnum):
    """Values of the gateway's gen_ai_token_type label that tokens-per-request can follow.

    `input` is the unified total input (it includes cached_input and cache_creation_input);
    `reasoning` is part of `output`.
    """

    INPUT = "input"
    OUTPUT = "output"
    REASONING = "reasoning"
    CACHED_INPUT = "cached_input"
    CACHE_CREATION_INPUT = "cache_creation_input"


class JudgeTest(StrEnum):
    MANN_WHITNEY = "mann-whitney"


class JudgeSpec(_Schema):
    """A statistical comparison of the canary's latency histogram with stable's.

    FAIL only when the canary is slower with `confidence` (one-sided Mann-Whitney U test with
    tie correction over the histogram buckets) AND its estimated shift exceeds `maxShift`
    (relative to stable's median); PASS otherwise; INCONCLUSIVE with too few observations.
    """

    test: JudgeTest = Field(default=JudgeTest.MANN_WHITNEY, description="The test; one today.")
    confidence: Annotated[StrictFloat, Field(gt=0, lt=1)] = Field(
        default=0.99,
        description="How sure the test must be that the canary is slower (1 - p-value), "
        "strictly between 0 and 1.",
    )
    max_shift: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.1,
        description="The largest tolerated slowdown, relative to stable's median (0.1 = 10%).",
    )

    def description(self) -> str:
        return (
            f"{self.test.value}: fails if slower at {_percent(self.confidence)} confidence "
            f"by > {_percent(self.max_shift)}"
        )


# Marks a latency check that has a judge and no threshold, so needs no percentile (see
# MetricCheck._fill_defaults); an object, so that no YAML value can be it.
_JUDGED_ALONE = object()
_THRESHOLD_KEYS = ("min", "max", "minRatio", "maxRatio", "minDifference", "maxDifference")
_THRESHOLD_NAMES = (
    "min_value",
    "max_value",
    "min_ratio",
    "max_ratio",
    "min_difference",
    "max_difference",
)


class MetricCheck(_Shareable):
    """One metric and its thresholds. Each set threshold must hold for the check to pass.

    Relative thresholds compare the canary with the stable variant over the same window. A
    ratio with a zero stable value is 1 when the canary is zero too and +inf otherwise (a
    canary worse than a perfect stable fails maxRatio); for error rates, where the stable
    value is often exactly zero, prefer maxDifference.

    A latency check (ttft, time-per-output-token, request-duration) may carry a `judge`
    instead of, or beside, its thresholds.
    """

    model_config = ConfigDict(
        json_schema_extra=lambda schema: _not_required(schema, "name", "kind")
    )

    name: MetricName = Field(
        description="Unique within the policy. Default: the kind, plus -<percentile> or "
        "-<tokenType> if any."
    )
    kind: MetricKind = Field(description="Default: custom when `query` is set.")
    # The thresholds come before the fields whose validity depends on them (percentile).
    min_value: Threshold | None = Field(default=None, alias="min")
    max_value: Threshold | None = Field(default=None, alias="max")
    min_ratio: Threshold | None = Field(default=None, gt=0, description="canary/stable >= this")
    max_ratio: Threshold | None = Field(default=None, gt=0, description="canary/stable <= this")
    min_difference: Threshold | None = Field(default=None, description="canary-stable >= this")
    max_difference: Threshold | None = Field(default=None, description="canary-stable <= this")
    judge: JudgeSpec | None = Field(
        default=None,
        description="Statistical comparison of the latency histograms (ttft, "
        "time-per-output-token, request-duration only).",
    )
    token_type: TokenType | None = Field(
        default=None,
        description="Required for tokens-per-request: which gen_ai_token_type to average.",
    )
    percentile: Percentile | None = Field(
        default=None,
        validate_default=True,
        description="Required for the thresholds of ttft, time-per-output-token, "
        "request-duration (a judge alone needs none).",
    )
    query: str | None = Field(
        default=None,
        min_length=1,
        validate_default=True,
        description="PromQL template for kind custom, run once per variant. Variables: "
        "{{selector}} (label matchers without braces), {{window}}, {{route}}, {{namespace}}, "
        "{{variant}} (stable|canary).",
    )
    # kind webhook: where the number comes from (see WEBHOOK_FIELDS).
    url: WebhookUrl | None = Field(
        default=None,
        validate_default=True,
        description="kind webhook: the http(s) URL answering JSON.",
    )
    method: HttpMethod | None = Field(
        default=None,
        description="kind webhook: GET (default) or POST (with the rollout's JSON payload).",
    )
    json_path: str | None = Field(
        default=None,
        validate_default=True,
        description="kind webhook: where the number is in the answer, e.g. $.score or "
        "$.results[0].value (.key, [index] and ['key'] steps only).",
    )
    timeout: WebhookTimeout | None = Field(
        default=None, description="kind webhook: how long one call may take (default 10s)."
    )
    auth: WebhookAuth | None = Field(
        default=None,
        description="kind webhook: bearerTokenFrom {env: NAME} or {file: PATH}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        # Defaults that depend on other keys; done on the raw mapping so that the errors of
        # the real fields still point at the user's keys.
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        if "kind" not in filled and filled.get("query") is not None:
            filled["kind"] = MetricKind.CUSTOM.value
        if filled.get("kind") == MetricKind.WEBHOOK.value:
            filled.setdefault("method", HttpMethod.GET.value)
            filled.setdefault("timeout", format_duration(DEFAULT_WEBHOOK_METRIC_TIMEOUT))
            if not {"jsonPath", "json_path"} & set(filled):
                filled["jsonPath"] = None  # its "needs a jsonPath" error at the camelCase key
        if filled.get("kind") == MetricKind.TOKENS_PER_REQUEST.value and not (
            {"tokenType", "token_type"} & set(filled)
        ):
            # Given as None, so that its "needs a tokenType" error is reported at the YAML key.
            filled["tokenType"] = None
        if (
            filled.get("kind") in {kind.value for kind in _LATENCY_KINDS}
            and filled.get("judge") is not None
            and filled.get("percentile") is None
            and all(filled.get(key) is None for key in (*_THRESHOLD_KEYS, *_THRESHOLD_NAMES))
        ):
            # Decided here, on the raw keys: the percentile's validator cannot tell a missing
            # judge from an invalid one.
            filled["percentile"] = _JUDGED_ALONE
        if "name" not in filled and isinstance(filled.get("kind"), str):
            suffix = ""
            for key in ("percentile", "tokenType", "token_type"):
                value = filled.get(key)
                if isinstance(value, str):
                    suffix = f"-{value}"
                    break
            filled["name"] = f"{filled['kind']}{suffix}"
        return filled

    @field_validator("name")
    @classmethod
    def _name_not_reserved(cls, name: str) -> str:
        if name == PER_TENANT_CHECK:
            raise ValueError(f'"{PER_TENANT_CHECK}" names the per-tenant verdict; pick another')
        return name

    @field_validator("min_value", "max_value", "min_difference", "max_difference")
    @classmethod
    def _fractions_stay_fractions(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if value is None or not isinstance(kind, MetricKind) or not kind.is_fraction:
            return value
        assert info.field_name is not None
        if info.field_name.endswith("_difference"):
            if not -1 <= value <= 1:
                raise ValueError(
                    f"{kind.value} is a fraction (0.02 = 2%), so canary-stable lies in [-1, 1]: "
                    f"{_number(value)} can never decide the check"
                )
        elif not 0 <= value <= 1:
            raise ValueError(
                f"{kind.value} is a fraction between 0 and 1 (0.02 = 2%): "
                f"{_number(value)} can never decide the check"
            )
        return value

    @field_validator("judge")
    @classmethod
    def _judge_fits_kind(cls, judge: JudgeSpec | None, info: ValidationInfo) -> JudgeSpec | None:
        kind = info.data.get("kind")
        if judge is not None and isinstance(kind, MetricKind) and not kind.is_histogram:
            kinds = ", ".join(sorted(k.value for k in _LATENCY_KINDS))
            raise ValueError(
                f"a judge compares latency histograms ({kinds}); {kind.value} has none"
            )
        return judge

    @field_validator("token_type")
    @classmethod
    def _token_type_fits_kind(
        cls, token_type: TokenType | None, info: ValidationInfo
    ) -> TokenType | None:
        kind = info.data.get("kind")
        if kind is MetricKind.TOKENS_PER_REQUEST and token_type is None:
            types = ", ".join(t.value for t in TokenType)
            raise ValueError(f"kind tokens-per-request needs a tokenType: {types}")
        if (
            token_type is not None
            and isinstance(kind, MetricKind)
            and kind is not MetricKind.TOKENS_PER_REQUEST
        ):
            raise ValueError(f"kind {kind.value} takes no tokenType")
        return token_type

    @field_validator("percentile", mode="wrap")
    @classmethod
    def _percentile_fits_kind(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Percentile | None:
        if value is _JUDGED_ALONE:
            return None
        percentile: Percentile | None = handler(value)
        kind = info.data.get("kind")
        if not isinstance(kind, MetricKind):
            return percentile  # the kind itself is invalid and reported
        if kind.needs_percentile and percentile is None:
            raise ValueError(f"kind {kind.value} needs a percentile: p50, p95 or p99")
        if not kind.needs_percentile and percentile is not None:
            raise ValueError(f"kind {kind.value} takes no percentile")
        return percentile

    @field_validator("query")
    @classmethod
    def _query_fits_kind(cls, query: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind is MetricKind.CUSTOM and query is None:
            raise ValueError("kind custom needs a query")
        if isinstance(kind, MetricKind) and kind is not MetricKind.CUSTOM and query is not None:
            raise ValueError(f"kind {kind.value} takes no query (use kind custom)")
        if query is None:
            return None
        used = template_variables(query)
        unknown = used - TEMPLATE_VARIABLES
        if unknown:
            raise ValueError(
                f"unknown template variable(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(TEMPLATE_VARIABLES))}"
            )
        if not used & {"selector", "variant"}:
            raise ValueError(
                "the query must use {{selector}} or {{variant}}, otherwise the canary and the "
                "stable queries are the same"
            )
        return query

    @field_validator("min_ratio", "max_ratio", "min_difference", "max_difference")
    @classmethod
    def _webhook_has_no_stable(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("kind") is MetricKind.WEBHOOK:
            raise ValueError(
                "a webhook check measures the canary only (there is no stable value to compare "
                "with): relative thresholds cannot be judged; use min and/or max"
            )
        return value

    @field_validator("url", "method", "json_path", "timeout", "auth")
    @classmethod
    def _webhook_fields_fit_kind(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if not isinstance(kind, MetricKind):
            return value  # the kind itself is invalid and reported
        assert info.field_name is not None
        key = to_camel(info.field_name)
        if kind is MetricKind.WEBHOOK:
            if value is None and info.field_name in {"url", "json_path"}:
                example = "http://judge.ml.svc/score" if key == "url" else "$.score"
                raise ValueError(f"kind webhook needs a {key} (e.g. {example})")
        elif value is not None:
            raise ValueError(f"kind {kind.value} takes no {key} (only kind webhook does)")
        return value

    @field_validator("json_path")
    @classmethod
    def _json_path_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_json_path(value)  # JsonPathError is a ValueError: reported at the field
        return value

    @model_validator(mode="after")
    def _thresholds_can_pass(self) -> MetricCheck:
        if not self.thresholds() and self.judge is None:
            judge = " or a judge" if self.kind.is_histogram else ""
            raise ValueError(
                "set at least one threshold: min, max, minRatio, maxRatio, minDifference "
                f"or maxDifference{judge}"
            )
        for low, high, names in (
            (self.min_value, self.max_value, "min > max"),
            (self.min_ratio, self.max_ratio, "minRatio > maxRatio"),
            (self.min_difference, self.max_difference, "minDifference > maxDifference"),
        ):
            if low is not None and high is not None and low > high:
                raise ValueError(f"{names}: no value can pass")
        return self

    @property
    def parsed_json_path(self) -> JsonPath:
        """kind webhook: the parsed jsonPath (ValueError for another kind)."""
        if self.json_path is None:
            raise ValueError(f"metric {self.name} has no jsonPath (kind {self.kind.value})")
        return parse_json_path(self.json_path)

    # The derived values below are read for every check of every rollout on every analysis
    # tick; the model is frozen, so each is worked out once per check (functools.cached_property
    # writes the instance's __dict__, which `frozen` allows; _Schema.model_copy drops them).

    @cached_property
    def _set_thresholds(self) -> tuple[tuple[str, float], ...]:
        named = zip(
            _THRESHOLD_KEYS, (getattr(self, name) for name in _THRESHOLD_NAMES), strict=True
        )
        return tuple((key, value) for key, value in named if value is not None)

    def thresholds(self) -> dict[str, float]:
        """The thresholds that are set, keyed by their YAML name (a new dict each call)."""
        return dict(self._set_thresholds)

    @cached_property
    def has_thresholds(self) -> bool:
        """Whether any threshold is set (`bool(self.thresholds())`)."""
        return bool(self._set_thresholds)

    def relative_thresholds(self) -> dict[str, float]:
        """The thresholds against stable (ratios and differences)."""
        return {k: v for k, v in self._set_thresholds if k not in {"min", "max"}}

    @cached_property
    def needs_stable(self) -> bool:
        """Whether a relative threshold needs the stable variant's value."""
        return bool(self.relative_thresholds())

    @property
    def unit(self) -> str:
        return self.kind.unit

    @cached_property
    def judged_per_tenant(self) -> bool:
        """Whether perTenant judges this check tenant by tenant: every error-rate check, and
        every other built-in check with a relative threshold or a judge."""
        if self.kind in {MetricKind.CUSTOM, MetricKind.WEBHOOK}:
            return False  # a template's result or an answer has no tenant we could rely on
        return self.kind is MetricKind.ERROR_RATE or self.needs_stable or self.judge is not None

    def for_tenant(self) -> MetricCheck:
        """The check as judged for one tenant against the same tenant on stable: error-rate
        whole; any other kind without its absolute thresholds (a tenant with long prompts is
        slower than the average, which says nothing about the canary)."""
        if self.kind is MetricKind.ERROR_RATE:
            return self
        return self._for_tenant

    @cached_property
    def _for_tenant(self) -> MetricCheck:
        return self.model_copy(update={"min_value": None, "max_value": None})

    def threshold_description(self, *, judge: bool = True) -> str:
        """Human text of the pass condition, e.g. "canary <= 0.02, canary/stable <= 1.2"; with
        `judge` False, of the thresholds alone."""
        return self._descriptions[0 if judge else 1]

    @cached_property
    def _descriptions(self) -> tuple[str, str]:
        """threshold_description() with the judge, and without."""
        templates = {
            "min": "canary >= {}",
            "max": "canary <= {}",
            "minRatio": "canary/stable >= {}",
            "maxRatio": "canary/stable <= {}",
            "minDifference": "canary-stable >= {}",
            "maxDifference": "canary-stable <= {}",
        }
        parts = [templates[key].format(_number(value)) for key, value in self._set_thresholds]
        alone = ", ".join(parts)
        if self.judge is not None:
            parts.append(self.judge.description())
        return ", ".join(parts), alone


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.6g}%"


def _number(value: float) -> str:
    return f"{value:.6g}"


# Labels the built-in queries use for themselves: a tenant label of that name would be merged
# with them.
_QUERY_LABELS = frozenset({"le", "error_type", "gen_ai_token_type"})


class PerTenantSpec(_Schema):
    """Judge each large enough tenant on its own, besides the aggregate.

    The gateway labels its metrics by tenant when `controller.metricsRequestHeaderAttributes`
    maps the tenant header to a label. Each tenant with at least `minRequests` canary requests
    in the window is judged against the same tenant on stable: every error-rate check (all its
    thresholds) and the relative thresholds and judge of every other built-in check. The
    verdict fails when more than `maxFailingTenants` tenants fail, and names them.
    """

    label: PromLabelName = Field(description="The metric label that carries the tenant.")
    min_requests: PositiveCount = Field(
        default=20, description="Canary requests a tenant needs in the window to be judged."
    )
    max_failing_tenants: Annotated[StrictInt, Field(ge=0)] = Field(
        default=0, description="Failing tenants tolerated; one more fails the check."
    )

    @field_validator("label")
    @classmethod
    def _label_usable(cls, label: str) -> str:
        if label.startswith("__"):
            raise ValueError(f"reserved Prometheus label name: {label}")
        if label in _QUERY_LABELS:
            raise ValueError(
                f"{label} is a label the built-in queries use themselves; it cannot name tenants"
            )
        return label


class AnalysisSpec(_Shareable):
    """When and how the canary is judged, and how many bad checks are tolerated.

    failureLimit counts failed checks over the whole rollout (a flapping canary must not pass by
    alternating); inconclusiveLimit and errorLimit count consecutive checks, because a quiet
    night or a short metrics outage should only pause the rollout once it lasts.
    """

    interval: Duration = Field(
        default=timedelta(minutes=1),
        json_schema_extra={"default": "1m"},
        description="Time between checks, and at each step before the first check.",
    )
    window: Duration = Field(
        default=timedelta(minutes=5),
        validate_default=True,
        json_schema_extra={"default": "5m"},
        description="PromQL range each check looks back over; at least the interval. Clipped "
        "to the traffic since the current weights were written (plus warmup).",
    )
    warmup: DurationOrZero = Field(
        default=timedelta(0),
        json_schema_extra={"default": "0s"},
        description="After every weight change, traffic this long is not judged (cold caches, "
        "fresh replicas): the next check comes one interval after the warm-up and judges "
        "only traffic after it. Shorter than the window.",
    )
    min_requests: Annotated[StrictInt, Field(ge=0)] = Field(
        default=10,
        description="Canary requests needed in the window for a check to count; fewer is "
        "inconclusive, not failed.",
    )
    failure_limit: PositiveCount = Field(
        default=2, description="Failed checks (total) that trigger onFailure."
    )
    inconclusive_limit: PositiveCount = Field(
        default=5, description="Consecutive inconclusive checks that pause the rollout."
    )
    error_limit: PositiveCount = Field(
        default=3,
        description="Consecutive metrics-provider errors that pause the rollout; below it the "
        "rollout holds its step.",
    )
    # Emptiness is checked in the validator: a length constraint would also complain about a
    # list whose only item is invalid, burying the real error under a second one.
    metrics: tuple[MetricCheck, ...] = Field(json_schema_extra={"minItems": 1})
    per_tenant: PerTenantSpec | None = Field(
        default=None, description="Also judge each tenant on its own (see PerTenantSpec)."
    )

    @field_validator("per_tenant")
    @classmethod
    def _something_to_judge_per_tenant(
        cls, per_tenant: PerTenantSpec | None, info: ValidationInfo
    ) -> PerTenantSpec | None:
        metrics = info.data.get("metrics")
        if per_tenant is not None and metrics and not any(m.judged_per_tenant for m in metrics):
            raise ValueError(
                "perTenant judges error-rate checks and the relative thresholds (minRatio, "
                "maxRatio, minDifference, maxDifference) and judges of built-in checks; this "
                "analysis has none of them"
            )
        return per_tenant

    @field_validator("window")
    @classmethod
    def _window_covers_the_interval(cls, window: timedelta, info: ValidationInfo) -> timedelta:
        interval = info.data.get("interval")
        if isinstance(interval, timedelta) and window < interval:
            raise ValueError(
                f"window {format_duration(window)} is shorter than the interval "
                f"{format_duration(interval)}: the traffic between two checks would never be "
                "judged; make the window at least the interval"
            )
        return window

    @field_validator("warmup")
    @classmethod
    def _warmup_leaves_traffic(cls, warmup: timedelta, info: ValidationInfo) -> timedelta:
        # After a weight write the next check waits out the warm-up, then one interval, and
        # judges only the traffic after the warm-up (clipped to the window). A warm-up as long
        # as the window would leave every step waiting longer than it ever judges.
        window = info.data.get("window")
        if isinstance(window, timedelta) and warmup >= window:
            raise ValueError(
                f"warmup {format_duration(warmup)} is not shorter than the window "
                f"{format_duration(window)}: each step would wait out more traffic than any "
                "check could judge; shorten the warm-up or lengthen the window"
            )
        return warmup

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: tuple[MetricCheck, ...]) -> tuple[MetricCheck, ...]:
        if not metrics:
            raise ValueError("give at least one metric check")
        seen: set[str] = set()
        for check in metrics:
            if check.name in seen:
                raise ValueError(f'metric name "{check.name}" is used twice; set distinct names')
            seen.add(check.name)
        return metrics


# ---------------------------------------------------------------------------------------------
# Rate limits (schema only)


class RateLimitSpec(_Schema):
    """Per-tenant limits, rendered into an Envoy Gateway BackendTrafficPolicy."""

    tenant_header: HttpHeaderName = Field(description="Request header carrying the tenant id.")
    token_budget: PositiveCount | None = Field(
        default=None, description="Tokens (total) per tenant and budgetPeriod."
    )
    requests_per_minute: PositiveCount | None = None
    budget_period: BudgetPeriod = BudgetPeriod.DAILY

    @field_validator("budget_period", mode="before")
    @classmethod
    def _no_week(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() in {"week", "weekly"}:
            raise ValueError("Envoy Gateway v1.8 has no Week unit; use daily or monthly")
        return value

    @model_validator(mode="after")
    def _has_a_limit(self) -> RateLimitSpec:
        if self.token_budget is None and self.requests_per_minute is None:
            raise ValueError("set tokenBudget, requestsPerMinute or both")
        return self


# ---------------------------------------------------------------------------------------------
# The policy


class FailureAction(StrEnum):
    ROLLBACK = "rollback"  # all traffic back to stable at once
    PAUSE = "pause"  # freeze the weights and wait for a human


class DriftAction(StrEnum):
    PAUSE = "pause"  # someone else changed the weights: stop and let a human decide
    REASSERT = "reassert"  # write our weights again (fights a GitOps tool that reverts them)


class StepSpec(_Shareable):
    """One step: the canary's percentage, written as a plain number, or as an object with
    `hold` (stay at least this long even when the checks pass; they keep running and can
    still fail it) and/or `approve` (after its analysis passes, wait for a person:
    `rollout approve ROUTE` or the approve annotation)."""

    weight: StepPercent
    hold: Duration | None = None
    approve: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"step {value!r}: a step is a percentage (0.01..100), not a flag")
        if isinstance(value, float) and value.is_integer():
            return {"weight": int(value)}
        if isinstance(value, int | float):
            return {"weight": value}
        if not isinstance(value, dict | StepSpec):
            raise ValueError(
                f"step {value!r}: a step is a percentage (0.01..100) or {{weight, hold, approve}}"
            )
        return value

    @model_serializer(mode="wrap")
    def _as_number_when_plain(self, handler: Any) -> Any:
        # A plain step is dumped as the number it was written as: the policy fingerprint (and
        # `rollout schema`'s examples) stay what they were before steps had options.
        if self.hold is None and not self.approve:
            return self.weight
        return handler(self)

    @property
    def gated(self) -> bool:
        return self.hold is not None or self.approve


# The 100% step appended to steps that do not end at 100: frozen, so every policy holds this one.
_FULL_STEP = StepSpec(weight=100)


class GradualRollbackSpec(_Schema):
    """Step the canary down instead of snapping it to 0 (stable replicas that scaled in while
    the canary held traffic need time): `steps` are canary percentages, strictly decreasing,
    ending at 0 (appended when missing), each held `interval`. Abort stays immediate."""

    steps: tuple[Annotated[StrictInt, Field(ge=0, le=99)], ...] = Field(
        json_schema_extra={"minItems": 1}
    )
    interval: Duration = Field(default=timedelta(seconds=30), json_schema_extra={"default": "30s"})

    @field_validator("steps")
    @classmethod
    def _steps_descend_to_0(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("give at least one step, e.g. [10, 0]")
        for before, after in itertools.pairwise(steps):
            if after >= before:
                raise ValueError(
                    f"rollback steps must be strictly decreasing ({before} then {after})"
                )
        return steps if steps[-1] == 0 else (*steps, 0)


_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class StickinessSpec(_Schema):
    """Steps become shares of SESSIONS: the adapter adds a rule sending the sessions whose
    `header` ends in the selected hex digits to the canary (the last 4 hex characters of a
    UUID or hash: each step's share of the 65536 endings, rounded down to 1/65536). A session
    on the canary stays there as the share grows; requests without the header follow the
    weighted rule (stable until promotion)."""

    header: Annotated[str, Field(min_length=1, max_length=256)]

    @field_validator("header")
    @classmethod
    def _http_header_name(cls, header: str) -> str:
        if not _HTTP_TOKEN.fullmatch(header):
            raise ValueError(
                f"{header!r} is not a valid HTTP header name (letters, digits and "
                "!#$%&'*+-.^_`|~ only)"
            )
        if header.lower() == "x-ai-eg-model":
            raise ValueError("x-ai-eg-model is the gateway's model header, not a session header")
        return header.lower()


class OptInSpec(_Schema):
    """A first phase before the percentage steps: only these tenants (Exact matches on
    `header`) see the canary, the weighted rule staying at 100% stable; then the steps begin,
    the tenants staying on the canary until the rollout ends."""

    header: Annotated[str, Field(min_length=1, max_length=256)]
    values: tuple[Annotated[str, Field(min_length=1, max_length=4096)], ...] = Field(
        json_schema_extra={"minItems": 1}
    )

    @field_validator("header")
    @classmethod
    def _http_header_name(cls, header: str) -> str:
        return StickinessSpec._http_header_name(header)

    @field_validator("values")
    @classmethod
    def _printable_and_unique(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        if not values:
            raise ValueError("name at least one tenant")
        for value in values:
            if not value.isprintable() or not value.isascii():
                raise ValueError(f"{value!r}: header values must be printable ASCII")
        if len(set(values)) != len(values):
            raise ValueError("tenants must be unique")
        return values


class OnFailureSpec(_Schema):
    rollback: GradualRollbackSpec


class GateWhen(StrEnum):
    """When a gate runs; the rollout waits for its answer before going on."""

    PRE_ROLLOUT = "pre-rollout"  # before any user traffic reaches the canary (evals, goldens)
    BEFORE_STEP = "before-step"  # before each step's weights are written
    BEFORE_PROMOTION = "before-promotion"  # before the canary gets 100%


# Marks a gate written without a timeout (see GateSpec._timeout_given); an object, so that no
# YAML value can be it.
_TIMEOUT_REQUIRED = object()


class GateSpec(_Schema):
    """A webhook the rollout must pass at `when`: the controller POSTs a JSON payload (the
    rollout, route, variants, step and weights) to `url`. 2xx passes; 4xx/5xx fails (like a
    failed check, the answer's message in the Event); a timeout or connection error is a
    provider error (the rollout holds, never rolls back)."""

    name: MetricName = Field(description="Unique among the policy's gates.")
    url: WebhookUrl = Field(description="An http(s) URL; credentials go in auth, not here.")
    when: GateWhen
    timeout: WebhookTimeout = Field(
        description="Required: how long one call may take (e.g. 5m for an eval suite)."
    )
    method: Literal["POST"] = Field(default="POST", description="Gates are POSTed.")
    auth: WebhookAuth | None = Field(
        default=None, description="bearerTokenFrom {env: NAME} or {file: PATH}."
    )

    @model_validator(mode="before")
    @classmethod
    def _timeout_present(cls, data: Any) -> Any:
        if isinstance(data, dict) and "timeout" not in data:
            return {**data, "timeout": _TIMEOUT_REQUIRED}  # reported at the gate's timeout
        return data

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_given(cls, value: object) -> object:
        if value is _TIMEOUT_REQUIRED or value is None:
            raise ValueError(
                "a gate needs a timeout (e.g. 5m): without one an endpoint that never "
                "answers would hold the rollout forever"
            )
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _post_only(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() == "POST":
            return "POST"
        raise ValueError(f"a gate is POSTed (its body is the rollout's payload), not {value!r}")


class RolloutSpec(_Schema):
    route: RouteTarget
    stable: Variant
    canary: Variant
    steps: tuple[StepSpec, ...] = Field(
        json_schema_extra={
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "number", "minimum": 0.01, "maximum": 100},
                    {
                        "type": "object",
                        "properties": {
                            "weight": {"type": "number", "minimum": 0.01, "maximum": 100},
                            "hold": {"type": "string", "description": "e.g. 10m"},
                            "approve": {"type": "boolean"},
                        },
                        "required": ["weight"],
                        "additionalProperties": False,
                    },
                ]
            },
        },
        description="Canary percentages, strictly increasing, each 1..100, as numbers or "
        "{weight, hold, approve}. 100 is appended when missing; reaching 100 is success, so "
        "the last analysed step is the one before.",
    )
    analysis: AnalysisSpec
    # rollback (to 0 at once) | pause | {rollback: {steps: [10, 0], interval: 30s}}
    on_failure: FailureAction | OnFailureSpec = FailureAction.ROLLBACK
    stickiness: StickinessSpec | None = Field(
        default=None, description="Steps are shares of sessions (see StickinessSpec)."
    )
    opt_in: OptInSpec | None = Field(
        default=None, description="A first phase for named tenants only (see OptInSpec)."
    )
    on_drift: DriftAction = DriftAction.PAUSE
    rate_limit: RateLimitSpec | None = None
    # Where transitions are sent (besides the controller-wide defaults); moves no traffic, so
    # it is not part of the fingerprint: editing it is not a policy change for the rollout.
    notifications: tuple[NotificationSpec, ...] = ()
    # Webhooks the rollout must pass before it starts, before each step, before promotion.
    gates: tuple[GateSpec, ...] = ()

    @field_validator("gates")
    @classmethod
    def _unique_gate_names(cls, gates: tuple[GateSpec, ...]) -> tuple[GateSpec, ...]:
        seen: set[str] = set()
        for gate in gates:
            if gate.name in seen:
                raise ValueError(f'gate name "{gate.name}" is used twice; set distinct names')
            seen.add(gate.name)
        return gates

    def gates_at(self, when: GateWhen) -> tuple[GateSpec, ...]:
        """The gates that run at `when`, in policy order."""
        if not self.gates:
            return ()
        return tuple(gate for gate in self.gates if gate.when is when)

    @field_validator("steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: tuple[StepSpec, ...]) -> tuple[StepSpec, ...]:
        if not steps:
            raise ValueError("give at least one step, e.g. [10, 50]")
        for before, after in itertools.pairwise(steps):
            if after.weight <= before.weight:
                raise ValueError(
                    f"steps must be strictly increasing ({before.weight} then {after.weight})"
                )
        if steps[-1].weight != 100:
            steps = (*steps, _FULL_STEP)
        elif steps[-1].gated:
            raise ValueError(
                "the 100% step is never analysed, so it takes no hold or approve: put "
                "approve: true on the step before it to gate the promotion"
            )
        if len(steps) < 2:
            raise ValueError("give at least one step below 100; [100] would skip the analysis")
        return steps

    @field_validator("on_failure", mode="before")
    @classmethod
    def _one_failure_action(cls, value: Any) -> Any:
        # One clear error, not one per member of the union.
        if isinstance(value, str) and value not in {a.value for a in FailureAction}:
            raise ValueError(
                f"Input should be 'rollback' or 'pause' (or {{rollback: {{steps: [10, 0], "
                f"interval: 30s}}}} for a gradual rollback), not {value!r}"
            )
        if isinstance(value, dict):
            return OnFailureSpec.model_validate(value)
        return value

    # Derived once per (frozen) spec: read on every tick of the rollout.
    @cached_property
    def weights(self) -> tuple[float, ...]:
        """The steps' canary percentages, 100 last."""
        return tuple(step.weight for step in self.steps)

    @cached_property
    def weight_total(self) -> int:
        """The total of the two route weights: 100 (percent), or 10,000 (0.01% units) when a
        step is a fraction of a percent."""
        fine = any(not float(w).is_integer() for w in self.weights)
        return WEIGHT_TOTAL_FINE if fine else 100

    @cached_property
    def phases(self) -> tuple[float, ...]:
        """What the rollout steps through: with optIn, a first phase at 0% on the weighted rule
        (the opt-in tenants only), then the steps."""
        return (0, *self.weights) if self.opt_in is not None else self.weights

    def phase_step(self, index: int) -> StepSpec | None:
        """The step options of phase `index` (None: the opt-in phase, which has none)."""
        offset = 1 if self.opt_in is not None else 0
        return None if index < offset else self.steps[index - offset]

    @property
    def gradual_rollback(self) -> GradualRollbackSpec | None:
        return self.on_failure.rollback if isinstance(self.on_failure, OnFailureSpec) else None

    @property
    def failure_action(self) -> FailureAction:
        """What failing checks lead to: a rollback (at once or gradual) or a pause."""
        return (
            FailureAction.ROLLBACK
            if isinstance(self.on_failure, OnFailureSpec)
            else (self.on_failure)
        )

    @model_validator(mode="before")
    @classmethod
    def _pricing_needed(cls, data: Any) -> Any:
        # A cost-per-request check needs both variants' prices. Checked on the raw mapping so
        # that the error is reported at spec.<variant>.pricing (and its line), not at spec.
        if not isinstance(data, dict) or not _declares_cost_check(data.get("analysis")):
            return data
        filled = dict(data)
        for role in ("stable", "canary"):
            variant = filled.get(role)
            if isinstance(variant, Variant):
                variant = variant.model_dump(exclude_none=True)
            if isinstance(variant, dict) and variant.get("pricing") is None:
                filled[role] = {**variant, "pricing": _PRICING_REQUIRED}
        return filled

    @field_validator("analysis")
    @classmethod
    def _tenant_label_is_not_a_selector(
        cls, analysis: AnalysisSpec, info: ValidationInfo
    ) -> AnalysisSpec:
        if analysis.per_tenant is None:
            return analysis
        label = analysis.per_tenant.label
        for role in ("stable", "canary"):
            variant = info.data.get(role)
            if isinstance(variant, Variant) and label in variant.selector:
                raise ValueError(
                    f"perTenant.label {label} also selects the {role} variant; the tenant label "
                    "must be another label than the variants' selectors"
                )
        return analysis

    @model_validator(mode="after")
    def _variants_differ(self) -> RolloutSpec:
        if self.stable.backend == self.canary.backend:
            raise ValueError("stable and canary must use different backends")
        if self.stable.selector == self.canary.selector:
            raise ValueError(
                "stable and canary select the same metrics; give them different "
                "modelNameOverride or metricSelector values"
            )
        return self


def _declares_cost_check(analysis: object) -> bool:
    if isinstance(analysis, dict):
        metrics = analysis.get("metrics")
    else:
        metrics = getattr(analysis, "metrics", None)
    if not isinstance(metrics, list | tuple):
        return False
    return any(
        (check.get("kind") if isinstance(check, dict) else getattr(check, "kind", None))
        == MetricKind.COST_PER_REQUEST.value
        for check in metrics
    )


class PolicyMetadata(_Schema):
    name: KubeName


class RolloutPolicy(_Schema):
    """A canary rollout of one AIGatewayRoute rule from a stable to a canary backend."""

    api_version: Literal["rollout.model-registry.io/v1alpha1"]
    kind: Literal["RolloutPolicy"]
    metadata: PolicyMetadata
    spec: RolloutSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def fingerprint(self) -> str:
        """A short hash of the spec, stored in the rollout state to notice policy edits.

        Fields added after v1alpha1's first release are left out while they hold their
        default, so that upgrading the controller is not taken for an edit of every policy.
        """
        spec = self.spec.model_dump(mode="json", exclude={"notifications"})
        _drop_later_defaults(spec)
        canonical = json.dumps(spec, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# Fields added later, with the default that leaves the fingerprint as it was before them.
_LATER_SPEC_DEFAULTS: dict[str, object] = {"stickiness": None, "optIn": None}
_LATER_VARIANT_DEFAULTS: dict[str, object] = {"pricing": None}
_LATER_ANALYSIS_DEFAULTS: dict[str, object] = {"warmup": "0s", "perTenant": None}
_LATER_METRIC_DEFAULTS: dict[str, object] = {
    "judge": None,
    "tokenType": None,
    "url": None,
    "method": None,
    "jsonPath": None,
    "timeout": None,
    "auth": None,
}
_LATER_SPEC_DEFAULTS["gates"] = []


def _drop_later_defaults(spec: dict[str, Any]) -> None:
    def drop(mapping: dict[str, Any], defaults: Mapping[str, object]) -> None:
        for key, default in defaults.items():
            if key in mapping and mapping[key] == default:
                del mapping[key]

    drop(spec, _LATER_SPEC_DEFAULTS)
    drop(spec["stable"], _LATER_VARIANT_DEFAULTS)
    drop(spec["canary"], _LATER_VARIANT_DEFAULTS)
    drop(spec["analysis"], _LATER_ANALYSIS_DEFAULTS)
    for metric in spec["analysis"]["metrics"]:
        drop(metric, _LATER_METRIC_DEFAULTS)


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of a RolloutPolicy document (camelCase keys), for `rollout schema`."""
    schema = RolloutPolicy.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = KIND
    return schema
