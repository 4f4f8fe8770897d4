"""KubeEventRecorder: the EventRecorder port as core/v1 Events.

Events are advice for `kubectl describe` / `kubectl get events`: `record` never raises, every
failure is logged and dropped. Writes are synchronous and serialized by one lock (client-go
also funnels every Event through a single broadcaster goroutine), each bounded by a short
request timeout so a slow API server delays a reconcile by seconds at most.

Deduplication is a simplified version of client-go's EventCorrelator: an Event identical to one
this recorder wrote in the last 10 minutes (same object, type, reason and message) is not
created again; the existing Event's `count` and `lastTimestamp` are patched instead. The memory
is a small LRU per recorder, so a restarted controller starts new Events, as client-go does.
"""

from __future__ import annotations

import socket
import threading
import time
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
    ) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self._api = api_client
        self.component = component
        self.host = host or socket.gethostname()
        self._dedupe_window = dedupe_window
        self._cache_size = cache_size
        self._timeout = request_timeout
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._written: OrderedDict[_Key, _Written] = OrderedDict()
        self._last_name_ns = 0

    def record(self, about: ObjectRef, reason: str, message: str, type: EventType) -> None:
        """Create (or count up) an Event about `about`. Never raises."""
        try:
            with self._lock:
                self._record(about, reason, truncate_message(message), str(type))
        except Exception as exc:
            # Anything else is a bug here, but an Event must still never fail a reconcile.
            log.error(
                "event_not_recorded",
                object=_describe(about),
                reason=reason,
                error=repr(exc),
                exc_info=True,
            )

    # --- internals (called with the lock held) ---------------------------------------------

    def _record(self, about: ObjectRef, reason: str, message: str, type_: str) -> None:
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
        written = self._written.get(key)
        if written is not None and self._clock() - written.recorded_at < self._dedupe_window:
            outcome = self._count_up(about, reason, written)
            if outcome == "done":
                self._written.move_to_end(key)  # recently used: evicted last
            if outcome != "gone":
                return
            # The Event expired (the API server's --event-ttl) or was deleted: start a new one.
            del self._written[key]
        self._create(about, reason, message, type_, key)

    def _create(self, about: ObjectRef, reason: str, message: str, type_: str, key: _Key) -> None:
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
        started = self._clock()
        if not self._send(
            about, reason, "POST", f"/api/v1/namespaces/{about.namespace}/events", body
        ):
            return
        self._written[key] = _Written(about.namespace, name, 1, started)
        self._written.move_to_end(key)
        while len(self._written) > self._cache_size:
            self._written.popitem(last=False)
        log.debug("event_recorded", object=_describe(about), reason=reason, event_name=name)

    def _count_up(
        self, about: ObjectRef, reason: str, written: _Written
    ) -> Literal["done", "gone", "failed"]:
        """PATCH count/lastTimestamp of an Event written before: "done", "gone" or "failed"."""
        count = written.count + 1
        started = self._clock()
        path = f"/api/v1/namespaces/{written.namespace}/events/{written.name}"
        patch = {"count": count, "lastTimestamp": rfc3339(self._now())}
        sent = self._send(
            about, reason, "PATCH", path, patch, content_type=kubeapi.MERGE_PATCH, missing_ok=True
        )
        if sent is None:
            return "gone"
        if not sent:
            return "failed"
        written.count = count
        written.recorded_at = started
        log.debug(
            "event_counted",
            object=_describe(about),
            reason=reason,
            event_name=written.name,
            count=count,
        )
        return "done"

    def _send(
        self,
        about: ObjectRef,
        reason: str,
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> bool | None:
        """True on success, None on 404 when `missing_ok`, False (logged) on any failure."""
        try:
            kubeapi.request(
                self._api,
                method,
                path,
                body=body,
                content_type=content_type,
                timeout=self._timeout,
            )
        except kubeapi.ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            error = error_from_status(exc.status or 0, exc.body, kind="Event")
            log.warning(
                "event_not_recorded",
                object=_describe(about),
                reason=reason,
                method=method,
                status=exc.status,
                error_type=type(error).__name__,
                error=error.message,
            )
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning(
                "event_not_recorded",
                object=_describe(about),
                reason=reason,
                method=method,
                error_type="UnavailableError",
                error=repr(exc),
            )
            return False
        return True

    def _event_name(self, object_name: str) -> str:
        """`<object>.<hex nanoseconds>` like client-go, strictly increasing in this process."""
        # Two Events in the same nanosecond tick (coarse clocks exist) must not collide.
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
