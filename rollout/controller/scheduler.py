"""The scheduler loop: one APScheduler job per rollout policy at its analysis interval.

- Jobs of the same interval fire on the same epoch-aligned instants, and the first job of an
  instant measures every rollout of that interval in ONE provider call (AnalysisBatcher): the
  number of Prometheus queries per tick does not grow with the number of rollouts.
- `max_instances=1` per job and a lock per rollout: never two runs of one rollout at once,
  including the watch-triggered reactions to manual controls.
- Policy files are re-read every few seconds; a broken file is reported and the rollouts it
  held keep running on their last good version, the others are untouched.
- Route annotations are watched, so pause/resume/abort/promote take effect within seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPoolExecutor
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
from rollout.controller.state import RolloutPhase, judged_since, rollback_step_due
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


def utc_now() -> datetime:
    return datetime.now(UTC)


class AlignedIntervalTrigger(IntervalTrigger):  # type: ignore[misc]
    """An IntervalTrigger whose runs stay on the epoch-aligned instants even after a run at
    another time: APScheduler computes the next run as the previous one plus the interval, so
    the immediate first run of a newly loaded policy would shift every later tick of that
    rollout off the instants the other rollouts of its interval tick on (and off its batch)."""

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
        self._policies: dict[str, RolloutPolicy] = {}
        self._sources: dict[str, Path] = {}
        self._applied_rate_limits: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._state_lock = threading.Lock()
        self._controls_seen: dict[tuple[str, str], tuple[object, ...]] = {}
        self._last_slots: dict[str, int] = {}
        self.tick_timing = {"late": 0, "missed": 0}  # see _note_tick_timing
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reactions = ThreadPoolExecutor(max_workers=4, thread_name_prefix="react")
        # The ticks of one instant (one batch) run in this bounded pool: their reads come from
        # the watch's cache, so what they wait for is their write, and `tick_workers` writes
        # are in flight at once (the API client's token bucket paces them).
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": APSThreadPoolExecutor(max_workers=max(1, tick_workers))},
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
        log.info(
            "controller_started",
            policies=sorted(self._policies),
            leader_election=self._leader is not None,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
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
        """One policy, without copying them all (`policies` does) on every tick."""
        with self._state_lock:
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
        loaded = {p.name: p for p in result.policies}
        broken_files = {e.file for e in result.errors}
        with self._state_lock:
            old = dict(self._policies)
            new = dict(loaded)
            for name, policy in old.items():
                source = self._sources.get(name)
                # A file that is now broken keeps its last good policies running.
                if name not in new and source in broken_files and source.exists():
                    new[name] = policy
            self._policies = new
            self._sources = {
                **{n: s for n, s in self._sources.items() if n in new},
                **result.sources,
            }
        for name in old.keys() - new.keys():
            self._remove_job(name)
            log.info("policy_removed", rollout=name)
        for name, policy in new.items():
            previous = old.get(name)
            # The same object: its file did not change (the loader keeps unchanged parses).
            if previous is policy:
                continue
            if previous is None or previous.fingerprint() != policy.fingerprint():
                self._schedule(policy)
                self._apply_rate_limit(policy)
                log.info(
                    "policy_loaded" if previous is None else "policy_changed",
                    rollout=name,
                    route=f"{policy.spec.route.namespace}/{policy.spec.route.name}",
                    interval=format_duration(policy.spec.analysis.interval),
                )
        self.last_load = result
        return result

    def _schedule(self, policy: RolloutPolicy) -> None:
        interval = policy.spec.analysis.interval.total_seconds()
        self._remove_job(policy.name)  # replace_existing does not cover not-yet-started jobs
        self.scheduler.add_job(
            self.run_tick,
            AlignedIntervalTrigger(seconds=interval, start_date=_EPOCH, timezone=UTC),
            args=[policy.name],
            id=f"rollout:{policy.name}",
            replace_existing=True,
            next_run_time=self._clock(),  # start (or follow an edit) now, not an interval late
        )

    def _remove_job(self, name: str) -> None:
        job = self.scheduler.get_job(f"rollout:{name}")
        if job is not None:
            job.remove()

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
        with self._state_lock:
            return self._locks.setdefault(name, threading.Lock())

    def _group(self, interval: float) -> list[RolloutPolicy]:
        with self._state_lock:
            return [
                p
                for p in self._policies.values()
                if p.spec.analysis.interval.total_seconds() == interval
            ]

    def run_tick(self, name: str) -> TickResult | None:
        """The scheduled tick: `now` is the tick's aligned instant, so that every rollout of an
        interval shares one analysis batch and a step lasts exactly whole intervals."""
        policy = self._policy(name)
        if policy is None:
            return None
        interval = policy.spec.analysis.interval.total_seconds()
        started = self._clock()
        slot = tick_slot(started, interval)
        self._note_tick_timing(name, slot, interval, started)
        with self._lock_for(name):
            result = self._reconciler.tick(
                policy,
                slot_start(slot, interval),
                lambda state: self.batcher.measurements(
                    policy, slot, lambda: self._group(interval), judged_since(state, policy)
                ),
            )
        self._after_tick(name, policy, result)
        return result

    def _note_tick_timing(self, name: str, slot: int, interval: float, started: datetime) -> None:
        """Count ticks that start late (more than a tenth of the interval, at least 1 s,
        after their instant) and instants a rollout had no tick at (its previous tick was
        still running, or the process was busy: APScheduler coalesces them into one)."""
        late = (started - slot_start(slot, interval)).total_seconds()
        with self._state_lock:
            previous = self._last_slots.get(name)
            self._last_slots[name] = slot
            # The first tick runs when the policy is loaded, not on an instant.
            is_late = previous is not None and late > max(1.0, interval / 10)
            missed = slot - previous - 1 if previous is not None and slot > previous + 1 else 0
            self.tick_timing["late"] += is_late
            self.tick_timing["missed"] += missed
        if is_late:
            log.warning("tick_late", rollout=name, late_seconds=round(late, 3))
        if missed:
            log.warning("tick_missed", rollout=name, instants=missed)

    def react(self, name: str) -> TickResult | None:
        """A reaction to a manual control (or a weight verification): decide now, without
        analysis."""
        policy = self.policies.get(name)
        if policy is None:
            return None
        with self._lock_for(name):
            return self._reconciler.tick(policy, self._clock(), None)

    def request_tick(self, name: str) -> None:
        """A prompt tick (without analysis) for rollout `name`, e.g. when a gate answered."""
        if not self._stop.is_set():
            self._reactions.submit(self._react_and_follow, name)

    def _react_and_follow(self, name: str) -> None:
        policy = self.policies.get(name)
        result = self.react(name)
        if policy is not None:
            self._after_tick(name, policy, result)

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
        policy = self.policies.get(name)
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
        policy = self.policies.get(name)
        result = self.react(name)
        if policy is not None:
            self._after_tick(name, policy, result, attempt)

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
            targets = [
                p.name
                for p in self._policies.values()
                if (p.spec.route.namespace, p.spec.route.name) == key
            ]
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
