"""PromQL for the canary analysis: built-in GenAI checks batched across rollouts, custom templates.

Contract: pure. Turns `AnalysisRequest`s into a `QueryPlan` (PromQL strings) and decoded answers
back into `Measurement`s; no client, no clock, no logging.

Batching
--------
Every (rollout, variant) that needs the same built-in signal (e.g. ttft p95) over the same
window, with a selector using the same label NAMES, shares ONE query. Their label values become
set matchers (`gen_ai_request_model=~"m-v1|m-v2|..."`) and the aggregation keeps those labels
(`sum by (gen_ai_request_model) (...)`), so the answer holds one series per variant, which
`split_series` hands back to each (rollout, variant) by its label values. Queries per tick:

    #distinct (signal, window, selector label names, tenant label)
                                         -- built-in checks, plus the request counts
  + 2 x #custom checks summed over all rollouts

With one window and the usual selectors (gen_ai_request_model only) that is
`#distinct built-in signals + 1 + 2 x #custom checks`, whatever the number of rollouts.

Signals and the checks that read them:

- requests: canary requests, for minRequests (and, by tenant, perTenant.minRequests);
- error-rate, ttft/time-per-output-token/request-duration at a percentile,
  output-tokens-per-second: one value per variant, the check's own;
- tokens: `gen_ai_client_token_usage_sum` by gen_ai_token_type (one series per type), and
  successful-requests: the requests that token usage is recorded for. cost-per-request,
  tokens-per-request (any token type) and cache-hit-ratio all read these two, so all of them
  together cost two queries per tick; the arithmetic (prices, ratios) happens here, after the
  answer, because each variant has its own prices;
- <latency>-buckets: `increase(..._bucket[window])` by le, the histograms a judge compares.

A rollout's window is `AnalysisRequest.window`: the policy's, or shorter right after a weight
change (the effective window, whole seconds). Rollouts whose weights changed in the same
second share their queries; another window is another group.

Per tenant
----------
With `analysis.perTenant`, the tenant label joins the `by (...)` of the same queries, in a group
of their own (`sum by (gen_ai_request_model, tenant) (...)`): one more query per signal judged
per tenant, for all rollouts together, whatever the number of tenants. The aggregate stays in
its own group: quantiles and ratios cannot be added up from per-tenant values. Tenant values
come back from Prometheus and never enter a query.

Custom queries are user templates: we cannot know where the selector sits in them nor whether
their result keeps the variant's labels, so each runs once per variant (canary and stable), and
is never judged per tenant.

With selectors of several labels, set matchers per label also match cross combinations
(model of rollout A with provider of rollout B); `by (...)` keeps those apart and the split
ignores them, so they cost Prometheus some work but never leak into a measurement.

Escaping
--------
Label values come from policies (and model registries), so they are data, never PromQL: each
is regex-quoted (Go's regexp.QuoteMeta set) and then written as a PromQL string literal. A value
such as `"} or vector(1) #` stays inside its string literal.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple

from rollout.analysis.judge import Bucket
from rollout.analysis.provider import AnalysisRequest, Measurements
from rollout.analysis.verdicts import Measurement, TenantMeasurement
from rollout.policy.schema import (
    MetricCheck,
    MetricKind,
    Percentile,
    Pricing,
    TokenType,
    format_duration,
    render_label_matchers,
    render_query_template,
)

# The AI Gateway's metric names (v0.5 .. v1.1) and the labels the built-in checks filter on.
REQUEST_DURATION = "gen_ai_server_request_duration_seconds"
TIME_TO_FIRST_TOKEN = "gen_ai_server_time_to_first_token_seconds"
TIME_PER_OUTPUT_TOKEN = "gen_ai_server_time_per_output_token_seconds"
TOKEN_USAGE = "gen_ai_client_token_usage"
ERROR_TYPE_LABEL = "error_type"  # set (to "_OTHER") on failed attempts only
TOKEN_TYPE_LABEL = "gen_ai_token_type"
BUCKET_LABEL = "le"

# Rendered custom queries are quoted in error messages; a long one would drown the message.
_QUOTED_QUERY_LIMIT = 300


class Role(StrEnum):
    STABLE = "stable"
    CANARY = "canary"


_ROLES = tuple(Role)  # iterating the enum itself is Python code per member


@dataclass(frozen=True, order=True)
class VariantRef:
    """One variant of one rollout."""

    rollout: str
    role: Role


class SignalKind(StrEnum):
    """What a built-in query computes per variant (see the module doc)."""

    REQUESTS = "requests"
    ERROR_RATE = MetricKind.ERROR_RATE.value
    TTFT = MetricKind.TTFT.value
    TIME_PER_OUTPUT_TOKEN = MetricKind.TIME_PER_OUTPUT_TOKEN.value
    REQUEST_DURATION = MetricKind.REQUEST_DURATION.value
    OUTPUT_TOKENS_PER_SECOND = MetricKind.OUTPUT_TOKENS_PER_SECOND.value
    SUCCESSES = "successful-requests"
    TOKENS = "tokens"
    TTFT_BUCKETS = "ttft-buckets"
    TIME_PER_OUTPUT_TOKEN_BUCKETS = "time-per-output-token-buckets"
    REQUEST_DURATION_BUCKETS = "request-duration-buckets"


_BUCKET_SIGNALS = {
    MetricKind.TTFT: SignalKind.TTFT_BUCKETS,
    MetricKind.TIME_PER_OUTPUT_TOKEN: SignalKind.TIME_PER_OUTPUT_TOKEN_BUCKETS,
    MetricKind.REQUEST_DURATION: SignalKind.REQUEST_DURATION_BUCKETS,
}


@dataclass(frozen=True)
class Signal:
    kind: SignalKind
    percentile: Percentile | None = None

    @property
    def name(self) -> str:
        """e.g. "error-rate", "ttft-p95"."""
        if self.percentile is None:
            return self.kind.value
        return f"{self.kind.value}-{self.percentile.value}"

    @property
    def series_label(self) -> str | None:
        """The label that splits one variant's answer into several series: le for buckets,
        the token type for tokens; None: one series per variant."""
        if self.kind in _BUCKET_SIGNALS.values():
            return BUCKET_LABEL
        if self.kind is SignalKind.TOKENS:
            return TOKEN_TYPE_LABEL
        return None


REQUESTS = Signal(SignalKind.REQUESTS)
SUCCESSES = Signal(SignalKind.SUCCESSES)
TOKENS = Signal(SignalKind.TOKENS)


@functools.cache
def _signal(kind: SignalKind, percentile: Percentile | None = None) -> Signal:
    """One Signal object per kind and percentile: planning looks each up in a dict for every
    variant of every check, and equal keys holding the same Signal compare by identity (the
    dataclass's __eq__ and __hash__ are Python code). The distinct signals are a handful."""
    return Signal(kind, percentile)


def value_signals(check: MetricCheck) -> tuple[Signal, ...]:
    """The built-in signals a check's value is computed from (none for custom queries, for
    a judge without a percentile, and for webhook checks: the controller fetches their value,
    Prometheus only counts their canary requests, in the query every rollout has anyway)."""
    return _VALUE_SIGNALS[check.kind, check.percentile]


def _value_signals(kind: MetricKind, percentile: Percentile | None) -> tuple[Signal, ...]:
    match kind:
        case MetricKind.CUSTOM | MetricKind.WEBHOOK:
            return ()
        case MetricKind.COST_PER_REQUEST | MetricKind.TOKENS_PER_REQUEST:
            return (TOKENS, SUCCESSES)
        case MetricKind.CACHE_HIT_RATIO:
            return (TOKENS,)
        case MetricKind.TTFT | MetricKind.TIME_PER_OUTPUT_TOKEN | MetricKind.REQUEST_DURATION:
            if percentile is None:
                return ()
            return (_signal(SignalKind(kind.value), percentile),)
        case MetricKind.ERROR_RATE | MetricKind.OUTPUT_TOKENS_PER_SECOND:
            return (_signal(SignalKind(kind.value)),)


# value_signals for every kind and percentile: asked for every check of every rollout, twice a
# tick (planning, then reading the answers), where the match above would build its tuple again.
_VALUE_SIGNALS: dict[tuple[MetricKind, Percentile | None], tuple[Signal, ...]] = {
    (kind, percentile): _value_signals(kind, percentile)
    for kind in MetricKind
    for percentile in (None, *Percentile)
}


def judge_signal(check: MetricCheck) -> Signal | None:
    """The histogram a check's judge compares, if it has one."""
    if check.judge is None:
        return None
    return _signal(_BUCKET_SIGNALS[check.kind])


def tenant_signals(check: MetricCheck) -> tuple[Signal, ...]:
    """The signals measured per tenant for a check (see MetricCheck.for_tenant)."""
    if not check.judged_per_tenant:
        return ()
    values = value_signals(check) if check.for_tenant().thresholds() else ()
    judge = judge_signal(check)
    return (*values, judge) if judge is not None else values


# ---------------------------------------------------------------------------------------------
# Escaping and small renderers

_REGEX_ESCAPES = str.maketrans({char: f"\\{char}" for char in "\\.+*?()|[]{}^$"})


def regex_literal(value: str) -> str:
    """An RE2 regex matching exactly `value`: Go's regexp.QuoteMeta.

    Only metacharacters are escaped: Prometheus's set-matcher fast path gives up on a regex
    with any other escaped character, and every other character is literal in RE2 anyway.
    """
    return value.translate(_REGEX_ESCAPES)


def promql_string(value: str) -> str:
    """`value` as a double-quoted PromQL string literal (Go escapes; a raw newline is illegal)."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def promql_duration(window: timedelta) -> str:
    """A range for `[...]`, largest units first: 5m, 30s, 1h30m."""
    if window <= timedelta(0):
        raise ValueError(f"a query window must be positive, got {window}")
    return format_duration(window)


def set_matcher(label: str, values: Iterable[str]) -> str:
    """A matcher selecting any of `values` exactly: `=` for one value, `=~` for several."""
    distinct = sorted(set(values))
    if not distinct:
        raise ValueError(f"no values to match for label {label}")
    if len(distinct) == 1:
        return f"{label}={promql_string(distinct[0])}"
    # Prometheus anchors regexes itself (^(?:...)$), and a bare alternation of literals is the
    # shape its set matcher recognises, so no anchors of our own.
    return f"{label}=~{promql_string('|'.join(regex_literal(value) for value in distinct))}"


# ---------------------------------------------------------------------------------------------
# Built-in PromQL


def signal_promql(signal: Signal, matchers: str, by: Sequence[str], window: timedelta) -> str:
    """The PromQL for one built-in signal over the series `matchers` selects, kept apart by `by`.

    `matchers` is a matcher list without braces; `by` the selector's label names (and the
    tenant label, per tenant). Buckets add `le` to it, tokens `gen_ai_token_type`.
    """
    labels = ", ".join(by)
    duration = promql_duration(window)

    def series(metric: str, *extra: str) -> str:
        return f"{metric}{{{', '.join((matchers, *extra))}}}[{duration}]"

    def summed(function: str, metric: str, *extra: str, keep: str | None = None) -> str:
        kept = f"{labels}, {keep}" if keep else labels
        return f"sum by ({kept}) ({function}({series(metric, *extra)}))"

    requests = summed("increase", f"{REQUEST_DURATION}_count")
    successes = f'{ERROR_TYPE_LABEL}=""'  # "" also matches series without the label
    match signal.kind:
        case SignalKind.REQUESTS:
            return requests
        case SignalKind.ERROR_RATE:
            errors = summed("increase", f"{REQUEST_DURATION}_count", f'{ERROR_TYPE_LABEL}!=""')
            # A variant without a single failure has no error series at all: `or 0 * requests`
            # turns that into 0 errors instead of "no data" (and 0/0 = NaN without traffic).
            return f"({errors} or (0 * {requests})) / {requests}"
        case SignalKind.TTFT:
            return _quantile(signal, labels, series(f"{TIME_TO_FIRST_TOKEN}_bucket"))
        case SignalKind.TIME_PER_OUTPUT_TOKEN:
            return _quantile(signal, labels, series(f"{TIME_PER_OUTPUT_TOKEN}_bucket"))
        case SignalKind.REQUEST_DURATION:
            # Failed attempts are often fast (or hit a timeout): they distort latency and are
            # already counted by the error rate.
            return _quantile(signal, labels, series(f"{REQUEST_DURATION}_bucket", successes))
        case SignalKind.OUTPUT_TOKENS_PER_SECOND:
            # Output tokens over the time spent on successful requests: a per-request speed, so
            # it does not move with the traffic weight.
            tokens = summed("rate", f"{TOKEN_USAGE}_sum", f'{TOKEN_TYPE_LABEL}="output"')
            seconds = summed("rate", f"{REQUEST_DURATION}_sum", successes)
            return f"{tokens} / {seconds}"
        case SignalKind.SUCCESSES:
            # Token usage is recorded for answered requests: the denominator of tokens and cost
            # per request, so that failures (no tokens) do not make a canary look cheap.
            return summed("increase", f"{REQUEST_DURATION}_count", successes)
        case SignalKind.TOKENS:
            types = set_matcher(TOKEN_TYPE_LABEL, [t.value for t in TokenType])
            return summed("increase", f"{TOKEN_USAGE}_sum", types, keep=TOKEN_TYPE_LABEL)
        case SignalKind.TTFT_BUCKETS:
            return summed("increase", f"{TIME_TO_FIRST_TOKEN}_bucket", keep=BUCKET_LABEL)
        case SignalKind.TIME_PER_OUTPUT_TOKEN_BUCKETS:
            return summed("increase", f"{TIME_PER_OUTPUT_TOKEN}_bucket", keep=BUCKET_LABEL)
        case SignalKind.REQUEST_DURATION_BUCKETS:
            return summed("increase", f"{REQUEST_DURATION}_bucket", successes, keep=BUCKET_LABEL)


def _quantile(signal: Signal, labels: str, buckets: str) -> str:
    if signal.percentile is None:
        raise ValueError(f"{signal.kind.value} needs a percentile")
    return (
        f"histogram_quantile({signal.percentile.quantile}, sum by ({labels}, le) (rate({buckets})))"
    )


# ---------------------------------------------------------------------------------------------
# Custom PromQL


def render_custom_query(check: MetricCheck, request: AnalysisRequest, role: Role) -> str:
    """A custom check's template for one variant. Substitution is a single pass, so a label
    value that looks like `{{window}}` stays text."""
    if check.query is None:
        raise ValueError(f"metric {check.name} is not a custom query")
    selector = request.canary if role is Role.CANARY else request.stable
    return render_query_template(
        check.query,
        {
            "selector": render_label_matchers(selector),
            "variant": role.value,
            "window": promql_duration(request.window),
            "route": request.route,
            "namespace": request.namespace,
        },
    )


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Member:
    """A variant in a batched query, with its selector's values in the query's label order."""

    ref: VariantRef
    values: tuple[str, ...]


@dataclass(frozen=True)
class BatchedQuery:
    """One built-in signal for every variant sharing its window and selector label names
    (and, per tenant, `split` = the tenant label)."""

    signal: Signal
    window: timedelta
    label_names: tuple[str, ...]
    members: tuple[Member, ...]
    promql: str
    split: tuple[str, ...] = ()

    @property
    def purpose(self) -> str:
        return self.signal.name + (f" by {', '.join(self.split)}" if self.split else "")


@dataclass(frozen=True)
class CustomQuery:
    """A custom check's query for one variant."""

    ref: VariantRef
    metric: str
    promql: str

    @property
    def purpose(self) -> str:
        return f"custom:{self.metric}"


