"""The scheduler loop: one APScheduler job per distinct analysis interval.

- The job of an interval (`interval:{seconds}`) fires on the epoch-aligned instants of that
  interval and queues a tick of every rollout of the interval; `tick_workers` threads run the
  queue. The first tick of an instant measures every rollout of that interval in ONE provider
  call (AnalysisBatcher): the number of Prometheus queries per tick does not grow with the
  number of rollouts, and the scheduler's own cost per rollout and instant is a queue entry
  (not an APScheduler job, its run times, locks and callbacks).
- A newly loaded or changed policy is queued at once, not an interval late.
- At most one scheduled tick of a rollout is queued or running: a rollout whose tick of the
  previous instant is still running is skipped at the next one, one still queued ticks once,
  for the newest instant; either way the instant it had no tick at is counted as missed
  (`tick_timing`) and logged, one line per instant. A lock per rollout: never two runs of one
  rollout at once, including the watch-triggered reactions to manual controls.
- Policy files are re-read every few seconds; a broken file is reported and the rollouts it
  held keep running on their last good version, the others are untouched.
- Route annotations are watched, so pause/resume/abort/promote take effect within seconds.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from rollout.analysis.provider import (
    MIN_EFFECTIVE_WINDOW,
    AnalysisRequest,
    Measurements,
    MetricsProvider,
)
from rollout.analysis.verdicts import Measurement
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
)
from rollout.controller.observability import ControllerMetrics
from rollout.controller.ports import LeaderElector, RouteChange, RouteWatcher
from rollout.controller.reconciler import Reconciler, TickResult
from rollout.controller.state import (
    RolloutPhase,
    judged_since,
    policy_fingerprint,
    rollback_step_due,
)
from rollout.gateway.errors import AIGatewayError
from rollout.gateway.models import RateLimitConfig
from rollout.gateway.port import AIGatewayClient
from rollout.policy.loading import LoadResult, load_policy_paths
from rollout.policy.schema import RolloutPolicy, format_duration

log = structlog.get_logger("rollout.scheduler")

_EPOCH = datetime.fromtimestamp(0, UTC)
_VERIFY_FIRST_DELAY = 0.05
_VERIFY_MAX_DELAY = 5.0
_CONTROL_KEYS = (PAUSE_ANNOTATION, ABORT_ANNOTATION, PROMOTE_ANNOTATION, RESUME_ANNOTATION)
_LOGGED_NAMES = 10  # rollouts named in a per-instant log line (the count has them all)


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlignedIntervalTrigger(IntervalTrigger):  # type: ignore[misc]
    """An IntervalTrigger whose runs stay on the epoch-aligned instants even after a run at
    another time: APScheduler computes the next run as the previous one plus the interval, so
    a run off the instants (a job given `next_run_time`, a job added while the process was
    busy) would shift every later run of that interval's job off the instants, and the ticks
    of its rollouts off the slots their batch and their steps are counted in."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            now = max(now, previous_fire_time + timedelta(microseconds=1))
        fire: datetime | None = super().get_next_fire_time(None, now)
        return fire


def tick_slot(now: datetime, interval_seconds: float) -> int:
    """The index of the interval-aligned tick `now` belongs to."""
    return math.floor((now - _EPOCH).total_seconds() / interval_seconds)


def slot_start(slot: int, interval_seconds: float) -> datetime:
    return datetime.fromtimestamp(slot * interval_seconds, UTC)


