"""KubeEventRecorder: the EventRecorder port as core/v1 Events.

Events are advice for `kubectl describe` / `kubectl get events`: `record` never raises, every
failure is logged and dropped. With `workers=0` writes are synchronous and serialized by one
lock, each bounded by a short request timeout. With `workers=N` (what the controller uses)
`record` only puts the Event on a bounded queue and returns: N sender threads write them, so a
thousand steps in one tick neither wait for a thousand Event round trips nor make them one after
the other (client-go's broadcaster also writes Events off the caller's path). A sender writes
what has queued meanwhile (up to `kubehttp.PIPELINE_LIMIT` Events) in one pipelined write, so a
burst costs one wait per write, not one per Event. Events of one object always go to the same
sender, in order, so counting up a repeated Event stays exact (an Event repeated within one
write waits for the answer to the first). A
full queue drops the Event with a warning (a burst bigger than the queue is not worth blocking
a tick for); `flush` waits for the queues, `close` stops the senders.

Deduplication is a simplified version of client-go's EventCorrelator: an Event identical to one
this recorder wrote in the last 10 minutes (same object, type, reason and message) is not
created again; the existing Event's `count` and `lastTimestamp` are patched instead. The memory
is a small LRU per recorder, so a restarted controller starts new Events, as client-go does.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import structlog
import urllib3
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.controller.ports import ObjectRef
from rollout.controller.state import EventType
from rollout.gateway.errors import error_from_status
from rollout.kubehttp import PIPELINE_LIMIT

log = structlog.get_logger("rollout.events")

DEFAULT_COMPONENT: Final = "rollout-controller"
# events.k8s.io/v1 refuses a note longer than 1024 bytes; core/v1 is laxer, but kubectl and
# the events API show the same text, so the stricter limit applies to both.
MESSAGE_LIMIT_BYTES: Final = 1024
DEDUPE_WINDOW_SECONDS: Final = 600.0
CACHE_SIZE: Final = 1024
_NAME_LIMIT: Final = 253  # metadata.name is a DNS subdomain
_ELLIPSIS: Final = "..."

_Key = tuple[str, str, str, str, str, str, str, str]
_Item = tuple[ObjectRef, str, str, str]
DEFAULT_QUEUE_SIZE: Final = 10_000


def truncate_message(message: str, limit: int = MESSAGE_LIMIT_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes, never inside a multi-byte character.

    A cut message ends in "..." so a reader knows text is missing.
    """
    encoded = message.encode("utf-8")
    if len(encoded) <= limit:
        return message
    # errors="ignore" drops the partial character the byte cut may leave at the end.
    head = encoded[: limit - len(_ELLIPSIS)].decode("utf-8", errors="ignore")
    return head + _ELLIPSIS


