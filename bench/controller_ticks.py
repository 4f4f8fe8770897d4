"""Controller ticks for 1, 100 and 1000 concurrent rollouts on the local control plane and a
real Prometheus (scraping the simulator's gen_ai_* metrics).

For each size it prints, for the first tick (every rollout starts: Pending -> first step) and
for an analysis tick (every rollout measured, judged and stepped): wall time and CPU time per
tick and per rollout, Prometheus queries per tick, Kubernetes API writes per step, and the
process's peak memory.
Run: .venv/bin/python bench/controller_ticks.py [SIZES...]   (default: 1 100 1000)
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from rollout import kubeapi
from rollout.analysis.prometheus import PrometheusMetricsProvider
from rollout.config import AIGatewayConfig
from rollout.controller.reconciler import Reconciler
from rollout.controller.scheduler import RolloutController
from rollout.controller.state import RolloutPhase
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, WeightedBackend
from rollout.localcluster import LocalControlPlane, default_crd_dirs
from rollout.localcluster.process import free_port
from rollout.localcluster.prometheus import LocalPrometheus
from rollout.logging import configure_logging
from rollout.simulator.metrics import GenAIMetricsExporter, RequestRecord

INTERVAL = 30  # seconds; the bench moves its own clock, so this only sets the slots


class NullEvents:
    def record(self, *args: Any) -> None:  # Events are measured elsewhere; keep them out
        pass


class Counter:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.writes = 0
        original = kubeapi.request

        def counting(client: k8s.ApiClient, method: str, *args: Any, **kwargs: Any) -> Any:
            if client is api and method in ("POST", "PUT", "PATCH", "DELETE"):
                self.writes += 1
            return original(client, method, *args, **kwargs)

        kubeapi.request = counting  # type: ignore[assignment]


def policy(i: int, namespace: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {{name: r{i}}}
        spec:
          route: {{namespace: {namespace}, name: r{i}}}
          stable: {{backend: r{i}-v1, modelNameOverride: {namespace}-r{i}-v1}}
          canary: {{backend: r{i}-v2, modelNameOverride: {namespace}-r{i}-v2}}
          steps: [10, 50, 100]
          analysis:
            interval: {INTERVAL}s
            window: 1m
            minRequests: 1
            metrics:
              - {{kind: error-rate, max: 0.05}}
              - {{kind: ttft, percentile: p95, maxRatio: 1.5}}
              - {{kind: request-duration, percentile: p99, max: 30}}
        ---
        """)


def serve_traffic(port: int, namespace: str, n: int) -> None:
    """In a child process: record traffic for n rollouts before and after a scrape, then exit.

    Serving thousands of series costs the exporter hundreds of MiB and seconds of CPU per
    scrape; in the bench's own process that would be measured as controller time and memory.
    Prometheus keeps the samples after the target is gone, for the 1m window."""
    exporter = GenAIMetricsExporter(port=port)
    exporter.start()
    traffic(exporter, namespace, n)
    time.sleep(3)
    traffic(exporter, namespace, n)
    time.sleep(3)
    exporter.stop()


def traffic(exporter: GenAIMetricsExporter, namespace: str, n: int) -> None:
    for i in range(n):
        for variant in ("v1", "v2"):
            exporter.record(
                RequestRecord(
                    request_model=f"{namespace}-r{i}-{variant}",
                    original_model=f"m{i}",
                    duration_seconds=1.0,
                    input_tokens=100,
                    output_tokens=100,
                    time_to_first_token_seconds=0.1,
                    time_per_output_token_seconds=0.01,
                )
            )


def run_size(n: int, api: k8s.ApiClient, prom: LocalPrometheus, exporter_port: int) -> None:
    namespace = f"bench-{n}"
    kubeapi.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    gateway = KubeAIGatewayClient(api, AIGatewayConfig(enabled=True, default_namespace=namespace))
    for i in range(n):
        gateway.create_route(
            AIGatewayRoute(
                name=f"r{i}",
                model_name=f"m{i}",
                backends=[
                    WeightedBackend(name=f"r{i}-v1", weight=100),
                    WeightedBackend(name=f"r{i}-v2", weight=0),
                ],
            )
        )
    # Traffic before and after a scrape, so increase()/rate() have two samples per series.
    child = multiprocessing.Process(target=serve_traffic, args=(exporter_port, namespace, n))
    child.start()
    child.join()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "policies.yaml").write_text("".join(policy(i, namespace) for i in range(n)))
        clock = [datetime.now(UTC)]
        provider = PrometheusMetricsProvider(prom.url, timeout=30)
        counter = Counter(api)
        controller = RolloutController(
            gateway=gateway,
            provider=provider,
            reconciler=Reconciler(gateway, NullEvents()),
            policy_paths=[Path(folder)],
            clock=lambda: clock[0],
        )
        controller.sync_policies()
        names = sorted(controller.policies)
        for label in ("first tick (start)", "analysis tick"):
            queries, writes = provider.queries_issued, counter.writes
            wall, cpu = time.perf_counter(), time.process_time()
            results = [controller.run_tick(name) for name in names]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            stepped = sum(1 for r in results if r and r.wrote)
            phases = {r.decision.state.phase for r in results if r and r.decision}
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"  n={n:<5} {label:<19} wall {wall:7.2f}s ({wall / n * 1000:6.1f} ms/rollout)"
                f"  cpu {cpu:6.2f}s  prometheus queries {provider.queries_issued - queries:3d}"
                f"  api writes {counter.writes - writes:5d} ({stepped} stepped)"
                f"  peak rss {peak_mb:6.0f} MiB  phases {sorted(p.value for p in phases)}"
            )
            clock[0] += timedelta(seconds=INTERVAL)
        progressing = sum(
            1
            for r in results
            if r and r.decision and r.decision.state.phase is RolloutPhase.PROGRESSING
        )
        print(
            f"  n={n:<5} after the analysis tick: {progressing} progressing; "
            f"{controller.batcher.batches} provider batch(es) in all"
        )


def main(sizes: list[int]) -> None:
    configure_logging(level="warning")  # one decision event per rollout would drown the figures
    port = free_port()
    with (
        LocalControlPlane(crd_dirs=default_crd_dirs()) as plane,
        plane.api_client() as api,
        LocalPrometheus(targets=[f"127.0.0.1:{port}"], scrape_interval="1s") as prom,
    ):
        print(f"kube-apiserver {plane.url}, prometheus {prom.url}")
        for n in sizes:
            run_size(n, api, prom, port)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 100, 1000])
