"""How good are the verdicts? A p95 ratio threshold against the statistical judge, at 5% traffic.

Simulates checks of a canary at 5% of the traffic: 40 canary and 760 stable requests per
check window, time to first token drawn from a lognormal distribution (median 0.3 s), the
canary's either identical to stable's or every request 20% or 50% slower. Each check is
bucketed with the gateway's TTFT buckets (what `increase(..._bucket[window])` returns) and
judged by the controller's own code (`evaluate_metric`) in two ways:

- `{kind: ttft, percentile: p95, maxRatio: 1.2}`: the p95 as histogram_quantile computes it from
  those buckets (the same interpolation), canary against stable;
- `{kind: ttft, judge: {test: mann-whitney, confidence: C, maxShift: 0.1}}`.

A FAIL on identical distributions is a false alarm (a needless rollback); a FAIL on a slower
canary is a detection. Printed: the share of FAIL outcomes over N checks per cell. Not a timed
test; the seed is fixed, so the figures are reproducible.

Run: .venv/bin/python bench/judge_quality.py [--checks N] [--canary 40] [--stable 760]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rollout.analysis.judge import Bucket, Histogram
from rollout.analysis.verdicts import CheckOutcome, Measurement, evaluate_metric
from rollout.policy import MetricCheck
from rollout.simulator.metrics import TTFT_BUCKETS

MEDIAN_SECONDS = 0.3
SLOWDOWNS = (1.0, 1.2, 1.5)
SPREADS = (0.5, 1.0)  # lognormal sigma: a moderate and a heavy tail


@dataclass(frozen=True)
class Method:
    label: str
    check: MetricCheck


METHODS = [
    Method(
        "p95, maxRatio 1.2",
        MetricCheck.model_validate({"kind": "ttft", "percentile": "p95", "maxRatio": 1.2}),
    ),
    Method(
        "judge, confidence 0.99, maxShift 0.1",
        MetricCheck.model_validate(
            {"kind": "ttft", "judge": {"confidence": 0.99, "maxShift": 0.1}}
        ),
    ),
    Method(
        "judge, confidence 0.95, maxShift 0.1",
        MetricCheck.model_validate(
            {"kind": "ttft", "judge": {"confidence": 0.95, "maxShift": 0.1}}
        ),
    ),
]


def buckets(values: np.ndarray) -> tuple[Bucket, ...]:
    """Cumulative counts over the gateway's TTFT buckets, +Inf last."""
    counts = np.searchsorted(np.sort(values), TTFT_BUCKETS, side="right")
    return (
        *zip(TTFT_BUCKETS, counts.astype(float).tolist(), strict=True),
        (math.inf, float(len(values))),
    )


def measurement(
    canary: tuple[Bucket, ...], stable: tuple[Bucket, ...], n_canary: int
) -> Measurement:
    return Measurement(
        metric="ttft",
        canary=Histogram.from_buckets(canary).quantile(0.95),
        stable=Histogram.from_buckets(stable).quantile(0.95),
        canary_requests=n_canary,
        canary_buckets=canary,
        stable_buckets=stable,
    )


def fail_rates(
    sigma: float, slowdown: float, checks: int, n_canary: int, n_stable: int, seed: int
) -> tuple[list[float], list[float]]:
    """(share of FAIL, share of INCONCLUSIVE) per method."""
    rng = np.random.default_rng(seed)
    fails = [0] * len(METHODS)
    inconclusive = [0] * len(METHODS)
    for _ in range(checks):
        stable = rng.lognormal(math.log(MEDIAN_SECONDS), sigma, n_stable)
        canary = rng.lognormal(math.log(MEDIAN_SECONDS), sigma, n_canary) * slowdown
        measured = measurement(buckets(canary), buckets(stable), n_canary)
        for index, method in enumerate(METHODS):
            outcome = evaluate_metric(method.check, measured, min_requests=10).outcome
            fails[index] += outcome is CheckOutcome.FAIL
            inconclusive[index] += outcome is CheckOutcome.INCONCLUSIVE
    return [f / checks for f in fails], [i / checks for i in inconclusive]


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--canary", type=int, default=40, help="canary requests per check")
    parser.add_argument("--stable", type=int, default=760, help="stable requests per check")
    args = parser.parse_args()

    started = time.perf_counter()
    rows: list[list[Any]] = []
    for sigma in SPREADS:
        results = {
            slowdown: fail_rates(sigma, slowdown, args.checks, args.canary, args.stable, seed=9)
            for slowdown in SLOWDOWNS
        }
        for index, method in enumerate(METHODS):
            cells = []
            for slowdown in SLOWDOWNS:
                fails, inconclusive = results[slowdown]
                cell = f"{fails[index] * 100:.1f}%"
                if inconclusive[index]:
                    cell += f" ({inconclusive[index] * 100:.1f}% inconclusive)"
                cells.append(cell)
            rows.append([f"lognormal, sigma {sigma:g}", method.label, *cells])
    elapsed = time.perf_counter() - started
    judged = args.checks * len(SLOWDOWNS) * len(SPREADS)
    print(
        f"{args.checks} checks per cell; {args.canary} canary and {args.stable} stable requests "
        f"per check (5% traffic); TTFT median {MEDIAN_SECONDS}s, gateway buckets\n"
    )
    print(
        table(
            rows,
            [
                "TTFT distribution",
                "verdict",
                "false alarms (identical)",
                "detected: 20% slower",
                "detected: 50% slower",
            ],
        )
    )
    print(
        f"\n{judged} simulated checks, each judged {len(METHODS)} ways, in {elapsed:.1f}s "
        f"({elapsed / judged / len(METHODS) * 1000:.2f} ms per verdict)"
    )


if __name__ == "__main__":
    main()