class AnalysisBatcher:
    """Measures all rollouts of one interval together, once per tick slot.

    Each rollout's range is clipped to the traffic since its last weight write plus its
    warm-up (`note` keeps that instant per rollout, from every tick's state), so a step is
    never judged on traffic from before its weights; rollouts clipped alike share queries.
    """

    def __init__(self, provider: MetricsProvider, metrics: ControllerMetrics) -> None:
        self._provider = provider
        self._metrics = metrics
        self._lock = threading.Lock()
        self._cache: dict[tuple[float, int], Measurements] = {}
        self._judged_since: dict[str, datetime] = {}
        self.batches = 0  # provider calls so far (for tests and benchmarks)

    def note(self, name: str, since: datetime | None) -> None:
        """The start of the traffic rollout `name` may be judged on (None: forget it)."""
        # Most ticks note what is noted already (nothing moved): no lock for that.
        if since is None:
            if name not in self._judged_since:
                return
        elif self._judged_since.get(name) == since:
            return
        with self._lock:
            if since is None:
                self._judged_since.pop(name, None)
            else:
                self._judged_since[name] = since

    def _request(self, policy: RolloutPolicy, at: datetime) -> AnalysisRequest | None:
        since = self._judged_since.get(policy.name)
        if since is None:
            return AnalysisRequest.for_policy(policy)  # not seen yet (restart): whole window
        effective = at - since
        if effective < MIN_EFFECTIVE_WINDOW:
            return None  # nothing settled to judge yet; its check is not due either
        return AnalysisRequest.for_policy(policy, effective_window=effective)

    def measurements(
        self,
        policy: RolloutPolicy,
        slot: int,
        group: Callable[[], Sequence[RolloutPolicy]],
        since: datetime | None = None,
    ) -> Mapping[str, Measurement]:
        interval = policy.spec.analysis.interval.total_seconds()
        key = (interval, slot)
        at = slot_start(slot, interval)
        if since is not None:
            self.note(policy.name, since)
        with self._lock:
            if key not in self._cache:
                members = {p.name: p for p in group()}
                members.setdefault(policy.name, policy)
                requests = [r for p in members.values() if (r := self._request(p, at))]
                with self._metrics.analysis_duration.time():
                    self._cache[key] = self._provider.measure(requests)
                self.batches += 1
                # Only the current and the previous slot can still be asked for.
                for old in [k for k in self._cache if k[0] == interval and k[1] < slot - 1]:
                    del self._cache[old]
            return self._cache[key].get(policy.name, {})


class _Queued(NamedTuple):
    """A scheduled tick waiting for a tick worker."""

    interval: float  # the interval it was queued for (the policy's may have changed since)
    slot: int
    instant: datetime | None  # the aligned instant it is for; None: a first tick (load, edit)


def interval_job_id(interval: float) -> str:
    """The APScheduler job that queues the ticks of every rollout of `interval` (seconds)."""
    return f"interval:{interval:g}"


