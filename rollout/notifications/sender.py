"""The Notifier port's adapter: HTTP POSTs of JSON to Slack, Teams and generic webhooks.

`notify()` only classifies the Event and puts one job per interested receiver on a bounded
queue: it never blocks a tick and never raises. Worker threads POST each job with a timeout,
retrying with exponential backoff; a full queue drops the job. Every outcome is counted in
`rollout_notifications_total{type, outcome}` (sent, failed, dropped, skipped) and failures are
logged with the receiver's type and where its URL comes from, never the URL (a Slack webhook
URL is its own credential).
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from rollout.controller.ports import ObjectRef
from rollout.controller.state import EmitEvent, RolloutState
from rollout.notifications.payloads import Notice, classify
from rollout.notifications.spec import NotificationSpec
from rollout.policy.schema import RolloutPolicy

log = structlog.get_logger("rollout.notifications")


@dataclass(frozen=True)
class _Job:
    spec: NotificationSpec
    notice: Notice


class WebhookNotifier:
    """Delivers notices to the controller-wide receivers and to each policy's own."""

    def __init__(
        self,
        defaults: Sequence[NotificationSpec] = (),
        *,
        registry: CollectorRegistry | None = None,
        dashboard_url: str = "",
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 1.0,
        queue_size: int = 100,
        workers: int = 2,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._defaults = tuple(defaults)
        self._dashboard_url = dashboard_url
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._clock = clock
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(target=self._work, daemon=True, name=f"notifier-{i}")
            for i in range(workers)
        ]
        self.deliveries = Counter(
            "rollout_notifications",
            "Notifications by receiver type and outcome (sent, failed, dropped, skipped)",
            ["type", "outcome"],
            registry=registry,
        )
        self._pending = 0
        self._idle = threading.Condition()

    # ---- the port ----------------------------------------------------------------------
    def notify(
        self,
        policy: RolloutPolicy,
        about: ObjectRef,
        event: EmitEvent,
        message: str,
        state: RolloutState,
    ) -> None:
        try:
            transition = classify(event, state)
            if transition is None:
                return
            receivers = [
                spec
                for spec in (*self._defaults, *policy.spec.notifications)
                if spec.wants(transition)
            ]
            if not receivers:
                return
            notice = Notice.of(
                transition, policy, event, message, state, self._clock(), self._dashboard_url
            )
            for spec in receivers:
                self._enqueue(_Job(spec, notice))
        except Exception as exc:  # advice, never a reason for a tick to fail
            log.error("notification_error", rollout=policy.name, error=repr(exc))

    def _enqueue(self, job: _Job) -> None:
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._done()
            self.deliveries.labels(job.spec.type.value, "dropped").inc()
            log.warning(
                "notification_dropped",
                receiver=job.spec.describe(),
                rollout=job.notice.policy,
                transition=job.notice.transition.value,
                reason="queue full",
            )

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; jobs still queued are not sent (logged by count)."""
        self._stop.set()
        left = self._queue.qsize()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for worker in self._workers:
            if worker.is_alive():
                worker.join(timeout)
        if left:
            log.warning("notifications_not_sent", count=left, reason="controller stopping")

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued notice was delivered or given up (for tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    # ---- delivery ----------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                return
            try:
                self._deliver(job)
            except Exception as exc:  # a bug here must not kill the worker
                log.error("notification_error", receiver=job.spec.describe(), error=repr(exc))
            finally:
                self._done()

    def _deliver(self, job: _Job) -> None:
        spec, notice = job.spec, job.notice
        fields: dict[str, Any] = {
            "receiver": spec.describe(),
            "rollout": notice.policy,
            "transition": notice.transition.value,
        }
        try:
            url = spec.url_from.resolve()
        except LookupError as exc:
            self.deliveries.labels(spec.type.value, "skipped").inc()
            log.error("notification_not_sent", **fields, error=str(exc))
            return
        body = json.dumps(notice.body_for(spec.type)).encode()
        error = ""
        for attempt in range(1, self._attempts + 1):
            error = self._post(url, body)
            if not error:
                self.deliveries.labels(spec.type.value, "sent").inc()
                log.info("notification_sent", **fields, attempt=attempt)
                return
            log.warning("notification_attempt_failed", **fields, attempt=attempt, error=error)
            if attempt < self._attempts and self._stop.wait(self._backoff * 2 ** (attempt - 1)):
                break
        self.deliveries.labels(spec.type.value, "failed").inc()
        log.error("notification_failed", **fields, attempts=self._attempts, error=error)

    def _post(self, url: str, body: bytes) -> str:
        """Empty when the receiver answered 2xx, else what went wrong (without the URL)."""
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "envoy-ai-rollout"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                response.read(1024)
                return ""
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            detail = getattr(reason, "strerror", None) or reason
            return f"unreachable: {type(reason).__name__}: {detail}"
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or 'connection failed'}"