Query = BatchedQuery | CustomQuery


class Source(NamedTuple):
    """One input of a check: a signal, for one variant, in aggregate or per tenant."""

    signal: Signal
    role: Role
    per_tenant: bool = False


@functools.cache
def _source(signal: Signal, role: Role, per_tenant: bool) -> Source:
    """One Source object per signal, role and aggregation (as for _signal): fewer objects for
    the garbage collector to track and scan at thousands of checks a plan."""
    return Source(signal, role, per_tenant)


@dataclass(frozen=True)
class PlannedCheck:
    """Where one check of one rollout finds its numbers: indices into `QueryPlan.queries`."""

    rollout: str
    metric: str
    check: MetricCheck
    sources: Mapping[Source, int]
    requests: int
    # With minRequests 0 the count is informative only, so its failure is no reason to fail
    # the whole measurement.
    requests_required: bool
    custom: tuple[int, int] | None = None  # (canary, stable) of a custom check
    tenant_requests: int | None = None  # canary requests by tenant, when judged per tenant
    pricing: Mapping[Role, Pricing | None] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryPlan:
    queries: tuple[Query, ...]
    checks: tuple[PlannedCheck, ...]


class _GroupKey(NamedTuple):  # a tuple's hash: computed for every variant of every check
    signal: Signal
    window: timedelta
    label_names: tuple[str, ...]
    split: tuple[str, ...]