class RolloutController:
    """Wires policies, the reconciler, the scheduler, the watch and leader election."""

    def __init__(
        self,
        *,
        gateway: AIGatewayClient,
        provider: MetricsProvider,
        reconciler: Reconciler,
        policy_paths: Sequence[Path],
        leader: LeaderElector | None = None,
        watcher: RouteWatcher | None = None,
        watch_namespaces: Sequence[str] | None = None,
        metrics: ControllerMetrics | None = None,
        reload_seconds: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
        tick_workers: int = 10,
    ) -> None:
        self._gateway = gateway
        self._reconciler = reconciler
        self._paths = list(policy_paths)
        self._leader = leader
        self._watcher = watcher
        self._watch_namespaces = list(watch_namespaces) if watch_namespaces else None
        self.metrics = metrics or ControllerMetrics()
        self.batcher = AnalysisBatcher(provider, self.metrics)
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._policies: dict[str, RolloutPolicy] = {}  # replaced, never changed in place
        # Indexes of _policies, rebuilt when they change: the rollouts of each interval and
        # those of each route, so that neither an instant nor a watch event scans them all.
        self._groups: dict[float, dict[str, RolloutPolicy]] = {}
        self._by_route: dict[tuple[str, str], tuple[str, ...]] = {}
        self._interval_jobs: set[float] = set()
        self._sources: dict[str, Path] = {}
        self._applied_rate_limits: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._state_lock = threading.Lock()
        self._controls_seen: dict[tuple[str, str], tuple[object, ...]] = {}
        # Scheduled ticks: at most one queued per rollout (_queue holds the names in order,
        # _queued what each is for), and those running (a count: an edited policy's first
        # tick may queue while its previous tick runs; the rollout's lock orders them).
        self._queue: deque[str] = deque()
        self._queued: dict[str, _Queued] = {}
        self._running: dict[str, int] = {}
        self._tick_workers = max(1, tick_workers)
        self._drainers = 0  # tick workers taking ticks off the queue
        self._ticking = False  # set by start(): before, ticks are only queued
        self._last_instants: dict[float, int] = {}  # the slot each interval's job queued last
        self._late: tuple[int, float, list[str]] = (0, 0.0, [])  # not logged yet
        # late: ticks that started late; missed: instants a rollout had no tick at (its
        # previous tick still running, or still queued, or the interval's job did not run);
        # coalesced: instants an interval's job did not run at. See _tick_interval.
        self.tick_timing = {"late": 0, "missed": 0, "coalesced": 0}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reactions = ThreadPoolExecutor(max_workers=4, thread_name_prefix="react")
        # The ticks of one instant (one batch) run in this bounded pool: their reads come from
        # the watch's cache, so what they wait for is their write, and `tick_workers` writes
        # are in flight at once (the API client's token bucket paces them).
        self._ticks = ThreadPoolExecutor(max_workers=self._tick_workers, thread_name_prefix="tick")
        # APScheduler runs the interval jobs (a queue append per rollout), the policy reload,
        # and the weight verifications and gradual rollback steps.
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": APSThreadPoolExecutor(max_workers=self._tick_workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.last_load: LoadResult | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self, leader_wait: float = 2.0) -> None:
        # Leader election and the watch first: the first ticks run at once, and a tick that
        # finds this replica not (yet) leading waits a whole interval; one that finds the
        # route cache synced does no GET.
        if self._leader is not None:
            self._spawn("leader-election", self._leader.run, self._stop)
        if self._watcher is not None:
            self._spawn(
                "route-watch",
                self._watcher.watch,
                self._watched_namespaces(),
                self.on_route_change,
                self._stop,
            )
        deadline = time.monotonic() + leader_wait
        while self._leader is not None and not self._leader.is_leader():
            if time.monotonic() > deadline or self._stop.wait(0.05):
                break  # a standby replica: it ticks, skips, and takes over when it leads
        self.sync_policies()
        self.scheduler.add_job(
            self.sync_policies,
            IntervalTrigger(seconds=self._reload_seconds),
            id="sync-policies",
            replace_existing=True,
        )
        self.scheduler.start()
        with self._state_lock:
            self._ticking = True  # the first ticks, queued by sync_policies, run now
            workers = self._workers_wanted()
        self._start_workers(workers)
        log.info(
            "controller_started",
            policies=sorted(self._policies),
            leader_election=self._leader is not None,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        # The tick workers finish the tick they run and leave the queue.
        self._ticks.shutdown(wait=True, cancel_futures=True)
        self._reactions.shutdown(wait=True)
        for thread in self._threads:
            thread.join(timeout=10)
        log.info("controller_stopped")

    def healthy(self) -> bool:
        return self.scheduler.running and all(t.is_alive() for t in self._threads)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watched_namespaces(self) -> list[str] | None:
        if self._watch_namespaces:
            return self._watch_namespaces
        # Without a list, watch every namespace (one cluster-wide watch is cheaper than many).
        return None

    # ---- policies -----------------------------------------------------------------------
    @property
    def policies(self) -> dict[str, RolloutPolicy]:
        with self._state_lock:
            return dict(self._policies)

    def _policy(self, name: str) -> RolloutPolicy | None:
        """One policy, without copying them all (`policies` does) on every tick. No lock:
        `_policies` is replaced whole, never changed in place, so any dict read is whole."""
        return self._policies.get(name)

    def sync_policies(self) -> LoadResult:
        result = load_policy_paths(self._paths)
        for error in result.errors:
            log.error(
                "policy_error",
                file=str(error.file),
                policy=error.policy_name,
                field=error.field_path,
                line=error.line,
                message=error.message,
            )
        self.metrics.policy_errors.set(len(result.errors))
        if result is self.last_load:
            # No file changed since the last sync (the loader's very result): the policies,
            # sources and jobs it led to stand. At 10,000 policies, going through them again
            # every few seconds cost ~0.1 s of CPU with the state lock held.
            return result
        loaded = {p.name: p for p in result.policies}
        broken_files = {e.file for e in result.errors}
        with self._state_lock:
            old = self._policies
            new = dict(loaded)
            for name, policy in old.items():
                source = self._sources.get(name)
                # A file that is now broken keeps its last good policies running.
                if name not in new and source in broken_files and source.exists():
                    new[name] = policy
            changed = new.keys() != old.keys() or any(
                old.get(name) is not policy for name, policy in new.items()
            )
            if changed:
                self._policies = new
                self._reindex()
            self._sources = {
                **{n: s for n, s in self._sources.items() if n in new},
                **result.sources,
            }
        if not changed:
            self.last_load = result
            return result
        for name in old.keys() - new.keys():
            # Its queued tick, if any, finds no policy and is dropped; its series go from
            # /metrics (a gauge of a rollout no policy runs would be read as current).
            self._reconciler.forget(old[name])
            log.info("policy_removed", rollout=name)
        first: list[str] = []
        for name, policy in new.items():
            previous = old.get(name)
            # The same object: its file did not change (the loader keeps unchanged parses).
            if previous is policy:
                continue
            if previous is None or policy_fingerprint(previous) != policy_fingerprint(policy):
                first.append(name)
                self._apply_rate_limit(policy)
                log.info(
                    "policy_loaded" if previous is None else "policy_changed",
                    rollout=name,
                    route=f"{policy.spec.route.namespace}/{policy.spec.route.name}",
                    interval=format_duration(policy.spec.analysis.interval),
                )
        self._schedule_intervals()
        self._queue_first_ticks(first)
        self.last_load = result
        return result

    def _reindex(self) -> None:
        """Rebuild the indexes of `_policies` (with `_state_lock` held)."""
        groups: dict[float, dict[str, RolloutPolicy]] = {}
        routes: dict[tuple[str, str], list[str]] = {}
        for name, policy in self._policies.items():
            groups.setdefault(policy.spec.analysis.interval.total_seconds(), {})[name] = policy
            route = policy.spec.route
            routes.setdefault((route.namespace, route.name), []).append(name)
        self._groups = groups
        self._by_route = {key: tuple(names) for key, names in routes.items()}

    def _schedule_intervals(self) -> None:
        """One job per interval that has rollouts; none for an interval without."""
        with self._state_lock:
            wanted = set(self._groups)
        for interval in sorted(wanted - self._interval_jobs):
            self.scheduler.add_job(
                self._tick_interval,
                AlignedIntervalTrigger(seconds=interval, start_date=_EPOCH, timezone=UTC),
                args=[interval],
                id=interval_job_id(interval),
                replace_existing=True,
                coalesce=True,
                max_instances=1,
            )
        for interval in self._interval_jobs - wanted:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(interval_job_id(interval))
            with self._state_lock:
                self._last_instants.pop(interval, None)
        self._interval_jobs = wanted

    def _apply_rate_limit(self, policy: RolloutPolicy) -> None:
        spec = policy.spec.rate_limit
        if spec is None or spec.token_budget is None:
            return
        route = policy.spec.route
        config = RateLimitConfig(
            tenant_header=spec.tenant_header,
            token_budget=spec.token_budget,
            budget_period=spec.budget_period,
            requests_per_min=spec.requests_per_minute,
        )
        try:
            self._gateway.apply_rate_limit_policy(route.namespace, route.name, config)
            log.info(
                "rate_limit_applied",
                rollout=policy.name,
                route=route.name,
                tokens=spec.token_budget,
                period=spec.budget_period.value,
            )
        except AIGatewayError as exc:
            log.error("rate_limit_failed", rollout=policy.name, route=route.name, error=str(exc))

    # ---- ticks --------------------------------------------------------------------------
    def _lock_for(self, name: str) -> threading.Lock:
        lock = self._locks.get(name)
        if lock is None:
            with self._state_lock:
                lock = self._locks.setdefault(name, threading.Lock())
        return lock

    def _group(self, interval: float) -> list[RolloutPolicy]:
        with self._state_lock:
            members = self._groups.get(interval)
            return list(members.values()) if members else []

    def _queue_first_ticks(self, names: Sequence[str]) -> None:
        """Tick newly loaded or changed policies at once, not at their next instant (before
        start(), they run when it starts)."""
        if not names:
            return
        now = self._clock()
        with self._state_lock:
            for name in names:
                policy = self._policies.get(name)
                if policy is None:
                    continue
                interval = policy.spec.analysis.interval.total_seconds()
                waiting = self._queued.get(name)
                if waiting is not None and waiting.interval == interval:
                    continue  # its queued tick reads the new policy when it runs
                if waiting is None:
                    self._queue.append(name)
                self._queued[name] = _Queued(interval, tick_slot(now, interval), None)
            workers = self._workers_wanted()
        self._start_workers(workers)

    def _tick_interval(self, interval: float) -> None:
        """The job of an interval, at each of its aligned instants: queue a tick of each of its
        rollouts. One whose tick is still queued ticks once, for this instant; one whose tick
        still runs has none for this instant. Both count as missed (the rollout had no tick at
        an instant), and so does every rollout of the interval for each instant the job itself
        did not run at (the process was too busy: APScheduler coalesced its runs)."""
        if self._stop.is_set():
            return
        slot = tick_slot(self._clock(), interval)
        instant = slot_start(slot, interval)
        entry = _Queued(interval, slot, instant)
        running = superseded = coalesced = 0
        names: list[str] = []
        with self._state_lock:
            members = self._groups.get(interval)
            previous = self._last_instants.get(interval)
            if not members or (previous is not None and slot <= previous):
                return  # no rollouts, or this instant's ticks are queued already
            self._last_instants[interval] = slot
            if previous is not None:
                coalesced = slot - previous - 1
            queue, queued, ticking = self._queue, self._queued, self._running
            for name in members:
                waiting = queued.get(name)
                if waiting is not None:
                    queued[name] = entry
                    if waiting.instant is None:
                        continue  # a first tick: now on this instant, nothing missed
                    superseded += 1
                elif name in ticking:
                    running += 1
                else:
                    queued[name] = entry
                    queue.append(name)
                    continue
                if len(names) < _LOGGED_NAMES:
                    names.append(name)
            missed = running + superseded + coalesced * len(members)
            self.tick_timing["missed"] += missed
            self.tick_timing["coalesced"] += coalesced
            workers = self._workers_wanted()
            late = self._take_late()
        self._start_workers(workers)
        self._log_late(late)
        if missed:
            log.warning(
                "ticks_missed",
                interval=format_duration(timedelta(seconds=interval)),
                instant=instant.isoformat(),
                rollouts=missed,
                still_running=running,
                still_queued=superseded,
                coalesced_instants=coalesced,
                names=names,
            )

    def _workers_wanted(self) -> int:
        """How many more tick workers the queue needs (with `_state_lock` held); counted as
        started."""
        if not self._ticking or self._stop.is_set():
            return 0
        wanted = min(self._tick_workers, len(self._queue)) - self._drainers
        if wanted <= 0:
            return 0
        self._drainers += wanted
        return wanted

    def _start_workers(self, count: int) -> None:
        for _ in range(count):
            try:
                self._ticks.submit(self._drain)
            except RuntimeError:  # stopped
                with self._state_lock:
                    self._drainers -= 1

    def _drain(self) -> None:
        """A tick worker: runs queued ticks until the queue is empty."""
        # The tick just run is counted off in the same hold of the state lock that takes the
        # next one: one acquisition per tick, not two, of a lock every tick worker wants.
        finished: str | None = None
        try:
            while True:
                with self._state_lock:
                    if finished is not None:
                        self._finished(finished)
                        finished = None
                    if not self._queue or self._stop.is_set():
                        self._drainers -= 1
                        late = self._take_late() if self._drainers == 0 else None
                        break
                    name = self._queue.popleft()
                    entry = self._queued.pop(name)
                    policy = self._policies.get(name)
                    if policy is None:
                        continue  # removed since
                    self._running[name] = self._running.get(name, 0) + 1
                    lock = self._locks.get(name) or self._locks.setdefault(name, threading.Lock())
                try:
                    self._run_queued(name, policy, entry, lock)
                except Exception:
                    log.exception("tick_failed", rollout=name)
                finally:
                    finished = name
        finally:
            if finished is not None:  # left by an exception no tick catches
                with self._state_lock:
                    self._finished(finished)
        self._log_late(late)

    def _finished(self, name: str) -> None:
        """A tick of `name` ended (with `_state_lock` held)."""
        count = self._running.pop(name) - 1
        if count:
            self._running[name] = count

    def _run_queued(
        self, name: str, policy: RolloutPolicy, entry: _Queued, lock: threading.Lock
    ) -> None:
        interval = policy.spec.analysis.interval.total_seconds()
        slot, instant = entry.slot, entry.instant
        started = self._clock()
        if interval != entry.interval:  # the policy's interval changed since it was queued
            slot, instant = tick_slot(started, interval), None
        if instant is not None:
            # Late: more than a tenth of the interval, at least 1 s, after its instant.
            late = (started - instant).total_seconds()
            if late > max(1.0, interval / 10):
                with self._state_lock:
                    self.tick_timing["late"] += 1
                    count, worst, names = self._late
                    if len(names) < _LOGGED_NAMES:
                        names.append(name)
                    self._late = (count + 1, max(worst, late), names)
        at = instant if instant is not None else slot_start(slot, interval)
        self._tick(name, policy, interval, slot, at, lock)

    def _take_late(self) -> tuple[int, float, list[str]] | None:
        """The late ticks not logged yet (with `_state_lock` held)."""
        late = self._late
        if not late[0]:
            return None
        self._late = (0, 0.0, [])
        return late

    @staticmethod
    def _log_late(late: tuple[int, float, list[str]] | None) -> None:
        if late is not None:
            count, worst, names = late
            log.warning("ticks_late", rollouts=count, max_late_seconds=round(worst, 3), names=names)

    def run_tick(self, name: str, slot: int | None = None) -> TickResult | None:
        """A scheduled tick of rollout `name`, for the aligned instant `slot` (default: the
        one `now` belongs to): `now` is that instant, so that every rollout of an interval
        shares one analysis batch and a step lasts exactly whole intervals."""
        policy = self._policy(name)
        if policy is None:
            return None
        interval = policy.spec.analysis.interval.total_seconds()
        if slot is None:
            slot = tick_slot(self._clock(), interval)
        at = slot_start(slot, interval)
        return self._tick(name, policy, interval, slot, at, self._lock_for(name))

    def _tick(
        self,
        name: str,
        policy: RolloutPolicy,
        interval: float,
        slot: int,
        at: datetime,
        lock: threading.Lock,
    ) -> TickResult | None:
        with lock:
            result = self._reconciler.tick(
                policy,
                at,
                lambda state: self.batcher.measurements(
                    policy, slot, lambda: self._group(interval), judged_since(state, policy)
                ),
            )
        self._after_tick(name, policy, result)
        return result

    def react(self, name: str) -> TickResult | None:
        """A reaction to a manual control (or a weight verification): decide now, without
        analysis."""
        policy = self._policy(name)
        return None if policy is None else self._react(name, policy)

    def _react(self, name: str, policy: RolloutPolicy) -> TickResult | None:
        with self._lock_for(name):
            return self._reconciler.tick(policy, self._clock(), None)

    def request_tick(self, name: str) -> None:
        """A prompt tick (without analysis) for rollout `name`, e.g. when a gate answered."""
        if not self._stop.is_set():
            self._reactions.submit(self._react_and_follow, name)

    def _react_and_follow(self, name: str, attempt: int = 0) -> None:
        policy = self._policy(name)
        if policy is not None:
            self._after_tick(name, policy, self._react(name, policy), attempt)

    def _after_tick(
        self, name: str, policy: RolloutPolicy, result: TickResult | None, attempt: int = 0
    ) -> None:
        decision = result.decision if result is not None else None
        if decision is not None:
            # The next batch clips this rollout's range to its newest weights.
            self.batcher.note(name, judged_since(decision.state, policy))
        self._follow_up(name, result, attempt)

    def _follow_up(self, name: str, result: TickResult | None, attempt: int = 0) -> None:
        """After weights are written, look again soon (50 ms, doubling up to 5 s) until the
        generated HTTPRoute carries them, instead of a whole interval later: a step's
        analysis window starts once they are verified."""
        decision = result.decision if result is not None else None
        if decision is None or self._stop.is_set():
            return
        policy = self._policy(name)
        step_due = rollback_step_due(decision.state, policy) if policy is not None else None
        if step_due is not None:
            # A gradual rollback steps at its own interval, not the analysis interval.
            self.scheduler.add_job(
                self._react_and_follow,
                DateTrigger(run_date=max(step_due, datetime.now(UTC))),
                args=[name],
                id=f"rollback:{name}",
                replace_existing=True,
            )
            return
        if (
            not decision.state.awaiting_verification
            or decision.state.phase is not RolloutPhase.PROGRESSING
        ):
            return
        delay = min(_VERIFY_FIRST_DELAY * 2**attempt, _VERIFY_MAX_DELAY)
        self.scheduler.add_job(
            self._verify,
            DateTrigger(run_date=datetime.now(UTC) + timedelta(seconds=delay)),
            args=[name, attempt + 1],
            id=f"verify:{name}",
            replace_existing=True,
        )

    def _verify(self, name: str, attempt: int) -> None:
        self._react_and_follow(name, attempt)

    def on_route_change(self, change: RouteChange) -> None:
        # What a reaction is for: manual controls, and the gateway accepting or refusing the
        # route (a rollout held on it carries on at once, or stops moving traffic at once).
        controls = (
            *(change.annotations.get(k) for k in _CONTROL_KEYS),
            change.gateway_condition,
        )
        key = (change.namespace, change.name)
        with self._state_lock:
            seen = self._controls_seen.get(key)
            self._controls_seen[key] = controls
            targets = self._by_route.get(key, ())
        # Our own writes (weights, state) come back as changes too; only controls matter here.
        # A route first seen without any control needs no reaction: its tick handles it.
        first_sight_without_controls = seen is None and not any(controls[: len(_CONTROL_KEYS)])
        if change.deleted or seen == controls or not targets or first_sight_without_controls:
            return
        log.info(
            "route_change_seen",
            namespace=change.namespace,
            route=change.name,
            controls={k: v for k, v in zip(_CONTROL_KEYS, controls, strict=False) if v},
            gateway_condition=change.gateway_condition,
        )
        for name in targets:
            self._reactions.submit(self._react_and_follow, name)
