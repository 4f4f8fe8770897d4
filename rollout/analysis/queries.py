"""PromQL for the canary analysis: built-in GenAI checks batched across rollouts, custom templates.

Contract: pure. Turns `AnalysisRequest`s into a `QueryPlan` (PromQL strings) and decoded answers
back into `Measurement`s; no client, no clock, no logging.

Batching
--------
Every (rollout, variant) that needs the same built-in signal (e.g. ttft p95) over the same
window, with a selector using the same label NAMES, shares ONE query. Their label values become
set matchers (`gen_ai_request_model=~"m-v1|m-v2|..."`) and the aggregation keeps those labels
(`sum by (gen_ai_request_model) (...)`), so the answer holds one series per variant, which
`split_vector` hands back to each (rollout, variant) by its label values. Queries per tick:

    #distinct (signal, window, selector label names)   -- built-in checks, plus the request count
  + 2 x #custom checks summed over all rollouts

With one window and the usual selectors (gen_ai_request_model only) that is
`#distinct built-in signals + 1 + 2 x #custom checks`, whatever the number of rollouts.

Custom queries are user templates: we cannot know where the selector sits in them nor whether
their result keeps the variant's labels, so each runs once per variant (canary and stable).

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

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import NamedTuple

from rollout.analysis.provider import AnalysisRequest, Measurements
from rollout.analysis.verdicts import Measurement
from rollout.policy.schema import (
    MetricCheck,
    MetricKind,
    Percentile,
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

# Rendered custom queries are quoted in error messages; a long one would drown the message.
_QUOTED_QUERY_LIMIT = 300


class Role(StrEnum):
    STABLE = "stable"
    CANARY = "canary"


@dataclass(frozen=True, order=True)
class VariantRef:
    """One variant of one rollout."""

    rollout: str
    role: Role


class SignalKind(StrEnum):
    """What a built-in query computes per variant: the built-in checks plus the request count."""

    REQUESTS = "requests"
    ERROR_RATE = MetricKind.ERROR_RATE.value
    TTFT = MetricKind.TTFT.value
    TIME_PER_OUTPUT_TOKEN = MetricKind.TIME_PER_OUTPUT_TOKEN.value
    REQUEST_DURATION = MetricKind.REQUEST_DURATION.value
    OUTPUT_TOKENS_PER_SECOND = MetricKind.OUTPUT_TOKENS_PER_SECOND.value


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


REQUESTS = Signal(SignalKind.REQUESTS)


def signal_for(check: MetricCheck) -> Signal | None:
    """The built-in signal a check reads, or None for a custom query."""
    if check.kind is MetricKind.CUSTOM:
        return None
    return Signal(SignalKind(check.kind.value), check.percentile)


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

    `matchers` is a matcher list without braces; `by` the selector's label names.
    """
    labels = ", ".join(by)
    duration = promql_duration(window)

    def series(metric: str, *extra: str) -> str:
        return f"{metric}{{{', '.join((matchers, *extra))}}}[{duration}]"

    def summed(function: str, metric: str, *extra: str) -> str:
        return f"sum by ({labels}) ({function}({series(metric, *extra)}))"

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
            "window": promql_duration(request.analysis.window),
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
    """One built-in signal for every variant sharing its window and selector label names."""

    signal: Signal
    window: timedelta
    label_names: tuple[str, ...]
    members: tuple[Member, ...]
    promql: str

    @property
    def purpose(self) -> str:
        return self.signal.name


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


@dataclass(frozen=True)
class PlannedCheck:
    """Where one check of one rollout finds its numbers: indices into `QueryPlan.queries`."""

    rollout: str
    metric: str
    canary: int
    stable: int
    requests: int
    # With minRequests 0 the count is informative only, so its failure is no reason to fail
    # the whole measurement.
    requests_required: bool


@dataclass(frozen=True)
class QueryPlan:
    queries: tuple[Query, ...]
    checks: tuple[PlannedCheck, ...]


class _GroupKey(NamedTuple):  # a tuple's hash: computed for every variant of every check
    signal: Signal
    window: timedelta
    label_names: tuple[str, ...]


def _group_key(signal: Signal, window: timedelta, selector: Mapping[str, str]) -> _GroupKey:
    return _GroupKey(signal, window, tuple(sorted(selector)))