class _Variant(NamedTuple):
    """One variant of a request as its queries group it: window, label names and values."""

    ref: VariantRef
    window: timedelta
    label_names: tuple[str, ...]
    values: tuple[str, ...]

    @classmethod
    def of(cls, request: AnalysisRequest, role: Role, window: timedelta) -> _Variant:
        selector = request.canary if role is Role.CANARY else request.stable
        names = tuple(sorted(selector))
        return cls(VariantRef(request.key, role), window, names, tuple(selector[n] for n in names))


def plan_queries(requests: Sequence[AnalysisRequest]) -> QueryPlan:
    """The fewest queries that answer every check of every request (see the module doc)."""
    counts = Counter(request.key for request in requests)
    duplicates = sorted(key for key, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"rollout keys must be unique, repeated: {', '.join(duplicates)}")

    groups: dict[_GroupKey, dict[VariantRef, tuple[str, ...]]] = {}
    customs: list[CustomQuery] = []
    # Checks whose query indices are known only once every group is complete.
    pending: list[
        tuple[
            AnalysisRequest,
            MetricCheck,
            dict[Source, _GroupKey],
            tuple[int, int] | None,
            Mapping[Role, Pricing | None],
        ]
    ] = []

    def join(signal: Signal, variant: _Variant, split: tuple[str, ...]) -> _GroupKey:
        key = _GroupKey(signal, variant.window, variant.label_names, split)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {}
        group[variant.ref] = variant.values
        return key

    def custom(check: MetricCheck, request: AnalysisRequest, role: Role) -> int:
        promql = render_custom_query(check, request, role)
        customs.append(CustomQuery(VariantRef(request.key, role), check.name, promql))
        return len(customs) - 1

    requests_groups: dict[str, _GroupKey] = {}
    tenant_requests_groups: dict[str, _GroupKey] = {}
    for request in requests:
        # What every query of this request's variants shares, worked out once per request
        # (a tick plans thousands of requests with several signals each).
        window = request.window
        variants = {role: _Variant.of(request, role, window) for role in _ROLES}
        canary = variants[Role.CANARY]
        tenants = request.analysis.per_tenant
        per_tenant = tenants is not None
        split = (tenants.label,) if tenants is not None else ()
        # Read-only, shared by the request's checks.
        pricing = {Role.STABLE: request.stable_pricing, Role.CANARY: request.canary_pricing}
        requests_groups[request.key] = join(REQUESTS, canary, ())
        if per_tenant and any(check.judged_per_tenant for check in request.analysis.metrics):
            tenant_requests_groups[request.key] = join(REQUESTS, canary, split)
        for check in request.analysis.metrics:
            sources: dict[Source, _GroupKey] = {}
            customs_of_check: tuple[int, int] | None = None
            if check.kind is MetricKind.CUSTOM:
                customs_of_check = (
                    custom(check, request, Role.CANARY),
                    custom(check, request, Role.STABLE),
                )
            judge = judge_signal(check)
            aggregate = (*value_signals(check), *((judge,) if judge is not None else ()))
            for signal in aggregate:
                for role, variant in variants.items():
                    sources[_source(signal, role, False)] = join(signal, variant, ())
            if per_tenant:
                for signal in tenant_signals(check):
                    for role, variant in variants.items():
                        sources[_source(signal, role, True)] = join(signal, variant, split)
            pending.append((request, check, sources, customs_of_check, pricing))

    ordered = sorted(
        groups, key=lambda key: (key.signal.name, key.window, key.label_names, key.split)
    )
    batched = tuple(_batched_query(key, groups[key]) for key in ordered)
    group_index = {key: index for index, key in enumerate(ordered)}

    checks = tuple(
        PlannedCheck(
            rollout=request.key,
            metric=check.name,
            check=check,
            sources={source: group_index[key] for source, key in sources.items()},
            requests=group_index[requests_groups[request.key]],
            requests_required=request.analysis.min_requests > 0,
            custom=None
            if custom_indices is None
            else (len(batched) + custom_indices[0], len(batched) + custom_indices[1]),
            # (judged_per_tenant is computed: asked only of requests measured per tenant)
            tenant_requests=group_index[tenant_requests_groups[request.key]]
            if request.key in tenant_requests_groups and check.judged_per_tenant
            else None,
            pricing=pricing,
        )
        for request, check, sources, custom_indices, pricing in pending
    )
    return QueryPlan(queries=(*batched, *customs), checks=checks)


