"""An interval's job stays on the epoch-aligned instants of its interval, also after a run at
another time (APScheduler's IntervalTrigger would add the interval to that run and tick off the
instants, and the slots, every rollout of the interval is measured and stepped on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.interval import IntervalTrigger

from rollout.controller.scheduler import AlignedIntervalTrigger

EPOCH = datetime.fromtimestamp(0, UTC)


def at(seconds: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def test_after_an_off_instant_run_the_next_run_is_the_next_aligned_instant() -> None:
    trigger = AlignedIntervalTrigger(seconds=30, start_date=EPOCH, timezone=UTC)
    first = at(7.25)  # a run 7.25 s into an interval
    assert trigger.get_next_fire_time(first, first) == at(30)
    # APScheduler's own trigger would drift: 37.25 s, 67.25 s, ...
    plain = IntervalTrigger(seconds=30, start_date=EPOCH, timezone=UTC)
    assert plain.get_next_fire_time(first, first) == at(37.25)


def test_a_run_on_the_instant_is_followed_by_the_next_one_not_itself() -> None:
    trigger = AlignedIntervalTrigger(seconds=30, start_date=EPOCH, timezone=UTC)
    assert trigger.get_next_fire_time(at(30), at(30)) == at(60)
    assert trigger.get_next_fire_time(None, at(30)) == at(30)
    # A late run (the host was busy) goes on with the next instant, not late forever.
    assert trigger.get_next_fire_time(at(60), at(61.5)) == at(90)
