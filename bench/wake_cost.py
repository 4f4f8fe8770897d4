"""What a wait costs on this machine: the CPU of one small, fixed piece of Python work (about
a tenth of a millisecond: encode and decode an AIGatewayRoute, as a tick does around a write)
when the pieces run back to back, and when each one follows a short sleep, as the work of a
tick that waits on the API server does. Also the CPU of the sleep and wake-up alone.

Why it is here: the step tick of `run_at_scale.py` costs the controller 2-3x the CPU that the
same code needs in a tight in-process loop. Its work runs in short bursts between waits for
kube-apiserver (the PATCH, the Event), and on this VM a burst after a wait of a few
milliseconds costs 2-3x a warm one (caches cold, the vCPU halted and woken). This bench shows
that property of the machine apart from the controller.

Run: .venv/bin/python bench/wake_cost.py [--pieces 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

ROUTE: dict[str, Any] = {
    "apiVersion": "aigateway.envoyproxy.io/v1beta1",
    "kind": "AIGatewayRoute",
    "metadata": {
        "name": "r1",
        "namespace": "ns",
        "annotations": {"rollout.model-registry.io/state": "x" * 300},
        "managedFields": [
            {"manager": f"m{i}", "fieldsV1": {"f:spec": {"f:rules": {}}}} for i in range(5)
        ],
    },
    "spec": {
        "rules": [
            {
                "backendRefs": [{"name": "v1", "weight": 50}, {"name": "v2", "weight": 50}],
                "matches": [{"headers": [{"name": "x-ai-eg-model", "value": "m"}]}],
            }
        ]
    },
}


def piece() -> None:
    for _ in range(2):
        json.loads(json.dumps(ROUTE))
        [str(i) for i in range(50)]


def cpu_per_piece(pieces: int, sleep: float) -> float:
    """Microseconds of this process's CPU per piece, each piece after `sleep` seconds."""
    started = time.process_time()
    for _ in range(pieces):
        if sleep:
            time.sleep(sleep)
        piece()
    return (time.process_time() - started) / pieces * 1e6


def cpu_per_sleep(sleeps: int, sleep: float) -> float:
    started = time.process_time()
    for _ in range(sleeps):
        time.sleep(sleep)
    return (time.process_time() - started) / sleeps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=1000, help="pieces per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="medians over this many rounds")
    args = parser.parse_args()
    cpu_per_piece(args.pieces // 4, 0.0)  # warm up
    sleeps = (1, 5, 12)
    warm: list[float] = []
    after: dict[int, list[float]] = {ms: [] for ms in sleeps}
    alone: dict[int, list[float]] = {ms: [] for ms in sleeps}
    # Rounds interleave the conditions, so that a slower or faster stretch of the machine
    # (this VM's figures drift by tens of percent) falls on all of them.
    for _ in range(args.rounds):
        warm.append(cpu_per_piece(args.pieces, 0.0))
        for ms in sleeps:
            alone[ms].append(cpu_per_sleep(args.pieces // 2, ms / 1000))
            after[ms].append(cpu_per_piece(args.pieces // 2, ms / 1000) - alone[ms][-1])
    base = statistics.median(warm)
    print(f"back to back:        {base:7.1f} us of CPU per piece (median of {args.rounds})")
    for ms in sleeps:
        piece_cpu = statistics.median(after[ms])
        print(
            f"after a {ms:2d} ms sleep:  {piece_cpu:7.1f} us of CPU per piece "
            f"({piece_cpu / base:3.1f}x), plus {statistics.median(alone[ms]):5.1f} us for the "
            "sleep and wake-up"
        )


if __name__ == "__main__":
    main()