def _batched_query(key: _GroupKey, variants: Mapping[VariantRef, tuple[str, ...]]) -> BatchedQuery:
    # VariantRef's order, on plain tuples (the refs are distinct: they alone decide the order).
    ordered = sorted(variants.items(), key=lambda item: (item[0].rollout, item[0].role))
    members = tuple(Member(ref, values) for ref, values in ordered)
    matchers = ", ".join(
        set_matcher(name, (member.values[position] for member in members))
        for position, name in enumerate(key.label_names)
    )
    return BatchedQuery(
        signal=key.signal,
        window=key.window,
        label_names=key.label_names,
        members=members,
        promql=signal_promql(key.signal, matchers, (*key.label_names, *key.split), key.window),
        split=key.split,
    )


# ---------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Vector:
    samples: tuple[Sample, ...] = ()


@dataclass(frozen=True)
class Scalar:
    value: float


@dataclass(frozen=True)
class QueryFailure:
    """The query got no usable answer; `message` says what failed (Prometheus's text included)."""

    message: str


QueryResult = Vector | Scalar | QueryFailure

# A variant's series in one answer, by the values of the query's split and series labels
# (tenant, le, token type), in that order; () for a plain one-series-per-variant signal.
Series = Mapping[tuple[str, ...], float]


def split_series(
    query: BatchedQuery, vector: Vector
) -> dict[VariantRef, dict[tuple[str, ...], float]]:
    """Each member's series from a batched answer; members without a series are left out."""
    series_label = query.signal.series_label
    keys = (*query.split, *((series_label,) if series_label is not None else ()))
    by_values: dict[tuple[str, ...], dict[tuple[str, ...], float]] = {}
    for sample in vector.samples:
        # Prometheus drops a label whose value is empty, and an empty selector value matches it.
        values = tuple(sample.labels.get(name, "") for name in query.label_names)
        key = tuple(sample.labels.get(name, "") for name in keys)
        by_values.setdefault(values, {})[key] = sample.value
    return {
        member.ref: by_values[member.values]
        for member in query.members
        if member.values in by_values
    }


