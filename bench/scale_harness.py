"""What bench/run_at_scale.py and bench/soak.py share: routes and policies at scale, a traffic
exporter in a child process, `rollout run` as a real process with its CPU, memory and JSON log
followed from outside, and kube-apiserver's own request counters.

Nothing here measures the controller from the inside: CPU and peak RSS come from /proc of the
controller's process, requests from kube-apiserver's `apiserver_request_total`, Prometheus
queries from the controller's /metrics (read outside the measured windows).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, WeightedBackend
from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.localcluster import LocalControlPlane
from rollout.localcluster.process import free_port

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
STATE = "rollout.model-registry.io/state"


# --- routes and policies ---------------------------------------------------------------------


def create_routes(
    api: k8s.ApiClient, namespace: str, names: Sequence[str], annotations: dict[str, str]
) -> None:
    """The routes (stable at 100), created 8 at a time."""
    gateway = KubeAIGatewayClient(api, AIGatewayConfig(enabled=True, default_namespace=namespace))

    def create(name: str) -> None:
        gateway.create_route(
            AIGatewayRoute(
                name=name,
                model_name=f"m-{name}",
                backends=[
                    WeightedBackend(name=f"{name}-v1", weight=100),
                    WeightedBackend(name=f"{name}-v2", weight=0),
                ],
            )
        )
        if annotations:
            gateway.set_route_annotations(namespace, name, dict(annotations))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))


def reset_routes(api: k8s.ApiClient, namespace: str, names: Sequence[str]) -> None:
    """Back to the start: weights 100/0 and no controller state (8 at a time)."""
    version = AI_GATEWAY_ROUTE.versions[0]
    base = f"/apis/{AI_GATEWAY_ROUTE.group}/{version}/namespaces/{namespace}"

    def reset(name: str) -> None:
        path = f"{base}/{AI_GATEWAY_ROUTE.plural}/{name}"
        for _ in range(10):  # the controller may write meanwhile: read again and retry
            obj = kubeapi.request(api, "GET", path)
            obj["metadata"].get("annotations", {}).pop(STATE, None)
            for ref in obj["spec"]["rules"][0]["backendRefs"]:
                ref["weight"] = 100 if ref["name"].endswith("-v1") else 0
            try:
                kubeapi.request(api, "PUT", path, body=obj)
                return
            except kubeapi.ApiException as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError(f"could not reset {name}: conflicts")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(reset, names))


def policy_yaml(name: str, namespace: str, interval: int, steps: str, metrics: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {{name: {namespace}-{name}}}
        spec:
          route: {{namespace: {namespace}, name: {name}}}
          stable: {{backend: {name}-v1, modelNameOverride: {namespace}-{name}-v1}}
          canary: {{backend: {name}-v2, modelNameOverride: {namespace}-{name}-v2}}
          steps: {steps}
          analysis:
            interval: {interval}s
            window: {2 * interval}s
            minRequests: 1
            metrics: {metrics}
        ---
        """)


DEFAULT_METRICS = (
    "[{kind: error-rate, max: 0.05}, {kind: ttft, percentile: p95, maxRatio: 1.5}, "
    "{kind: request-duration, percentile: p99, max: 30}]"
)


# --- traffic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    model: str  # gen_ai_request_model
    error_rate: float = 0.0
    ttft: float = 0.1


_RATE = 2.0  # requests per second per variant
_DURATION_BUCKETS = ("0.5", "1", "2", "+Inf")  # every request takes 1 s
_TTFT_BUCKETS = (("0.05", 0.05), ("0.1", 0.1), ("0.25", 0.25), ("+Inf", float("inf")))


def exposition(variants: Sequence[Variant], elapsed: float) -> str:
    """The gateway's series the analysis queries read (request duration by error type, time to
    first token), for `elapsed` seconds of traffic at 2 requests/s per variant.

    Written here rather than with the simulator's exporter: that one serves every gen_ai_*
    histogram with all the gateway's labels, ~30 kB per variant, which at thousands of variants
    takes longer to render and scrape than a scrape interval on this machine."""
    lines = [
        "# TYPE gen_ai_server_request_duration_seconds histogram",
        "# TYPE gen_ai_server_time_to_first_token_seconds histogram",
    ]
    total = _RATE * elapsed
    for v in variants:
        errors = float(int(total * v.error_rate))
        ok = float(int(total)) - errors
        model = f'gen_ai_request_model="{v.model}"'
        for error_type, count in (("", ok), ("500", errors)):
            labels = f'{model},error_type="{error_type}"'
            for le in _DURATION_BUCKETS:
                inside = 0.0 if le == "0.5" else count
                lines.append(
                    f'gen_ai_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {inside}'
                )
            lines.append(f"gen_ai_server_request_duration_seconds_count{{{labels}}} {count}")
            lines.append(f"gen_ai_server_request_duration_seconds_sum{{{labels}}} {count}")
        for le, bound in _TTFT_BUCKETS:
            inside = ok if v.ttft <= bound else 0.0
            lines.append(
                f'gen_ai_server_time_to_first_token_seconds_bucket{{{model},le="{le}"}} {inside}'
            )
        lines.append(f"gen_ai_server_time_to_first_token_seconds_count{{{model}}} {ok}")
        lines.append(f"gen_ai_server_time_to_first_token_seconds_sum{{{model}}} {ok * v.ttft}")
    return "\n".join(lines) + "\n"


class Traffic:
    """Synthetic gateway metrics for every variant, served over HTTP for Prometheus (in a
    thread of the bench's process: none of it is the controller's CPU or memory)."""

    def __init__(self, variants: list[Variant]) -> None:
        self.port = free_port()
        self._variants = variants
        self._started = time.time()
        traffic = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exposition(traffic._variants, time.time() - traffic._started).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the API server's own counters ------------------------------------------------------------