def plan_queries(requests: Sequence[AnalysisRequest]) -> QueryPlan:
    """The fewest queries that answer every check of every request (see the module doc)."""
    counts = Counter(request.key for request in requests)
    duplicates = sorted(key for key, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"rollout keys must be unique, repeated: {', '.join(duplicates)}")

    groups: dict[_GroupKey, dict[VariantRef, tuple[str, ...]]] = {}
    customs: list[CustomQuery] = []
    # Checks whose query indices are known only once every group is complete.
    pending: list[tuple[AnalysisRequest, MetricCheck, _GroupKey | int, _GroupKey | int]] = []

    def join(signal: Signal, request: AnalysisRequest, role: Role) -> _GroupKey:
        selector = request.canary if role is Role.CANARY else request.stable
        key = _group_key(signal, request.analysis.window, selector)
        values = tuple(selector[name] for name in key.label_names)
        groups.setdefault(key, {})[VariantRef(request.key, role)] = values
        return key

    def custom(check: MetricCheck, request: AnalysisRequest, role: Role) -> int:
        promql = render_custom_query(check, request, role)
        customs.append(CustomQuery(VariantRef(request.key, role), check.name, promql))
        return len(customs) - 1

    requests_groups: dict[str, _GroupKey] = {}
    for request in requests:
        requests_groups[request.key] = join(REQUESTS, request, Role.CANARY)
        for check in request.analysis.metrics:
            signal = signal_for(check)
            if signal is None:
                canary: _GroupKey | int = custom(check, request, Role.CANARY)
                stable: _GroupKey | int = custom(check, request, Role.STABLE)
            else:
                canary = join(signal, request, Role.CANARY)
                stable = join(signal, request, Role.STABLE)
            pending.append((request, check, canary, stable))

    ordered = sorted(groups, key=lambda key: (key.signal.name, key.window, key.label_names))
    batched = tuple(_batched_query(key, groups[key]) for key in ordered)
    group_index = {key: index for index, key in enumerate(ordered)}

    def index(source: _GroupKey | int) -> int:
        return group_index[source] if isinstance(source, _GroupKey) else len(batched) + source

    checks = tuple(
        PlannedCheck(
            rollout=request.key,
            metric=check.name,
            canary=index(canary),
            stable=index(stable),
            requests=index(requests_groups[request.key]),
            requests_required=request.analysis.min_requests > 0,
        )
        for request, check, canary, stable in pending
    )
    return QueryPlan(queries=(*batched, *customs), checks=checks)


def _batched_query(key: _GroupKey, variants: Mapping[VariantRef, tuple[str, ...]]) -> BatchedQuery:
    members = tuple(Member(ref, values) for ref, values in sorted(variants.items()))
    matchers = ", ".join(
        set_matcher(name, (member.values[position] for member in members))
        for position, name in enumerate(key.label_names)
    )
    return BatchedQuery(
        signal=key.signal,
        window=key.window,
        label_names=key.label_names,
        members=members,
        promql=signal_promql(key.signal, matchers, key.label_names, key.window),
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


def split_vector(query: BatchedQuery, vector: Vector) -> dict[VariantRef, float]:
    """Each member's value from a batched answer; members without a series are left out."""
    by_values = {
        # Prometheus drops a label whose value is empty, and an empty selector value matches it.
        tuple(sample.labels.get(name, "") for name in query.label_names): sample.value
        for sample in vector.samples
    }
    return {
        member.ref: by_values[member.values]
        for member in query.members
        if member.values in by_values
    }


@dataclass(frozen=True)
class _Answer:
    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Answers:
    """One query's answer, per variant."""

    values: Mapping[VariantRef, float] = field(default_factory=dict)
    error: str | None = None

    def get(self, ref: VariantRef) -> _Answer:
        if self.error is not None:
            return _Answer(error=self.error)
        return _Answer(value=self.values.get(ref))


def _answers(query: Query, result: QueryResult) -> _Answers:
    if isinstance(query, BatchedQuery):
        what = f"{query.purpose} query"
        if isinstance(result, QueryFailure):
            return _Answers(error=f"{what} failed: {result.message}")
        if isinstance(result, Scalar):
            return _Answers(error=f"{what} returned a scalar, expected a vector")
        return _Answers(split_vector(query, result))

    what = f"{query.ref.role.value} query `{_shorten(query.promql)}`"
    match result:
        case QueryFailure(message=message):
            return _Answers(error=f"{what} failed: {message}")
        case Scalar(value=value):
            return _Answers({query.ref: value})
        case Vector(samples=()):
            return _Answers()
        case Vector(samples=(sample,)):
            return _Answers({query.ref: sample.value})
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
        canary = answers[check.canary].get(VariantRef(check.rollout, Role.CANARY))
        stable = answers[check.stable].get(VariantRef(check.rollout, Role.STABLE))
        count = answers[check.requests].get(VariantRef(check.rollout, Role.CANARY))
        errors = [canary.error, stable.error]
        if check.requests_required:
            errors.append(count.error)
        # A batched query carries both variants: its failure would otherwise be told twice.
        distinct = list(dict.fromkeys(error for error in errors if error is not None))
        measurements.setdefault(check.rollout, {})[check.metric] = Measurement(
            metric=check.metric,
            canary=canary.value,
            stable=stable.value,
            canary_requests=count.value,
            error="; ".join(distinct) or None,
        )
    return measurements