def split_vector(query: BatchedQuery, vector: Vector) -> dict[VariantRef, float]:
    """Each member's value from a batched answer of one series per variant."""
    return {ref: series[()] for ref, series in split_series(query, vector).items() if () in series}


@dataclass(frozen=True)
class _Answers:
    """One query's answer, per variant."""

    series: Mapping[VariantRef, Series] = field(default_factory=dict)
    error: str | None = None


def _answers(query: Query, result: QueryResult) -> _Answers:
    if isinstance(query, BatchedQuery):
        what = f"{query.purpose} query"
        if isinstance(result, QueryFailure):
            return _Answers(error=f"{what} failed: {result.message}")
        if isinstance(result, Scalar):
            return _Answers(error=f"{what} returned a scalar, expected a vector")
        return _Answers(split_series(query, result))

    what = f"{query.ref.role.value} query `{_shorten(query.promql)}`"
    match result:
        case QueryFailure(message=message):
            return _Answers(error=f"{what} failed: {message}")
        case Scalar(value=value):
            return _Answers({query.ref: {(): value}})
        case Vector(samples=()):
            return _Answers()
        case Vector(samples=(sample,)):
            return _Answers({query.ref: {(): sample.value}})
        case Vector(samples=samples):
            return _Answers(
                error=f"{what} returned {len(samples)} series; a custom query must return one "
                "value (aggregate it, e.g. with sum(...))"
            )


