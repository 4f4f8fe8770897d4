"""The query plan and the measurements read from its answers stay the same, byte for byte,
for a varied set of requests (built-in checks of every kind, judges, custom queries, per
tenant, priced, several windows and selectors): their digest was taken before the planner and
the reader were made faster (rollout/analysis/queries.py); any change to it is a change of
behaviour, not of speed."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from rollout.analysis import AnalysisRequest, plan_queries
from rollout.analysis.queries import (
    BatchedQuery,
    QueryFailure,
    QueryPlan,
    QueryResult,
    Sample,
    Scalar,
    Vector,
    assemble_measurements,
)
from rollout.policy import AnalysisSpec, Pricing

METRIC_SETS: list[list[dict[str, Any]]] = [
    [
        {"kind": "error-rate", "max": 0.05},
        {"kind": "ttft", "percentile": "p95", "maxRatio": 1.5},
        {"kind": "request-duration", "percentile": "p99", "max": 30},
    ],
    [
        {"kind": "error-rate", "maxDifference": 0.02},
        {"kind": "time-per-output-token", "percentile": "p50", "maxRatio": 1.2, "judge": {}},
        {"kind": "request-duration", "judge": {}},
        {"kind": "output-tokens-per-second", "minRatio": 0.8},
        {"kind": "cache-hit-ratio", "min": 0.1},
        {"kind": "tokens-per-request", "tokenType": "output", "maxRatio": 1.3},
        {"kind": "cost-per-request", "maxRatio": 1.1},
    ],
    [
        {"kind": "ttft", "percentile": "p99", "max": 2, "maxRatio": 1.4},
        {"name": "kv", "query": "max(kv{ {{selector}} }[{{window}}]) # {{variant}}", "max": 0.9},
    ],
]
PRICE = Pricing.model_validate({"input": 1, "output": 2})


def requests() -> list[AnalysisRequest]:
    out = []
    for i in range(24):
        metrics = METRIC_SETS[i % 3]
        document: dict[str, Any] = {"window": "5m", "minRequests": i % 2, "metrics": metrics}
        if i % 4 == 1:
            document["perTenant"] = {"label": "tenant", "minRequests": 3}
        spec = AnalysisSpec.model_validate(document)
        stable = {"gen_ai_request_model": f'm"{i}.v1'}
        canary = {"gen_ai_request_model": f"m|{i}-v2"}
        if i % 5 == 0:
            stable["gen_ai_provider_name"] = "p1"
            canary["gen_ai_provider_name"] = "p2"
        out.append(
            AnalysisRequest(
                key=f"ns-{i % 7}/r{i}",
                analysis=spec,
                stable=stable,
                canary=canary,
                route=f"r{i}",
                namespace=f"ns-{i % 7}",
                stable_pricing=PRICE,
                canary_pricing=PRICE,
                effective_window=None if i % 3 else timedelta(seconds=100 + i % 2),
            )
        )
    return out


def answer(plan: QueryPlan) -> list[QueryResult]:
    """An answer for every query: a series per member (a few missing), per tenant and per
    bucket or token type where the query splits them; custom queries one value; one failure."""
    results: list[QueryResult] = []
    for index, query in enumerate(plan.queries):
        if index == 3:
            results.append(QueryFailure("boom"))
            continue
        if not isinstance(query, BatchedQuery):
            results.append(Scalar(0.5 + index) if index % 2 else Vector((Sample({}, 0.25),)))
            continue
        samples = []
        for n, member in enumerate(query.members):
            if n % 11 == 5:
                continue
            labels = dict(zip(query.label_names, member.values, strict=True))
            splits: list[dict[str, str]] = [{}]
            if query.split:
                splits = [{query.split[0]: t} for t in ("t1", "t2", "")]
            series = query.signal.series_label
            extra: list[dict[str, str]] = [{}]
            if series == "le":
                extra = [{"le": le} for le in ("0.1", "0.5", "1", "+Inf")]
            elif series is not None:
                extra = [{series: t} for t in ("input", "output", "cached_input")]
            for s in splits:
                for e in extra:
                    value = 1.0 + n + len(samples) % 7
                    samples.append(Sample({**labels, **s, **e}, value))
        results.append(Vector(tuple(samples)))
    return results


def digest_of(plan: QueryPlan, measured: object) -> str:
    queries = [
        (
            type(q).__name__,
            q.promql,
            q.purpose,
            getattr(q, "members", None),
            getattr(q, "split", None),
            getattr(q, "ref", None),
        )
        for q in plan.queries
    ]
    checks = [
        (
            c.rollout,
            c.metric,
            c.check.name,
            sorted((s.signal.name, s.role.value, s.per_tenant, i) for s, i in c.sources.items()),
            c.requests,
            c.requests_required,
            c.custom,
            c.tenant_requests,
            sorted((r.value, p is not None) for r, p in c.pricing.items()),
        )
        for c in plan.checks
    ]
    text = repr((queries, checks, measured)).replace("nan", "NaN")
    return hashlib.sha256(text.encode()).hexdigest()


def test_plan_and_measurements_are_unchanged() -> None:
    plan = plan_queries(requests())
    measured = assemble_measurements(plan, answer(plan))
    ordered = sorted((key, sorted(by_metric.items())) for key, by_metric in measured.items())
    assert len(plan.queries) > 20 and len(plan.checks) > 80
    measurements = [m for _, by_metric in ordered for _, m in by_metric]
    assert any(m.error for m in measurements) and any(m.tenants for m in measurements)
    assert digest_of(plan, ordered) == EXPECTED


EXPECTED = "add3d74d3708b9c3ab2a1a4c834aadbd4a387b1c00d2a3e085ad4f3f667a6bfa"
