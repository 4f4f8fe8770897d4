"""The client-side token bucket (client-go's QPS/burst) and the tick pool's size."""

from __future__ import annotations

import threading
import time

import pytest

from rollout.ratelimit import DEFAULT_BURST, DEFAULT_QPS, TokenBucket, tick_pool_size


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_burst_is_free_then_requests_are_spaced_at_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(3)] == [0, 0, 0]
    waits = [bucket.acquire() for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.1, 0.1])
    assert clock.now == pytest.approx(100.3)


def test_reservations_queue_up_for_concurrent_callers() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 2, clock=clock, sleep=clock.sleep)
    delays = [bucket.reserve() for _ in range(5)]  # five callers at the same instant
    assert delays == pytest.approx([0, 0, 0.01, 0.02, 0.03])
    assert bucket.waited == pytest.approx(0.06)


def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    clock.now += 3600  # an hour idle is still only a burst of 5
    assert [bucket.reserve() for _ in range(6)] == pytest.approx([0, 0, 0, 0, 0, 0.1])


def test_real_threads_never_go_faster_than_burst_plus_rate() -> None:
    bucket = TokenBucket(1000, 20)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = bucket.acquire()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(40)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 tokens at once, the other 20 at 1000/s: at least ~20 ms in all, however the threads
    # were scheduled (a busy machine can only make it slower).
    assert time.monotonic() - started >= 0.019
    assert sum(1 for w in waits if w == 0) >= 20
    assert len(waits) == 40


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_nonsense_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps, burst)


def test_pool_size_follows_the_qps_within_bounds_unless_configured() -> None:
    assert tick_pool_size(DEFAULT_QPS) == 10  # 500 requests/s at 20 ms each in flight
    assert tick_pool_size(5) == 2
    assert tick_pool_size(1e6) == 64
    assert tick_pool_size(DEFAULT_QPS, configured=1) == 1
    assert tick_pool_size(DEFAULT_QPS, configured=100) == 100
    with pytest.raises(ValueError):
        tick_pool_size(DEFAULT_QPS, configured=0)
    assert DEFAULT_BURST == 2 * DEFAULT_QPS