def rfc3339(moment: datetime) -> str:
    """A metav1.Time: RFC 3339 in UTC, whole seconds (the API drops sub-second precision)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Written:
    """What this recorder last wrote for one deduplication key."""

    namespace: str
    name: str
    count: int
    recorded_at: float  # the monotonic clock at the last successful write


@dataclass(frozen=True)
class _Planned:
    """One Event write, prepared: a create (`counts_up` None) or a count up of `counts_up`."""

    about: ObjectRef
    reason: str
    message: str
    type_: str
    key: _Key
    call: kubeapi.Call
    name: str  # the Event's
    count: int  # its count once written
    counts_up: _Written | None
    started: float  # the monotonic clock when it was planned


class KubeEventRecorder:
    """EventRecorder over POST/PATCH /api/v1/namespaces/{ns}/events. Thread-safe."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        component: str = DEFAULT_COMPONENT,
        host: str | None = None,
        *,
        dedupe_window: float = DEDUPE_WINDOW_SECONDS,
        cache_size: int = CACHE_SIZE,
        request_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        workers: int = 0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        if workers < 0 or queue_size < 1:
            raise ValueError(f"workers >= 0 and queue_size >= 1, got {workers}, {queue_size}")
        self._api = api_client
        self.component = component
        self.host = host or socket.gethostname()
        self._dedupe_window = dedupe_window
        self._cache_size = cache_size
        self._timeout = request_timeout
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()  # the dedupe memory and the name clock
        self._send_lock = threading.Lock()  # synchronous mode: one write at a time
        self._written: OrderedDict[_Key, _Written] = OrderedDict()
        self._last_name_ns = 0
        self.dropped = 0  # Events not recorded because the queue was full
        per_worker = max(1, queue_size // max(1, workers))
        self._queues: list[queue.Queue[_Item | None]] = [
            queue.Queue(per_worker) for _ in range(workers)
        ]
        self._workers = [
            threading.Thread(target=self._drain, args=(q,), name=f"events-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for worker in self._workers:
            worker.start()

    def record(self, about: ObjectRef, reason: str, message: str, type: EventType) -> None:
        """Create (or count up) an Event about `about`. Never raises; with workers, never
        waits for the API server either."""
        if not self._queues:
            with self._send_lock:
                self._deliver([(about, reason, message, str(type))])
            return
        shard = zlib.crc32(f"{about.namespace}/{about.name}".encode()) % len(self._queues)
        try:
            self._queues[shard].put_nowait((about, reason, message, str(type)))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("event_dropped", object=_describe(about), reason=reason, queue="full")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued Event is written (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        for q in self._queues:
            with q.all_tasks_done:
                while q.unfinished_tasks:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    q.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then stop the senders."""
        self.flush(timeout)
        for q in self._queues:
            # Full: a sender stuck on a dead API server; it is a daemon thread.
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
        for worker in self._workers:
            worker.join(max(0.1, timeout / 10))

    def _drain(self, q: queue.Queue[_Item | None]) -> None:
        while True:
            # What queued meanwhile goes in the same pipelined write: a burst of Events costs
            # a wait per write, not one per Event.
            batch = [q.get()]
            while len(batch) < PIPELINE_LIMIT:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._deliver([item for item in batch if item is not None])
            finally:
                for _ in batch:
                    q.task_done()
            if None in batch:  # close(): queued after the last Event
                return

    def _deliver(self, items: list[_Item]) -> None:
        if not items:
            return
        try:
            self._record(
                [
                    (about, reason, truncate_message(message), type_)
                    for about, reason, message, type_ in items
                ]
            )
        except Exception as exc:
            # Anything else is a bug here, but an Event must still never fail a reconcile.
            log.error(
                "event_not_recorded",
                objects=sorted({_describe(about) for about, *_ in items}),
                reasons=sorted({reason for _, reason, *_ in items}),
                error=repr(exc),
                exc_info=True,
            )

    # --- internals (one sender per object at a time; `_lock` guards the shared memory) --------

    def _record(self, items: list[_Item]) -> None:
        """Create or count up each Event, in one pipelined write where they are independent."""
        planned: list[_Planned] = []
        keys: set[_Key] = set()
        for about, reason, message, type_ in items:
            key: _Key = (
                about.api_version,
                about.kind,
                about.namespace,
                about.name,
                about.uid or "",
                type_,
                reason,
                message,
            )
            if key in keys:
                # The same Event again: it counts up the first, so it waits for its answer.
                self._send(planned)
                planned, keys = [], set()
            keys.add(key)
            with self._lock:
                written = self._written.get(key)
            if written is not None and self._clock() - written.recorded_at < self._dedupe_window:
                planned.append(self._count_up(about, reason, message, type_, key, written))
            else:
                planned.append(self._create(about, reason, message, type_, key))
        self._send(planned)

    def _create(
        self, about: ObjectRef, reason: str, message: str, type_: str, key: _Key
    ) -> _Planned:
        timestamp = rfc3339(self._now())
        name = self._event_name(about.name)
        involved: dict[str, Any] = {
            "apiVersion": about.api_version,
            "kind": about.kind,
            "name": about.name,
            "namespace": about.namespace,
        }
        if about.uid:
            involved["uid"] = about.uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": about.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        call = kubeapi.Call("POST", f"/api/v1/namespaces/{about.namespace}/events", body)
        return _Planned(about, reason, message, type_, key, call, name, 1, None, self._clock())

    def _count_up(
        self,
        about: ObjectRef,
        reason: str,
        message: str,
        type_: str,
        key: _Key,
        written: _Written,
    ) -> _Planned:
        """PATCH count/lastTimestamp of an Event written before."""
        count = written.count + 1
        path = f"/api/v1/namespaces/{written.namespace}/events/{written.name}"
        patch = {"count": count, "lastTimestamp": rfc3339(self._now())}
        call = kubeapi.Call("PATCH", path, patch, content_type=kubeapi.MERGE_PATCH)
        return _Planned(
            about, reason, message, type_, key, call, written.name, count, written, self._clock()
        )

    def _send(self, planned: list[_Planned]) -> None:
        """Send the planned writes (pipelined) and remember what each one wrote."""
        if not planned:
            return
        answers = kubeapi.request_all(
            self._api,
            [p.call for p in planned],
            timeout=self._timeout,
            decode=False,  # the answer is the Event we sent: not worth parsing
        )
        again: list[_Planned] = []
        for p, answer in zip(planned, answers, strict=True):
            outcome = self._outcome(p, answer)
            with self._lock:
                if p.counts_up is None:
                    if outcome == "done":
                        self._written[p.key] = _Written(p.about.namespace, p.name, 1, p.started)
                        self._written.move_to_end(p.key)
                        while len(self._written) > self._cache_size:
                            self._written.popitem(last=False)
                elif outcome == "done":
                    p.counts_up.count = p.count
                    p.counts_up.recorded_at = p.started
                    if p.key in self._written:
                        self._written.move_to_end(p.key)  # recently used: evicted last
                elif outcome == "gone":
                    # The Event expired (the API server's --event-ttl) or was deleted: start a
                    # new one.
                    self._written.pop(p.key, None)
            if outcome == "gone":
                again.append(self._create(p.about, p.reason, p.message, p.type_, p.key))
                continue
            if outcome == "done":
                log.debug(
                    "event_counted" if p.counts_up is not None else "event_recorded",
                    object=_describe(p.about),
                    reason=p.reason,
                    event_name=p.name,
                    count=p.count,
                )
        self._send(again)  # creates only: never "gone" again

    @staticmethod
    def _outcome(p: _Planned, answer: Any) -> Literal["done", "gone", "failed"]:
        """What came of one write; failures are logged."""
        if isinstance(answer, kubeapi.ApiException):
            if p.counts_up is not None and answer.status == 404:
                return "gone"
            error = error_from_status(answer.status or 0, answer.body, kind="Event")
            log.warning(
                "event_not_recorded",
                object=_describe(p.about),
                reason=p.reason,
                method=p.call.method,
                status=answer.status,
                error_type=type(error).__name__,
                error=error.message,
            )
            return "failed"
        if isinstance(answer, urllib3.exceptions.HTTPError | OSError):
            log.warning(
                "event_not_recorded",
                object=_describe(p.about),
                reason=p.reason,
                method=p.call.method,
                error_type="UnavailableError",
                error=repr(answer),
            )
            return "failed"
        return "done"

    def _event_name(self, object_name: str) -> str:
        """`<object>.<hex nanoseconds>` like client-go, strictly increasing in this process."""
        # Two Events in the same nanosecond tick (coarse clocks exist) must not collide.
        with self._lock:
            self._last_name_ns = max(time.time_ns(), self._last_name_ns + 1)
            suffix = f"{self._last_name_ns:x}"
        prefix = object_name[: _NAME_LIMIT - len(suffix) - 1].rstrip(".-")
        return f"{prefix}.{suffix}"


def _describe(about: ObjectRef) -> str:
    return f"{about.kind} {about.namespace}/{about.name}"


__all__ = [
    "DEDUPE_WINDOW_SECONDS",
    "DEFAULT_COMPONENT",
    "MESSAGE_LIMIT_BYTES",
    "KubeEventRecorder",
    "rfc3339",
    "truncate_message",
]
