"""`rollout run` at scale, on the real path: the controller as a process (APScheduler, the
route watch and its cache, leader election, Events, JSON logs) against the local control plane
and a real Prometheus scraping synthetic gen_ai_* traffic; measured from outside.

Part 1, N rollouts (default 1000), steps [50], interval 60 s, all with traffic that passes:
the first tick starts every rollout (50%), the next aligned tick analyses and promotes every
one (the step tick), the one after finds nothing to do (the no-step tick). Part 2, M rollouts
(default 10,000) held by the pause annotation: peak RSS and a tick where nothing steps.

Each part runs twice on the same routes (reset in between): the new path (routes from the watch
cache, a bounded tick pool, Events off the tick's path) and the old one (ROLLOUT_ROUTE_CACHE=
false, ROLLOUT_TICK_WORKERS=1, ROLLOUT_EVENT_WORKERS=0, ROLLOUT_FAST_TRANSPORT=false: a GET per
rollout, one tick after the other, each tick writing its own Event, all through the official
client's urllib3 stack), and each figure is printed next to the old one.

How it is measured: CPU is the controller process's user+system time from /proc (sampled every
20 ms), from the tick's aligned instant until the process is idle again (so the Events written
after the last weight write are in), minus its idle rate; wall is from the aligned instant to
the last `rollout_decision` in its log; API requests are kube-apiserver's own
`apiserver_request_total` (nothing else talks to it during a tick); queries per tick are the
controller's `rollout_prometheus_queries_total`; kube-apiserver's and etcd's CPU over the same
window is printed too (on this 2-core machine each AIGatewayRoute PATCH costs the API server
~6-7 ms of CPU, which bounds the wall of a tick of 1000 weight writes from below). The AI
Gateway controller is not part of this bench, so ROLLOUT_REQUIRE_ROUTE_ACCEPTED=false and
ROLLOUT_VERIFY_WEIGHTS=false.

Run: .venv/bin/python bench/run_at_scale.py [--rollouts 1000] [--large 10000] [--interval 60]
With --profile DIR, py-spy (on PATH or given by PY_SPY) samples the thread holding the GIL (where
the controller's Python CPU goes) through every measured tick and writes collapsed stacks
(flamegraph.pl input) to DIR/<path>-<n>-<tick>.txt. With --pin, the controller runs alone on the
last CPU and everything else (kube-apiserver, etcd, Prometheus, the traffic and this bench) on
the others, as where the controller has a node to itself: its CPU then is its own work, without
the cost of sharing a core with a busy API server; the wall then is not a deployment's (the
API server has fewer cores than it would). With --spin too, a busy loop at SCHED_IDLE shares
the controller's CPU: it runs only when the controller does not, so the CPU never halts while
the controller waits for kube-apiserver; the difference is what waking from idle costs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client as k8s
from scale_harness import (
    DEFAULT_METRICS,
    ControllerProcess,
    Traffic,
    Variant,
    Window,
    api_requests,
    create_routes,
    decisions,
    next_slot,
    policy_yaml,
    process_cpu,
    request_delta,
    reset_routes,
    settle,
    wait_until,
)

from rollout import kubeapi
from rollout.localcluster import LocalControlPlane, default_crd_dirs
from rollout.localcluster.prometheus import LocalPrometheus

NO_GATEWAY = {"ROLLOUT_REQUIRE_ROUTE_ACCEPTED": "false", "ROLLOUT_VERIFY_WEIGHTS": "false"}
PATHS = {
    "new": {},
    "old": {
        "ROLLOUT_ROUTE_CACHE": "false",
        "ROLLOUT_TICK_WORKERS": "1",
        "ROLLOUT_EVENT_WORKERS": "0",
        "ROLLOUT_FAST_TRANSPORT": "false",
    },
}


def measure_tick(
    proc: ControllerProcess,
    api: k8s.ApiClient,
    start: float,
    expect: int,
    phase: str | None,
    timeout: float,
    server_pids: Sequence[int],
    before: Callable[[], None] | None = None,
    profile: Path | None = None,
) -> Window:
    """Measure the tick at the aligned instant `start` (`phase`: wait for `expect` decisions
    into it; None: no decision is expected)."""
    if before is not None:
        time.sleep(max(0.0, start - 8.0 - time.time()))
        before()
    # The controller's /metrics is read well before the instant: rendering it (tens of
    # series per rollout) costs the controller seconds of CPU at 10,000 rollouts, which must
    # not land in the measured tick.
    time.sleep(max(0.0, start - 6.0 - time.time()))
    queries = proc.metric("rollout_prometheus_queries_total")
    if time.time() > start - 3.0:
        print("    ! the tick came too soon after the previous one to be measured alone")
    time.sleep(max(0.0, start - 0.3 - time.time()))
    requests_before = api_requests(api)
    time.sleep(max(0.0, start - time.time()))
    server_before = process_cpu(server_pids)
    sampler = start_profile(proc.pid, profile) if profile is not None else None
    user_sys_before = user_sys(proc.pid)
    window = Window(start)
    if phase is not None:
        done = wait_until(
            lambda: sum(1 for d in decisions(proc, start - 0.5) if d["phase"] == phase) >= expect,
            timeout=timeout,
            every=0.5,
        )
        if not done:
            print(f"    ! not every rollout reached {phase} in this tick")
    time.sleep(1.0)
    window.end = settle(proc, start, idle_cpu_per_s=0.05)
    window.server_cpu = process_cpu(server_pids) - server_before
    user, system = (b - a for a, b in zip(user_sys_before, user_sys(proc.pid), strict=True))
    print(f"    (controller user {user:.2f} s, system {system:.2f} s, idle rate not taken out)")
    if sampler is not None:
        stop_profile(sampler)
    window.requests = request_delta(requests_before, api_requests(api))
    window.queries = proc.metric("rollout_prometheus_queries_total") - queries
    # The idle rate right after (watch, lease renewals, policy re-reads), taken out again.
    idle_from, idle_at = proc.cpu_at(time.time()), time.time()
    time.sleep(3.0)
    idle_rate = (proc.cpu_at(time.time()) - idle_from) / (time.time() - idle_at)
    seen = decisions(proc, start - 0.5)
    window.last_decision = max((d["_at"] for d in seen), default=None)
    used = proc.cpu_at(window.end) - proc.cpu_at(start - 0.05)
    window.cpu = max(0.0, used - idle_rate * (window.end - start))
    window.idle_rate = idle_rate
    return window


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit them)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that has just ended
            os.sched_setaffinity(int(task.name), cpus)


def user_sys(pid: int) -> tuple[float, float]:
    """A process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def start_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` into `output` (collapsed stacks), without pausing it."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if spy is None:
        sys.exit("--profile needs py-spy: pip install py-spy, or PY_SPY=/path/to/py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    args = [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--gil"]
    args += ["--threads", "--format", "raw", "--output", str(output)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(sampler: subprocess.Popen[bytes]) -> None:
    sampler.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
    try:
        sampler.wait(30)
    except subprocess.TimeoutExpired:
        sampler.kill()


def describe(label: str, w: Window) -> str:
    r = w.requests
    return (
        f"{label:<4} cpu {w.cpu:6.2f} s  wall {w.wall:6.2f} s  route GETs {r['route_gets']:6d}  "
        f"route writes {r['route_writes']:5d}  Event writes {r['event_writes']:5d}  "
        f"route LISTs {r['route_lists']}  Prometheus queries {w.queries:.0f}  "
        f"(kube-apiserver + etcd cpu {w.server_cpu:.2f} s)"
    )


def ratio(old: float, new: float) -> str:
    if new <= 0:
        return "old/new: inf" if old > 0 else "old/new: -"
    return f"old/new {old / new:5.1f}x"


def run_path(
    plane: LocalControlPlane,
    api: k8s.ApiClient,
    workdir: Path,
    policies: Path,
    prom: str,
    label: str,
    interval: int,
    n: int,
    ticks: list[tuple[str, str | None]],
    traffic: Traffic | None,
    profile: Path | None,
    controller_cpus: set[int] | None,
) -> tuple[list[Window], float]:
    env = {**NO_GATEWAY, **PATHS[label]}
    # Start just after an aligned instant: the first tick then has most of an interval before
    # the next one (the step tick) comes.
    time.sleep((interval - time.time() % interval + 0.2) % interval)
    with ControllerProcess(plane, workdir, policies, prom, f"{label}-{n}", env) as proc:
        if controller_cpus:
            pin(proc.pid, controller_cpus)
        proc.wait_for_metrics()
        if controller_cpus:
            pin(proc.pid, controller_cpus)  # and the threads it started meanwhile
        # The first tick moves every rollout off Pending (at start, or at the next instant
        # when leadership came a moment after it).
        first = ticks[0][1]
        ok = wait_until(
            lambda: sum(1 for d in decisions(proc) if d["phase"] == first) >= n,
            timeout=interval * 6,
            every=1.0,
        )
        if not ok:
            print(f"    ! {label}: not every rollout reached {first} after the first tick")
        last = max(d["_at"] for d in decisions(proc))
        windows = []
        start = next_slot(interval, last)
        for tick, phase in ticks[1:]:
            output = None
            if profile is not None:
                output = profile / f"{label}-{n}-{tick.replace(' ', '-')}.txt"
            windows.append(
                measure_tick(proc, api, start, n, phase, interval * 3, plane.pids(), profile=output)
            )
            start = next_slot(interval, time.time())
        peak = proc.peak_rss_mib
        code = proc.stop()
        if code not in (0, None):
            print(f"    ! controller exited with {code}; see {proc.log_path}")
    return windows, peak


def part(
    plane: LocalControlPlane,
    api: k8s.ApiClient,
    workdir: Path,
    prom: str,
    *,
    n: int,
    interval: int,
    paused: bool,
    traffic: Traffic | None,
    with_old: bool = True,
    profile: Path | None = None,
    controller_cpus: set[int] | None = None,
) -> None:
    namespace = f"scale-{n}"
    kubeapi.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    names = [f"r{i}" for i in range(n)]
    started = time.time()
    annotations = {"rollout.model-registry.io/pause": "true"} if paused else {}
    create_routes(api, namespace, names, annotations)
    policies = workdir / f"policies-{n}"
    policies.mkdir()
    (policies / "all.yaml").write_text(
        "".join(policy_yaml(name, namespace, interval, "[50]", DEFAULT_METRICS) for name in names)
    )
    print(f"{n} rollouts: routes created in {time.time() - started:.0f}s")
    if paused:
        ticks: list[tuple[str, str | None]] = [("first tick", "Paused"), ("no-step tick", None)]
    else:
        ticks = [("first tick", "Progressing"), ("step tick", "Succeeded"), ("no-step tick", None)]
    results: dict[str, tuple[list[Window], float]] = {}
    for label in ("new", "old") if with_old else ("new",):
        if label == "old":
            reset_routes(api, namespace, names)
        results[label] = run_path(
            plane,
            api,
            workdir,
            policies,
            prom,
            label,
            interval,
            n,
            ticks,
            traffic,
            profile,
            controller_cpus,
        )
    for index, (tick, _) in enumerate(ticks[1:]):
        new = results["new"][0][index]
        print(f"  {n} rollouts, {tick}:")
        print(f"    {describe('new', new)}")
        if with_old:
            old = results["old"][0][index]
            print(f"    {describe('old', old)}")
            print(f"    cpu {ratio(old.cpu, new.cpu)}  wall {ratio(old.wall, new.wall)}")
    peaks = ", ".join(f"{label} {peak:.0f} MiB" for label, (_, peak) in results.items())
    print(f"  {n} rollouts, peak RSS: {peaks}")


def main() -> None:
    # SIGTERM (a background job ignores SIGINT) still stops every process this bench started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10_000, help="0: skip the large part")
    parser.add_argument(
        "--large-old",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the old path on the large part (its 10,000 sequential writes take "
        "about 10 minutes here)",
    )
    parser.add_argument(
        "--old",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the old path on the first part",
    )
    parser.add_argument("--profile", type=Path, help="py-spy every measured tick into this dir")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the controller alone on the last CPU, everything else on the others",
    )
    parser.add_argument(
        "--spin",
        action="store_true",
        help="with --pin: a busy loop at SCHED_IDLE on the controller's CPU, so that the CPU "
        "never idles between the controller's waits (what waking from idle costs it)",
    )
    parser.add_argument(
        "--interval",
        type=int,
        default=60,
        help="the policies' analysis interval (s); long enough for two scrapes of the traffic",
    )
    args = parser.parse_args()
    controller_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit("--pin needs at least two CPUs")
        controller_cpus = {cpus[-1]}
        # Before any thread or process starts: all of them inherit it.
        os.sched_setaffinity(0, set(cpus[:-1]))
        print(f"pinned: controller on CPU {cpus[-1]}, the rest on CPU {cpus[:-1]}")
    elif args.spin:
        sys.exit("--spin needs --pin (the busy loop runs on the controller's CPU)")
    spinner = None
    if args.spin and controller_cpus:
        spinner = start_spinner(controller_cpus)
        print(f"spinning: a SCHED_IDLE busy loop on CPU {sorted(controller_cpus)}")
    print(
        "AI Gateway controller not in this bench: ROLLOUT_REQUIRE_ROUTE_ACCEPTED=false, "
        "ROLLOUT_VERIFY_WEIGHTS=false"
    )
    try:
        run(args, controller_cpus)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def start_spinner(cpus: set[int]) -> subprocess.Popen[bytes]:
    """A busy loop on `cpus` that runs only when nothing else wants them (SCHED_IDLE): the
    controller preempts it at once, but the CPU never halts while the controller waits."""
    code = (
        "import os\n"
        "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
        f"os.sched_setaffinity(0, {sorted(cpus)!r})\n"
        "while True:\n    pass\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def run(args: argparse.Namespace, controller_cpus: set[int] | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="run-at-scale-"))
    variants = [
        Variant(f"scale-{args.rollouts}-r{i}-{v}")
        for i in range(args.rollouts)
        for v in ("v1", "v2")
    ]
    with (
        LocalControlPlane(crd_dirs=default_crd_dirs()) as plane,
        plane.api_client() as api,
        Traffic(variants) as traffic,
        LocalPrometheus(targets=[f"127.0.0.1:{traffic.port}"], scrape_interval="5s") as prom,
    ):
        print(f"kube-apiserver {plane.url}, prometheus {prom.url}; logs in {workdir}")
        if args.rollouts:
            part(
                plane,
                api,
                workdir,
                prom.url,
                n=args.rollouts,
                interval=args.interval,
                paused=False,
                traffic=traffic,
                with_old=args.old,
                profile=args.profile,
                controller_cpus=controller_cpus,
            )
        if args.large:
            part(
                plane,
                api,
                workdir,
                prom.url,
                n=args.large,
                interval=args.interval,
                paused=True,
                traffic=None,
                with_old=args.large_old,
                profile=args.profile,
                controller_cpus=controller_cpus,
            )


if __name__ == "__main__":
    main()