_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def api_requests(api: k8s.ApiClient) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (resource, verb), from kube-apiserver's /metrics."""
    method, url, headers, _, _ = api.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, header_params=headers)
    text: str = response.read().decode()  # type: ignore[no-untyped-call]
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _REQUEST_LINE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        key = (labels.get("resource", ""), labels.get("verb", ""))
        totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


def request_delta(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, int]:
    """What the controller did between two reads: route GETs/LISTs/writes and Event writes."""

    def d(resource: str, *verbs: str) -> int:
        return round(sum(after.get((resource, v), 0) - before.get((resource, v), 0) for v in verbs))

    return {
        "route_gets": d("aigatewayroutes", "GET"),
        "route_lists": d("aigatewayroutes", "LIST"),
        "route_writes": d("aigatewayroutes", "PATCH", "PUT", "POST", "DELETE"),
        "event_writes": d("events", "POST", "PATCH", "CREATE"),
    }


# --- the controller as a process --------------------------------------------------------------


@dataclass
class Sample:
    at: float  # time.time()
    cpu: float  # seconds of user + system CPU
    rss_mib: float


class ControllerProcess:
    """`rollout run` in a child process, with JSON logs in a file; samples its CPU and RSS."""

    def __init__(
        self,
        plane: LocalControlPlane,
        workdir: Path,
        policies: Path,
        prometheus_url: str,
        label: str,
        env: dict[str, str],
        sample_every: float = 0.02,
    ) -> None:
        self.label = label
        self.kubeconfig = plane.write_kubeconfig(workdir / f"kubeconfig-{label}")
        self.log_path = workdir / f"controller-{label}.log"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "ROLLOUT_METRICS_PORT": str(self.metrics_port),
            "ROLLOUT_METRICS_HOST": "127.0.0.1",
            "ROLLOUT_LEASE_NAME": f"bench-{label}",
            **env,
        }
        self.args = [
            sys.executable,
            "-m",
            "rollout",
            "run",
            "--policies",
            str(policies),
            "--kubeconfig",
            str(self.kubeconfig),
            "--prometheus-url",
            prometheus_url,
        ]
        self.samples: list[Sample] = []
        self._sample_every = sample_every
        self._proc: subprocess.Popen[bytes] | None = None
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self.peak_rss_mib = 0.0

    def __enter__(self) -> ControllerProcess:
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
        self.write_samples()
        return self._proc.returncode

    def write_samples(self) -> None:
        """The CPU and RSS samples, beside the log (`<log>.samples.tsv`: time, cpu s, rss MiB),
        to see when the peak came."""
        path = self.log_path.with_suffix(".samples.tsv")
        path.write_text(
            "".join(f"{s.at:.3f}\t{s.cpu:.2f}\t{s.rss_mib:.1f}\n" for s in self.samples)
        )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def read(self) -> Sample | None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = hwm = 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        self.peak_rss_mib = max(self.peak_rss_mib, hwm)
        return Sample(time.time(), cpu, rss)

    def _sample(self) -> None:
        while not self._stop.is_set() and self.alive():
            sample = self.read()
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self._sample_every)

    def cpu_at(self, moment: float) -> float:
        """CPU seconds used by `moment` (the last sample at or before it)."""
        earlier = [s.cpu for s in self.samples if s.at <= moment]
        return earlier[-1] if earlier else 0.0

    def logs(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def metric(self, name: str) -> float:
        """A counter or gauge summed over its labels, from the controller's /metrics."""
        body = (
            urllib3.request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
            .data.decode()
            .splitlines()
        )
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body
            if line.startswith(name) and (line[len(name)] in " {")
        )

    def wait_for_metrics(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"controller exited; see {self.log_path}")
            try:
                self.metric("rollout_leader")
                return
            except (urllib3.exceptions.HTTPError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"no /metrics within {timeout}s; see {self.log_path}")


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def decisions(proc: ControllerProcess, since: float = 0.0) -> list[dict[str, Any]]:
    """rollout_decision log events at or after `since` (time.time())."""
    out = []
    for entry in proc.logs():
        if entry.get("event") != "rollout_decision":
            continue
        at = iso_to_epoch(entry["timestamp"])
        if at >= since:
            entry["_at"] = at
            out.append(entry)
    return out


def iso_to_epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def process_cpu(pids: Sequence[int]) -> float:
    """User + system CPU seconds of processes (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


@dataclass
class Window:
    """One tick seen from outside: from its aligned instant to when the controller is idle."""

    start: float
    end: float = 0.0
    last_decision: float | None = None
    cpu: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    queries: float = 0.0
    idle_rate: float = 0.0
    server_cpu: float = 0.0  # kube-apiserver + etcd over the same window

    @property
    def wall(self) -> float:
        return (self.last_decision or self.end) - self.start


def next_slot(interval: int, after: float) -> float:
    return (int(after // interval) + 1) * interval


def settle(
    proc: ControllerProcess, start: float, idle_cpu_per_s: float, quiet: float = 1.0
) -> float:
    """When the controller went back to idle after `start`: the first moment after which a
    whole `quiet` second passes with no more CPU than idle (plus a 20 ms tick of /proc)."""
    while True:
        time.sleep(quiet / 2)
        now = time.time()
        if now - start < quiet:
            continue
        used = proc.cpu_at(now) - proc.cpu_at(now - quiet)
        if used <= idle_cpu_per_s * quiet + 0.02:
            return now - quiet
