"""The scheduler's pure parts and its policy reloading, with fake ports (no cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from rollout.analysis.provider import AnalysisRequest, Measurements
from rollout.analysis.verdicts import Measurement
from rollout.controller.annotations import PAUSE_ANNOTATION
from rollout.controller.observability import ControllerMetrics
from rollout.controller.ports import RouteChange
from rollout.controller.reconciler import TickResult
from rollout.controller.scheduler import (
    AlignedIntervalTrigger,
    AnalysisBatcher,
    RolloutController,
    slot_start,
    tick_slot,
)
from rollout.controller.state import RolloutState
from rollout.policy.loading import load_policy_paths
from rollout.policy.schema import RolloutPolicy
from tests.unit.policy_docs import policy_doc


class CountingProvider:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def measure(self, requests: Sequence[AnalysisRequest]) -> Measurements:
        self.calls.append([r.key for r in requests])
        return {
            r.key: {
                "error-rate": Measurement(
                    metric="error-rate", canary=0.0, stable=0.0, canary_requests=100
                )
            }
            for r in requests
        }

    def is_online(self) -> bool:
        return True


def policy_text(
    name: str, interval: str = "10s", route: str | None = None, window: str = "5m"
) -> str:
    metrics = "[{kind: error-rate, max: 0.1}]"
    analysis = f"{{interval: {interval}, window: {window}, metrics: {metrics}}}"
    return policy_doc(name, route=route, steps="[10, 100]", analysis=analysis)


def policies(tmp_path: Path, *texts: str) -> list[RolloutPolicy]:
    (tmp_path / "p.yaml").write_text("".join(texts))
    result = load_policy_paths([tmp_path])
    assert result.ok, result.errors
    return result.policies


def test_tick_slots_are_interval_aligned() -> None:
    now = datetime(2026, 11, 27, 15, 0, 7, tzinfo=UTC)
    slot = tick_slot(now, 10)
    assert slot_start(slot, 10) == datetime(2026, 11, 27, 15, 0, 0, tzinfo=UTC)
    assert tick_slot(now + timedelta(seconds=2.999), 10) == slot
    assert tick_slot(now + timedelta(seconds=3), 10) == slot + 1


def test_one_provider_call_per_interval_and_slot_for_all_rollouts(tmp_path: Path) -> None:
    fast = [policy_text(f"fast-{i}") for i in range(50)]
    slow = [policy_text(f"slow-{i}", interval="1m") for i in range(3)]
    loaded = policies(tmp_path, *fast, *slow)
    provider = CountingProvider()
    batcher = AnalysisBatcher(provider, ControllerMetrics())
    by_interval: dict[float, list[RolloutPolicy]] = {}
    for p in loaded:
        by_interval.setdefault(p.spec.analysis.interval.total_seconds(), []).append(p)
    for p in loaded:
        interval = p.spec.analysis.interval.total_seconds()
        got = batcher.measurements(p, 7, lambda i=interval: by_interval[i])  # type: ignore[misc]
        assert got["error-rate"].canary_requests == 100
    assert len(provider.calls) == 2  # one per interval group, not one per rollout
    assert sorted(len(c) for c in provider.calls) == [3, 50]
    batcher.measurements(loaded[0], 8, lambda: by_interval[10.0])
    assert len(provider.calls) == 3  # the next slot measures again


def test_a_broken_file_keeps_its_last_good_policies_and_others_run(tmp_path: Path) -> None:
    good, other = tmp_path / "good.yaml", tmp_path / "other.yaml"
    good.write_text(policy_text("alpha"))
    other.write_text(policy_text("beta"))
    controller = RolloutController(
        gateway=None,  # type: ignore[arg-type]  # no rate limits in these policies
        provider=CountingProvider(),
        reconciler=RecordingReconciler(),  # type: ignore[arg-type]
        policy_paths=[tmp_path],
    )
    controller.sync_policies()
    assert sorted(controller.policies) == ["alpha", "beta"]
    assert job_ids(controller) == ["interval:10"]
    good.write_text(policy_text("alpha").replace("max: 0.1", "max: lots"))
    result = controller.sync_policies()
    assert not result.ok and "good.yaml" in str(result.errors[0])
    assert sorted(controller.policies) == ["alpha", "beta"]  # alpha kept, last good version
    other.unlink()
    controller.sync_policies()
    assert sorted(controller.policies) == ["alpha"]
    assert [p.name for p in controller._group(10.0)] == ["alpha"]
    good.write_text(policy_text("alpha", interval="20s"))
    controller.sync_policies()
    # alpha moved to the 20 s job; the 10 s job, without rollouts now, is gone.
    assert job_ids(controller) == ["interval:20"]
    job = controller.scheduler.get_job("interval:20")
    assert job.trigger.interval == timedelta(seconds=20)
    assert controller._group(10.0) == [] and [p.name for p in controller._group(20.0)] == ["alpha"]


def test_a_sync_of_unchanged_files_changes_nothing_and_still_reports_errors(
    tmp_path: Path,
) -> None:
    good, other = tmp_path / "good.yaml", tmp_path / "other.yaml"
    good.write_text(policy_text("alpha"))
    other.write_text(policy_text("beta"))
    controller = RolloutController(
        gateway=None,  # type: ignore[arg-type]
        provider=CountingProvider(),
        reconciler=RecordingReconciler(),  # type: ignore[arg-type]
        policy_paths=[tmp_path],
    )
    controller.sync_policies()
    good.write_text(policy_text("alpha").replace("max: 0.1", "max: lots"))
    broken = controller.sync_policies()
    policies, sources = controller._policies, controller._sources
    for _ in range(3):
        assert controller.sync_policies() is broken  # the files did not change
        assert controller._policies is policies and controller._sources == sources
        assert controller.metrics.registry.get_sample_value("rollout_policy_errors") == 1
    assert sorted(controller.policies) == ["alpha", "beta"]  # alpha still its last good one
    good.write_text(policy_text("alpha"))
    assert controller.sync_policies().ok
    assert controller.metrics.registry.get_sample_value("rollout_policy_errors") == 0


# ---- the scheduled ticks, with a recording reconciler and a fake clock -----------------------

HOUR = 3600.0
START = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)  # 30 s after an instant of 1 h


def job_ids(controller: RolloutController) -> list[str]:
    return sorted(job.id for job in controller.scheduler.get_jobs() if job.id != "sync-policies")


def hourly(name: str, route: str | None = None) -> str:
    # An interval of an hour: the real scheduler never reaches an instant during a test; the
    # tests fire the interval job themselves, at the fake clock's instants.
    return policy_text(name, interval="1h", window="1h", route=route)


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class RecordingReconciler:
    """Records every tick (rollout, now, with analysis); a rollout in `hold` waits in its tick
    until its Event is set. Fails the test if one rollout ever runs twice at once."""

    def __init__(self, measure: bool = False) -> None:
        self.ticks: list[tuple[str, datetime, bool]] = []
        self.hold: dict[str, threading.Event] = {}
        self.overlaps: list[str] = []
        self._measure = measure
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self.forgotten: list[str] = []

    def forget(self, policy: RolloutPolicy) -> None:
        self.forgotten.append(policy.name)

    def tick(
        self,
        policy: RolloutPolicy,
        now: datetime,
        measure: Callable[[RolloutState], Mapping[str, Measurement]] | None,
    ) -> TickResult:
        with self._lock:
            if policy.name in self._running:
                self.overlaps.append(policy.name)
            self._running.add(policy.name)
            self.ticks.append((policy.name, now, measure is not None))
        try:
            gate = self.hold.get(policy.name)
            if gate is not None:
                assert gate.wait(10)
            if self._measure and measure is not None:
                state = RolloutState(
                    policy_name=policy.name,
                    policy_hash=policy.fingerprint(),
                    stable_backend=policy.spec.stable.backend,
                    canary_backend=policy.spec.canary.backend,
                )
                measure(state)
            return TickResult(None, skipped="recorded")
        finally:
            with self._lock:
                self._running.discard(policy.name)

    def count(self, name: str) -> int:
        with self._lock:
            return sum(1 for n, _, _ in self.ticks if n == name)

    def at(self, now: datetime) -> list[str]:
        with self._lock:
            return sorted(n for n, at, _ in self.ticks if at == now)


class Harness:
    def __init__(
        self, tmp_path: Path, *texts: str, workers: int = 4, measure: bool = False
    ) -> None:
        self.file = tmp_path / "p.yaml"
        self.file.write_text("".join(texts))
        self.clock = [START]
        self.provider = CountingProvider()
        self.reconciler = RecordingReconciler(measure)
        self.controller = RolloutController(
            gateway=None,  # type: ignore[arg-type]
            provider=self.provider,
            reconciler=self.reconciler,  # type: ignore[arg-type]
            policy_paths=[tmp_path],
            reload_seconds=3600,
            clock=lambda: self.clock[0],
            tick_workers=workers,
        )

    def start(self) -> None:
        self.controller.start(leader_wait=0)
        self.controller.scheduler.pause()  # the tests fire the interval jobs themselves

    def instant(self, after: float = HOUR) -> datetime:
        """Move the clock on and run the interval job, as APScheduler does at an instant."""
        self.clock[0] += timedelta(seconds=after)
        job = self.controller.scheduler.get_job("interval:3600")
        job.func(*job.args)
        return slot_start(tick_slot(self.clock[0], HOUR), HOUR)

    def idle(self) -> None:
        controller = self.controller
        wait_until("the tick queue to drain", lambda: controller._drainers == 0)


def test_one_job_per_interval_not_per_rollout(tmp_path: Path) -> None:
    fast = [policy_text(f"fast-{i}") for i in range(50)]
    slow = [policy_text(f"slow-{i}", interval="1m") for i in range(3)]
    harness = Harness(tmp_path, *fast, *slow)
    harness.controller.sync_policies()
    assert job_ids(harness.controller) == ["interval:10", "interval:60"]
    job = harness.controller.scheduler.get_job("interval:60")
    assert isinstance(job.trigger, AlignedIntervalTrigger) and job.args == (60.0,)
    assert job.coalesce and job.max_instances == 1
    assert len(harness.controller._group(10.0)) == 50
    assert len(harness.controller._group(60.0)) == 3
    # Before start() the first ticks only wait in the queue.
    assert harness.reconciler.ticks == []


def test_new_and_changed_policies_tick_at_once_removed_ones_stop(tmp_path: Path) -> None:
    harness = Harness(tmp_path, hourly("a"), hourly("b"), hourly("c"))
    reconciler = harness.reconciler
    harness.start()
    try:
        # At once (the clock is 30 s into an interval), on the current instant's slot.
        first = slot_start(tick_slot(START, HOUR), HOUR)
        wait_until("the first ticks", lambda: len(reconciler.ticks) == 3)
        assert reconciler.at(first) == ["a", "b", "c"]
        assert all(analysed for _, _, analysed in reconciler.ticks)
        harness.file.write_text(
            hourly("a").replace("max: 0.1", "max: 0.2") + hourly("b") + hourly("d")
        )
        harness.controller.sync_policies()  # a changed, c removed, d new: a and d tick now
        assert reconciler.forgotten == ["c"]  # its series leave /metrics
        wait_until("the ticks of the edit", lambda: len(reconciler.ticks) == 5)
        harness.idle()
        assert sorted(n for n, _, _ in reconciler.ticks[3:]) == ["a", "d"]
        instant = harness.instant()
        wait_until("the instant's ticks", lambda: len(reconciler.at(instant)) == 3)
        harness.idle()
        assert reconciler.at(instant) == ["a", "b", "d"]  # c is not ticked any more
        assert len(reconciler.ticks) == 8
        # The same instant again (APScheduler does not, but a fake clock can): no second tick.
        job = harness.controller.scheduler.get_job("interval:3600")
        job.func(*job.args)
        harness.idle()
        assert len(reconciler.ticks) == 8
        assert harness.controller.tick_timing == {"late": 0, "missed": 0, "coalesced": 0}
    finally:
        harness.controller.stop()
    assert reconciler.overlaps == []


def test_a_rollout_still_ticking_is_skipped_at_the_next_instant_and_counted(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path, hourly("slow"), hourly("b"), hourly("c"))
    reconciler = harness.reconciler
    release = reconciler.hold["slow"] = threading.Event()
    harness.start()
    try:
        wait_until("the first ticks", lambda: len(reconciler.ticks) == 3)  # slow still runs
        with capture_logs() as logs:
            instant = harness.instant()
            wait_until("the instant's ticks", lambda: len(reconciler.at(instant)) == 2)
        assert reconciler.at(instant) == ["b", "c"]
        assert harness.controller.tick_timing["missed"] == 1
        (missed,) = [e for e in logs if e["event"] == "ticks_missed"]
        assert missed["rollouts"] == 1 and missed["still_running"] == 1
        assert missed["names"] == ["slow"]
        release.set()
        harness.idle()
        time.sleep(0.1)
        # Skipped, not queued behind its lock: slow ticked once (the first tick) so far.
        assert reconciler.count("slow") == 1
        following = harness.instant()
        wait_until("the next instant's ticks", lambda: len(reconciler.at(following)) == 3)
        harness.idle()
        assert harness.controller.tick_timing["missed"] == 1
    finally:
        harness.controller.stop()
    assert reconciler.overlaps == []


def test_ticks_still_queued_at_the_next_instant_tick_once_for_it_and_count_as_missed(
    tmp_path: Path,
) -> None:
    # One tick worker, held by `slow`: the other rollouts' ticks of the instant wait in the
    # queue when the next instant comes (an API server too slow for the interval).
    names = ["slow", "b", "c", "d"]
    harness = Harness(tmp_path, *(hourly(n) for n in names), workers=1)
    reconciler = harness.reconciler
    harness.start()
    try:
        wait_until("the first ticks", lambda: len(reconciler.ticks) == 4)
        harness.idle()
        release = reconciler.hold["slow"] = threading.Event()
        instant = harness.instant()
        wait_until("slow's tick", lambda: reconciler.at(instant) == ["slow"])
        following = harness.instant()
        # slow: still running (skipped); b, c, d: queued for `instant`, never started.
        assert harness.controller.tick_timing["missed"] == 4
        release.set()
        wait_until("the queued ticks", lambda: len(reconciler.at(following)) == 3)
        harness.idle()
        # Each ticks once, for the newest instant: not lost, not twice.
        assert reconciler.at(following) == ["b", "c", "d"]
        assert reconciler.at(instant) == ["slow"]
        assert len(reconciler.ticks) == 8
    finally:
        harness.controller.stop()
    assert reconciler.overlaps == []


def test_instants_the_interval_job_did_not_run_at_count_as_missed(tmp_path: Path) -> None:
    harness = Harness(tmp_path, hourly("a"), hourly("b"))
    reconciler = harness.reconciler
    harness.start()
    try:
        wait_until("the first ticks", lambda: len(reconciler.ticks) == 2)
        harness.instant()
        harness.idle()
        # The job ran three intervals later (APScheduler coalesced the two in between) and
        # 7.5 min after its instant: late (more than a tenth of the interval).
        with capture_logs() as logs:
            instant = harness.instant(3 * HOUR + 420)
            wait_until("the late ticks", lambda: len(reconciler.at(instant)) == 2)
            harness.idle()
        timing = harness.controller.tick_timing
        assert timing == {"late": 2, "missed": 4, "coalesced": 2}
        (late,) = [e for e in logs if e["event"] == "ticks_late"]
        assert late["rollouts"] == 2 and late["max_late_seconds"] == 450
        (missed,) = [e for e in logs if e["event"] == "ticks_missed"]
        assert missed["coalesced_instants"] == 2 and missed["rollouts"] == 4
    finally:
        harness.controller.stop()


def test_one_provider_call_per_instant_through_the_tick_pool(tmp_path: Path) -> None:
    harness = Harness(tmp_path, *(hourly(f"r{i}") for i in range(20)), measure=True)
    reconciler = harness.reconciler
    harness.start()
    try:
        wait_until("the first ticks", lambda: len(reconciler.ticks) == 20)
        harness.idle()
        assert len(harness.provider.calls) == 1 and len(harness.provider.calls[0]) == 20
        instant = harness.instant()
        wait_until("the instant's ticks", lambda: len(reconciler.at(instant)) == 20)
        harness.idle()
        assert len(harness.provider.calls) == 2  # one batch for the 20 rollouts' instant
    finally:
        harness.controller.stop()


def test_a_route_change_reacts_for_the_policy_of_that_route_only(tmp_path: Path) -> None:
    harness = Harness(tmp_path, hourly("a"), hourly("b", route="old"))
    reconciler = harness.reconciler
    controller = harness.controller
    controller.sync_policies()  # not started: only the reactions tick

    def pause(route: str, value: str) -> None:
        controller.on_route_change(
            RouteChange(namespace="ns", name=route, annotations={PAUSE_ANNOTATION: value})
        )

    def reactions() -> list[str]:
        return sorted(n for n, _, analysed in reconciler.ticks if not analysed)

    pause("old", "true")
    wait_until("the reaction", lambda: len(reactions()) == 1)
    assert reactions() == ["b"]
    harness.file.write_text(hourly("a") + hourly("b", route="new") + hourly("c", route="old"))
    controller.sync_policies()
    pause("old", "false")  # now c's route
    wait_until("the reaction", lambda: len(reactions()) == 2)
    pause("new", "true")
    wait_until("the reaction", lambda: len(reactions()) == 3)
    pause("a", "true")
    wait_until("the reaction", lambda: len(reactions()) == 4)
    time.sleep(0.1)
    assert reactions() == ["a", "b", "b", "c"]  # b follows its new route, not the old one
    pause("elsewhere", "true")  # no policy's route
    time.sleep(0.1)
    assert len(reactions()) == 4
    controller.stop()


def test_stop_lets_the_running_tick_end_and_runs_no_queued_one(tmp_path: Path) -> None:
    harness = Harness(tmp_path, hourly("slow"), hourly("b"), hourly("c"), workers=1)
    reconciler = harness.reconciler
    release = reconciler.hold["slow"] = threading.Event()
    harness.start()
    wait_until("slow's first tick", lambda: len(reconciler.ticks) == 1)
    stopper = threading.Thread(target=harness.controller.stop)
    stopper.start()
    time.sleep(0.1)
    assert stopper.is_alive()  # waits for the running tick
    release.set()
    stopper.join(5)
    assert not stopper.is_alive()
    assert [n for n, _, _ in reconciler.ticks] == ["slow"]
