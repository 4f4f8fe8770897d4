"""Queries per analysis tick, and how long a tick takes, as the number of rollouts grows.

Plans one tick for N rollouts (5 built-in checks each, distinct models) and prints the number of
queries, the longest query and the planning time. With --live, also serves the GenAI metrics
of all 2N models, scrapes them with a real Prometheus and times `measure()` over them. Live runs
are for up to a few hundred rollouts: beyond that, the Python exporter (about 100 series per
model) cannot serve a scrape within the interval, which says nothing about the queries.
Run: .venv/bin/python bench/analysis_queries.py [ROLLOUTS ...] [--live]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from rollout.analysis import AnalysisRequest, PrometheusMetricsProvider, plan_queries
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.policy import AnalysisSpec
from rollout.simulator.metrics import GenAIMetricsExporter, RequestRecord

METRICS: list[dict[str, Any]] = [
    {"kind": "error-rate", "maxDifference": 0.02},
    {"kind": "ttft", "percentile": "p95", "maxRatio": 1.2},
    {"kind": "time-per-output-token", "percentile": "p50", "maxRatio": 1.2},
    {"kind": "request-duration", "percentile": "p99", "maxRatio": 1.5},
    {"kind": "output-tokens-per-second", "minRatio": 0.8},
]


def rollouts(count: int) -> list[AnalysisRequest]:
    spec = AnalysisSpec.model_validate({"window": "5m", "metrics": METRICS})
    return [
        AnalysisRequest(
            key=f"team-{i}/chat",
            analysis=spec,
            stable={"gen_ai_request_model": f"llama-3-8b-team-{i}-v1"},
            canary={"gen_ai_request_model": f"llama-3-8b-team-{i}-v2"},
            route="chat",
            namespace=f"team-{i}",
        )
        for i in range(count)
    ]


def plan_only(count: int) -> None:
    requests = rollouts(count)
    started = time.perf_counter()
    plan = plan_queries(requests)
    elapsed = time.perf_counter() - started
    longest = max(len(query.promql) for query in plan.queries)
    print(
        f"{count:>5} rollouts: {len(plan.queries)} queries per tick, longest {longest:,} chars, "
        f"planned in {elapsed * 1000:.1f} ms"
    )


def record(exporter: GenAIMetricsExporter, requests: list[AnalysisRequest], each: int) -> None:
    for request in requests:
        for selector in (request.stable, request.canary):
            for n in range(each):
                exporter.record(
                    RequestRecord(
                        request_model=selector["gen_ai_request_model"],
                        original_model="llama-3-8b",
                        duration_seconds=1.0,
                        input_tokens=50,
                        output_tokens=200,
                        error=n % 10 == 9,  # a failure in each batch of 10
                        time_to_first_token_seconds=0.05,
                        time_per_output_token_seconds=0.02,
                    )
                )


def live(count: int, ticks: int = 5) -> None:
    requests = rollouts(count)
    exporter = GenAIMetricsExporter()
    exporter.start()
    try:
        record(exporter, requests, 10)  # every series exists before the first scrape
        # A scrape must finish within its interval; the exporter needs a while for 2N models.
        interval = "2s" if count <= 100 else "15s"
        with LocalPrometheus(targets=[exporter.target], scrape_interval=interval) as prometheus:
            prometheus.wait_for_scrapes(samples=1, timeout=120)
            record(exporter, requests, 10)
            prometheus.wait_for_scrapes(samples=3, timeout=180)
            with PrometheusMetricsProvider(prometheus.url, timeout=60) as provider:
                durations: list[float] = []
                for _ in range(ticks):
                    started = time.perf_counter()
                    measured = provider.measure(requests)
                    durations.append(time.perf_counter() - started)
                errors = sum(
                    1 for ms in measured.values() for m in ms.values() if m.error is not None
                )
                missing = sum(
                    1 for ms in measured.values() for m in ms.values() if m.canary is None
                )
                print(
                    f"{count:>5} rollouts live: {provider.queries_issued // ticks} queries per "
                    f"tick, median tick {statistics.median(durations):.3f}s, "
                    f"{errors} errors, {missing} canary values missing"
                )
    finally:
        exporter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rollouts", nargs="*", type=int, default=[1, 10, 100, 1000])
    parser.add_argument("--live", action="store_true", help="also measure against Prometheus")
    args = parser.parse_args()
    for count in args.rollouts:
        plan_only(count)
    if args.live:
        for count in args.rollouts:
            live(count)


if __name__ == "__main__":
    main()
