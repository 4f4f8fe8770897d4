"""Client-side pacing of API requests, and the size of the tick pool. Pure (a clock and a sleep
are injected), so both are unit-tested without an API server.

`TokenBucket` is client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`: a bucket of
`burst` tokens refilled at `qps` per second; a request takes one token and, when none is left,
waits for it. Reservations are taken in order (a waiting caller's token is already counted),
so many threads asking at once are spread out at exactly `qps` after the burst.

client-go's defaults are qps 5 / burst 10 for a plain client, 50 / 100 for controllers that
raise them (kube-controller-manager uses 20 / 30); a thousand rollouts stepping in one tick is
a thousand writes plus their Events, so the controller's default is client-go's 50 / 100
scaled by 10: 500 / 1000 (a batch of 1000 steps fits in the burst, the API server's own
limits are 400 requests and 200 mutating requests in flight by default).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Final

DEFAULT_QPS: Final = 500.0
DEFAULT_BURST: Final = 1000
# A write round trip on a busy API server; Little's law turns QPS into requests in flight.
TYPICAL_ROUND_TRIP_SECONDS: Final = 0.02
MIN_POOL: Final = 2
MAX_POOL: Final = 64


class TokenBucket:
    """Thread-safe. `acquire()` blocks until a token is available and returns the wait."""

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not qps > 0 or not math.isfinite(qps):
            raise ValueError(f"qps must be a positive number, got {qps}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self.waited = 0.0  # seconds callers spent waiting, in all (for benchmarks)

    def reserve(self) -> float:
        """Take a token now and return how long to wait before using it (0: at once)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.qps)
            self._updated = now
            self._tokens -= 1
            delay = 0.0 if self._tokens >= 0 else -self._tokens / self.qps
            self.waited += delay
            return delay

    def acquire(self) -> float:
        delay = self.reserve()
        if delay > 0:
            self._sleep(delay)
        return delay


def tick_pool_size(
    qps: float, configured: int | None = None, round_trip: float = TYPICAL_ROUND_TRIP_SECONDS
) -> int:
    """Threads for the ticks of one batch: `configured` when given, else enough requests in
    flight to use `qps` at a typical round trip (Little's law), between 2 and 64. More would
    only queue on the token bucket (and on the interpreter lock) without finishing sooner."""
    if configured is not None:
        if configured < 1:
            raise ValueError(f"the tick pool needs at least 1 thread, got {configured}")
        return configured
    return max(MIN_POOL, min(MAX_POOL, math.ceil(qps * round_trip)))


__all__ = ["DEFAULT_BURST", "DEFAULT_QPS", "TokenBucket", "tick_pool_size"]
