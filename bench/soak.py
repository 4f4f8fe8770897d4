"""Soak: `rollout run` (APScheduler, the route watch and its cache, leader election, Events, JSON
logs) with 300 rollouts for 10 minutes on the local control plane and a real Prometheus, with
a mix of outcomes, every rollout started again as soon as it ends. Not part of `make test`.

A third of the rollouts have a healthy canary (expected: Succeeded), a third a canary failing
25% of its requests (expected: RolledBack), a third no traffic at all (expected: Paused, after
`inconclusiveLimit` inconclusive checks). The bench follows the routes' state annotations and,
when a rollout ends, records its phase against the expected one and starts it again (state
removed, weights back to 100/0), until the end; then it stops the controller and prints:
ticks late and instants missed (a rollout's tick still running or still queued at the next
instant, or an interval's job coalesced by APScheduler) from the controller's log, peak RSS
minute by minute, the outcomes by kind, and any rollout not ending in its expected phase
(every rollout's outcomes go to outcomes.tsv beside the controller's log).

Run: .venv/bin/python bench/soak.py [--rollouts 300] [--minutes 10] [--interval 15]
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client as k8s
from scale_harness import (
    STATE,
    ControllerProcess,
    Traffic,
    Variant,
    create_routes,
    policy_yaml,
    reset_routes,
)

from rollout import kubeapi
from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.localcluster import LocalControlPlane, default_crd_dirs
from rollout.localcluster.prometheus import LocalPrometheus

KINDS = {"healthy": "Succeeded", "failing": "RolledBack", "no-traffic": "Paused"}
METRICS = "[{kind: error-rate, max: 0.05}, {kind: ttft, percentile: p95, maxRatio: 1.5}]"


def kind_of(index: int) -> str:
    return list(KINDS)[index % 3]


def phases(api: k8s.ApiClient, namespace: str) -> dict[str, str | None]:
    path = (
        f"/apis/{AI_GATEWAY_ROUTE.group}/v1beta1/namespaces/{namespace}/{AI_GATEWAY_ROUTE.plural}"
    )
    listed = kubeapi.request(api, "GET", path)
    out: dict[str, str | None] = {}
    for item in listed["items"]:
        raw = (item["metadata"].get("annotations") or {}).get(STATE)
        out[item["metadata"]["name"]] = json.loads(raw).get("phase") if raw else None
    return out


def main() -> None:
    # SIGTERM (a background job ignores SIGINT) still stops every process this bench started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=int, default=15, help="analysis interval (s)")
    args = parser.parse_args()
    namespace = "soak"
    names = [f"r{i}" for i in range(args.rollouts)]
    variants: list[Variant] = []
    for i, name in enumerate(names):
        kind = kind_of(i)
        if kind == "no-traffic":
            continue
        variants.append(Variant(f"{namespace}-{name}-v1"))
        variants.append(
            Variant(f"{namespace}-{name}-v2", error_rate=0.25 if kind == "failing" else 0)
        )
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    print(
        f"{args.rollouts} rollouts ({', '.join(f'{k}: expect {v}' for k, v in KINDS.items())}), "
        f"{args.minutes:g} min, interval {args.interval}s; AI Gateway controller not part of it: "
        "ROLLOUT_REQUIRE_ROUTE_ACCEPTED=false, ROLLOUT_VERIFY_WEIGHTS=false; logs in "
        f"{workdir}"
    )
    with (
        LocalControlPlane(crd_dirs=default_crd_dirs()) as plane,
        plane.api_client() as api,
        Traffic(variants) as traffic,
        LocalPrometheus(targets=[f"127.0.0.1:{traffic.port}"], scrape_interval="5s") as prom,
    ):
        kubeapi.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
        create_routes(api, namespace, names, {})
        policies = workdir / "policies"
        policies.mkdir()
        text = "".join(
            policy_yaml(name, namespace, args.interval, "[20, 50]", METRICS).replace(
                "minRequests: 1",
                "minRequests: 5\n    failureLimit: 2\n    inconclusiveLimit: 3",
            )
            for name in names
        )
        (policies / "all.yaml").write_text(text)
        env = {"ROLLOUT_REQUIRE_ROUTE_ACCEPTED": "false", "ROLLOUT_VERIFY_WEIGHTS": "false"}
        outcomes: dict[str, list[str]] = collections.defaultdict(list)
        rss_by_minute: list[tuple[int, float, float]] = []
        with ControllerProcess(plane, workdir, policies, prom.url, "soak", env, 0.5) as proc:
            proc.wait_for_metrics()
            started = time.time()
            deadline = started + args.minutes * 60
            # Rollouts restarted less than two intervals before the end could not finish.
            last_restart = deadline - 6 * args.interval
            minute = 0
            frozen: set[str] = set()
            while time.time() < deadline:
                time.sleep(5)
                if not proc.alive():
                    print(f"! the controller exited; see {proc.log_path}")
                    break
                ended = []
                for name, phase in phases(api, namespace).items():
                    if name not in frozen and phase in ("Succeeded", "RolledBack", "Paused"):
                        outcomes[name].append(phase)
                        ended.append(name)
                if time.time() < last_restart:
                    reset_routes(api, namespace, ended)  # and run it again
                else:
                    frozen.update(ended)  # too late for another cycle: leave it as it ended
                while time.time() - started >= (minute + 1) * 60:
                    minute += 1
                    current = proc.samples[-1].rss_mib if proc.samples else 0.0
                    rss_by_minute.append((minute, current, proc.peak_rss_mib))
            final = phases(api, namespace)
            code = proc.stop()
        report(args, names, outcomes, final, rss_by_minute, proc, code)


def report(
    args: argparse.Namespace,
    names: list[str],
    outcomes: dict[str, list[str]],
    final: dict[str, str | None],
    rss: list[tuple[int, float, float]],
    proc: ControllerProcess,
    code: int | None,
) -> None:
    # The controller logs one line per interval instant: ticks_late (ticks that started late)
    # when the instant's queue has drained, ticks_missed (rollouts without a tick at it:
    # still_running, their previous tick still ran, so it was skipped; still_queued, their
    # previous tick had not started yet, so it ticks once, for the newer instant;
    # coalesced_instants, instants the interval's job did not run at, each rollout missing
    # them). APScheduler still logs its own skips of an interval job (still running at its
    # next instant) and misfires; the instants they cost are in coalesced_instants.
    late = missed = skipped = queued = coalesced = job_skipped = misfires = 0
    for line in proc.log_path.read_text(errors="replace").splitlines():
        if "maximum number of running instances reached" in line and "interval:" in line:
            job_skipped += 1
        if "was missed by" in line:
            misfires += 1
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") == "ticks_late":
            late += entry.get("rollouts", 0)
        elif entry.get("event") == "ticks_missed":
            missed += entry.get("rollouts", 0)
            skipped += entry.get("still_running", 0)
            queued += entry.get("still_queued", 0)
            coalesced += entry.get("coalesced_instants", 0)
    print(f"controller exit code {code}")
    print(
        f"ticks late (> max(1 s, interval/10) after their instant): {late}; rollout instants "
        f"without a tick: {missed} (previous tick still running: {skipped}, still queued: "
        f"{queued}, interval instants coalesced: {coalesced}); APScheduler skipped interval "
        f"jobs: {job_skipped}; APScheduler misfires: {misfires}"
    )
    print(
        "RSS by minute (current / peak MiB): "
        + ", ".join(f"{m}: {c:.0f}/{p:.0f}" for m, c, p in rss)
    )
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    wrong: list[str] = []
    for i, name in enumerate(names):
        expected = KINDS[kind_of(i)]
        for outcome in outcomes.get(name, []):
            totals[(kind_of(i), "as expected" if outcome == expected else f"got {outcome}")] += 1
            if outcome != expected:
                wrong.append(f"{name} ({kind_of(i)}): {outcome}, expected {expected}")
        last = final.get(name)
        totals[(kind_of(i), f"at the end: {last}")] += 1
    for (kind, what), count in sorted(totals.items()):
        print(f"  {kind:<10} {what:<28} {count}")
    print(f"cycles ending otherwise than expected: {len(wrong)}")
    for line in wrong[:30]:
        print(f"  {line}")
    ended_otherwise = [
        f"{name} ({kind_of(i)}): {final.get(name)}, expected {KINDS[kind_of(i)]}"
        for i, name in enumerate(names)
        if final.get(name) != KINDS[kind_of(i)]
    ]
    print(f"rollouts not in their expected phase at the end: {len(ended_otherwise)}")
    for line in ended_otherwise[:30]:
        print(f"  {line}")
    # Every rollout's cycles, one line each, beside the controller's log (300 of them would
    # bury the summary above).
    table = proc.log_path.with_name("outcomes.tsv")
    table.write_text(
        "rollout\tkind\tcycle outcomes\tfinal phase\n"
        + "".join(
            f"{name}\t{kind_of(i)}\t{' '.join(outcomes.get(name, [])) or '-'}\t{final.get(name)}\n"
            for i, name in enumerate(names)
        )
    )
    print(f"every rollout's cycle outcomes and final phase: {table}")


if __name__ == "__main__":
    main()
