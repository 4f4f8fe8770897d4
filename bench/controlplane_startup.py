"""How long the local control plane takes to start once the binaries exist.

Prints etcd + kube-apiserver readiness and CRD installation times over a few runs.
Run: .venv/bin/python bench/controlplane_startup.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time

from rollout.localcluster import LocalControlPlane, default_crd_dirs, resolve_binaries


def main(runs: int) -> None:
    binaries = resolve_binaries()  # builds once if missing; not part of the timing
    totals: list[float] = []
    stops: list[float] = []
    for i in range(runs):
        started = time.perf_counter()
        plane = LocalControlPlane(crd_dirs=default_crd_dirs(), binaries=binaries)
        plane.start()
        ready = time.perf_counter() - started
        t = time.perf_counter()
        plane.stop()
        stopped = time.perf_counter() - t
        totals.append(ready)
        stops.append(stopped)
        print(
            f"run {i + 1}: ready with CRDs established in {ready:.2f}s, stopped in {stopped:.2f}s"
        )
    print(
        "start (etcd + kube-apiserver + CRDs established): "
        f"median {statistics.median(totals):.2f}s, min {min(totals):.2f}s, "
        f"max {max(totals):.2f}s over {runs} runs"
    )
    print(f"stop: median {statistics.median(stops):.2f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