def _shorten(text: str) -> str:
    if len(text) <= _QUOTED_QUERY_LIMIT:
        return text
    return text[: _QUOTED_QUERY_LIMIT - 3] + "..."


def assemble_measurements(plan: QueryPlan, results: Sequence[QueryResult]) -> Measurements:
    """Measurements for every planned check, from the results of `plan.queries` (same order).

    No series is a None value (inconclusive later); a failed query is an error on every check
    that needed it. The two are never mixed up.
    """
    if len(results) != len(plan.queries):
        raise ValueError(f"{len(plan.queries)} queries planned, {len(results)} results given")
    answers = [_answers(query, result) for query, result in zip(plan.queries, results, strict=True)]
    measurements: Measurements = {}
    for check in plan.checks:
        measurements.setdefault(check.rollout, {})[check.metric] = _measure(check, answers)
    return measurements


class _Reader:
    """The series one planned check reads, collecting the errors of the queries it needed."""

    def __init__(self, check: PlannedCheck, answers: Sequence[_Answers]) -> None:
        self._check = check
        self._answers = answers
        self.errors: list[str] = []
        self.tenant_errors: list[str] = []
        self._refs = {role: VariantRef(check.rollout, role) for role in _ROLES}

    def series(self, index: int, role: Role, per_tenant: bool = False) -> Series:
        answer = self._answers[index]
        if answer.error is not None:
            (self.tenant_errors if per_tenant else self.errors).append(answer.error)
            return {}
        return answer.series.get(self._refs[role], {})

    def ref(self, role: Role) -> VariantRef:
        return self._refs[role]

    def source(self, signal: Signal, role: Role, per_tenant: bool = False) -> Series:
        return self.series(self._check.sources[Source(signal, role, per_tenant)], role, per_tenant)

    def reading(self, role: Role) -> Callable[[Signal], Series]:
        """The aggregate series of one variant, by signal."""
        return lambda signal: self.source(signal, role)


def _measure(check: PlannedCheck, answers: Sequence[_Answers]) -> Measurement:
    reader = _Reader(check, answers)
    values: dict[Role, float | None] = {}
    buckets: dict[Role, tuple[Bucket, ...] | None] = {}
    judge = judge_signal(check.check)
    for role in _ROLES:
        if check.custom is not None:
            index = check.custom[0] if role is Role.CANARY else check.custom[1]
            values[role] = reader.series(index, role).get(())
        else:
            values[role] = _value(check.check, check.pricing.get(role), reader.reading(role))
        buckets[role] = _buckets(reader.source(judge, role)) if judge is not None else None
    counted = answers[check.requests]
    count = None
    if counted.error is None:
        count = counted.series.get(reader.ref(Role.CANARY), {}).get(())
    elif check.requests_required:
        reader.errors.append(counted.error)
    tenants, tenants_error = _tenants(check, answers)
    # A batched query carries both variants: its failure would otherwise be told twice.
    distinct = list(dict.fromkeys(reader.errors))
    return Measurement(
        metric=check.metric,
        canary=values[Role.CANARY],
        stable=values[Role.STABLE],
        canary_requests=count,
        error="; ".join(distinct) or None,
        canary_buckets=buckets[Role.CANARY],
        stable_buckets=buckets[Role.STABLE],
        tenants=tenants,
        tenants_error=tenants_error,
    )


def _tenants(
    check: PlannedCheck, answers: Sequence[_Answers]
) -> tuple[tuple[TenantMeasurement, ...] | None, str | None]:
    """Every tenant in the canary's traffic, with its share of the check (see the module doc)."""
    if check.tenant_requests is None:
        return None, None
    reader = _Reader(check, answers)
    by_tenant = {
        (source.signal, source.role): _by_tenant(reader.source(source.signal, source.role, True))
        for source in check.sources
        if source.per_tenant
    }
    counts = _by_tenant(reader.series(check.tenant_requests, Role.CANARY, per_tenant=True))
    judge = judge_signal(check.check)
    values = set(tenant_signals(check.check)) - {judge}

    def getter(tenant: str, role: Role) -> Callable[[Signal], Series]:
        return lambda signal: by_tenant.get((signal, role), {}).get(tenant, {})

    tenants = []
    for tenant in sorted(counts):
        measured: dict[Role, float | None] = {}
        histograms: dict[Role, tuple[Bucket, ...] | None] = {}
        for role in _ROLES:
            get = getter(tenant, role)
            measured[role] = _value(check.check, check.pricing.get(role), get) if values else None
            histograms[role] = _buckets(get(judge)) if judge is not None else None
        tenants.append(
            TenantMeasurement(
                tenant=tenant,
                canary=measured[Role.CANARY],
                stable=measured[Role.STABLE],
                canary_requests=counts[tenant].get(()),
                canary_buckets=histograms[Role.CANARY],
                stable_buckets=histograms[Role.STABLE],
            )
        )
    errors = list(dict.fromkeys(reader.tenant_errors))
    return tuple(tenants), "; ".join(errors) or None


def _by_tenant(series: Series) -> dict[str, dict[tuple[str, ...], float]]:
    """Series keyed (tenant, *rest) as {tenant: {rest: value}}."""
    grouped: dict[str, dict[tuple[str, ...], float]] = {}
    for key, value in series.items():
        grouped.setdefault(key[0], {})[key[1:]] = value
    return grouped


def _value(
    check: MetricCheck, pricing: Pricing | None, read: Callable[[Signal], Series]
) -> float | None:
    """A check's value for one variant (or one tenant of it) from the series of its signals.

    Token checks: a variant without any token series has no data (None); one without a given
    token type has none of those tokens (0): the gateway reports the types a provider returns.
    """
    signals = value_signals(check)
    if not signals:
        return None
    if check.kind not in {
        MetricKind.COST_PER_REQUEST,
        MetricKind.TOKENS_PER_REQUEST,
        MetricKind.CACHE_HIT_RATIO,
    }:
        return read(signals[0]).get(())
    tokens = {key[0]: value for key, value in read(TOKENS).items() if key}
    if not tokens:
        return None

    def count(token_type: TokenType) -> float:
        return tokens.get(token_type.value, 0.0)

    if check.kind is MetricKind.CACHE_HIT_RATIO:
        if TokenType.INPUT.value not in tokens:
            return None
        return _per(count(TokenType.CACHED_INPUT), count(TokenType.INPUT))
    successes = read(SUCCESSES).get(())
    if successes is None:
        return None
    if check.kind is MetricKind.TOKENS_PER_REQUEST:
        assert check.token_type is not None  # the schema requires it
        return _per(count(check.token_type), successes)
    if pricing is None:
        raise ValueError(f"{check.name} needs both variants' pricing (AnalysisRequest)")
    cost = pricing.request_cost(
        input=count(TokenType.INPUT),
        cached_input=count(TokenType.CACHED_INPUT),
        cache_creation_input=count(TokenType.CACHE_CREATION_INPUT),
        output=count(TokenType.OUTPUT),  # reasoning is part of it
    )
    return _per(cost, successes)


def _per(amount: float, requests: float) -> float:
    """amount / requests; NaN without requests (no observations, as the PromQL gives)."""
    return amount / requests if requests > 0 else math.nan


def _buckets(series: Series) -> tuple[Bucket, ...] | None:
    """`le` -> cumulative count pairs; None without any bucket."""
    buckets = []
    for key, count in series.items():
        try:
            bound = float(key[0]) if key else math.nan  # "+Inf" parses too
        except ValueError:
            continue  # not a number: not a bucket we can place
        buckets.append((bound, count))
    return tuple(sorted(buckets)) or None
