"""KubeLeaseElector: the LeaderElector port on a coordination.k8s.io/v1 Lease.

The algorithm is client-go's leaderelection (tryAcquireOrRenew), one GET and one PUT per try:

- no Lease: create it (POST) holding it; a 409 means another replica created it first.
- a Lease held by another identity that has not expired: wait.
- otherwise (expired, released, or already ours): PUT with the resourceVersion just read, so of
  two contenders exactly one wins; the other gets 409 Conflict and has lost this round.

Expiry uses the local monotonic clock, never the timestamps in the Lease: a Lease is expired
when the record (holder, renewTime, ...) has not changed for leaseDurationSeconds since *this*
replica first observed it in its current form (client-go's observedTime). Comparing our wall
clock with a renewTime written by another machine would make the safety of the election
depend on clock synchronisation between nodes; this way only clock *rates* matter.

`is_leader()` is True only while this replica's last successful write (timed at the start of
the GET that preceded it, so conservatively early) is younger than `renew_deadline`. Another
replica can take over only after observing that write unchanged for `lease_duration`, and it
observes it no earlier than it was made; with renew_deadline < lease_duration a partitioned
leader therefore stops writing before anyone else can start.

After losing the lease, `run` keeps contending (it does not exit like client-go's Run): the
controller stays up and `is_leader()` gates its writes. On stop it releases the Lease
(client-go's ReleaseOnCancel): holderIdentity cleared, so another replica takes over on its
next retry instead of waiting for expiry.
"""

from __future__ import annotations

import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
import urllib3
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.gateway.errors import error_from_status

log = structlog.get_logger("rollout.leader")

DEFAULT_LEASE_NAME: Final = "envoy-ai-rollout"
LEASE_API_VERSION: Final = "coordination.k8s.io/v1"
# client-go's JitterFactor for the acquire loop: contenders spread their retries out.
ACQUIRE_JITTER: Final = 1.2


def microtime(moment: datetime) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with microseconds, e.g. 2026-11-27T15:00:00.000000Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """hostname-pid-random: unique even for two replicas in one pod or one host."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaseRecord:
    """The election-relevant part of a Lease's spec, compared as a whole to detect renewals."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration_seconds=duration if isinstance(duration, int) else 0,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=transitions if isinstance(transitions, int) else 0,
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class KubeLeaseElector:
    """LeaderElector over /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}.

    Thread-safe: `run` drives the election in one thread, `is_leader` may be called from any.
    """

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "need 0 < retry_period < renew_deadline < lease_duration, got "
                f"{retry_period} / {renew_deadline} / {lease_duration}"
            )
        self._api = api_client
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._now = now
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        # The Lease field is whole seconds; rounding up only makes others wait longer.
        self._duration_seconds = max(1, math.ceil(lease_duration))
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        # _op_lock serializes the request sequences; _state_lock guards the fields below and is
        # never held across a request, so is_leader() answers at once even while a PUT hangs.
        self._op_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None  # the last Lease object read or written
        self._renewed_at: float | None = None
        # When our claim was last renewed, None while the observed holder is someone else:
        # derived from the two fields above (under _state_lock) and replaced whole, so that
        # is_leader(), called twice per tick by every tick worker, reads it without the lock.
        self._claim: float | None = None
        self._leading = False  # what the run loop last reported (transitions, callbacks)

    # --- the port ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        claim = self._claim  # one read of a reference: no lock needed
        return claim is not None and self._clock() - claim < self.renew_deadline

    def run(self, stop: threading.Event) -> None:
        log.info(
            "leader_election_started",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
        )
        try:
            while not stop.is_set():
                self.try_acquire_or_renew()
                leading = self._report_transition()
                # Renew on the dot; spread acquisition attempts like client-go's JitterUntil.
                delay = self.retry_period
                if not leading:
                    delay *= 1.0 + random.uniform(0.0, ACQUIRE_JITTER)
                stop.wait(delay)
        finally:
            released = self.release()
            self._report_transition(stopping=True, released=released)

    # --- one round of the algorithm ---------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One tryAcquireOrRenew: True if this replica holds the Lease after the call."""
        with self._op_lock:
            started = self._clock()
            try:
                lease = self._request("GET", f"{self._path}/{self.name}")
            except kubeapi.ApiException as exc:
                if exc.status != 404:
                    self._log_failure("get", exc)
                    return False
                return self._create(started)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                self._log_failure("get", exc)
                return False

            record = LeaseRecord.from_lease(lease)
            observed_at = self._clock()
            with self._state_lock:
                if record != self._observed:
                    previous = self._observed.holder if self._observed else None
                    # A new holder seen by a follower; losing the Lease is leader_lost instead.
                    if record.holder not in (previous, self.identity) and previous != self.identity:
                        log.info(
                            "leader_observed",
                            lease=f"{self.namespace}/{self.name}",
                            holder=record.holder or None,
                            identity=self.identity,
                        )
                    self._observed = record
                    self._observed_at = observed_at
                    self._update_claim()
                self._lease = lease
                held_by_other = (
                    record.holder != ""
                    and record.holder != self.identity
                    and self._observed_at + record.lease_duration_seconds > observed_at
                )
            if held_by_other:
                return False

            now = microtime(self._now())
            ours = record.holder == self.identity
            desired = LeaseRecord(
                holder=self.identity,
                lease_duration_seconds=self._duration_seconds,
                acquire_time=record.acquire_time if ours else now,
                renew_time=now,
                transitions=record.transitions if ours else record.transitions + 1,
            )
            return self._update(lease, desired, started, action="renew" if ours else "acquire")

    def release(self) -> bool:
        """Give the Lease up if this replica holds it; True if the release was written."""
        with self._op_lock:
            with self._state_lock:
                observed, lease = self._observed, self._lease
                # From here on this replica makes no leadership claim, whatever the PUT does.
                self._renewed_at = None
                self._update_claim()
            if observed is None or lease is None or observed.holder != self.identity:
                return False
            now = microtime(self._now())
            released = LeaseRecord(
                holder="",
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                transitions=observed.transitions,
            )
            if not self._update(lease, released, None, action="release"):
                return False
            # run() reports the stop (leader_stopped, released=True); this is the detail.
            log.debug(
                "lease_released", lease=f"{self.namespace}/{self.name}", identity=self.identity
            )
            return True

    # --- requests ---------------------------------------------------------------------------

    def _create(self, started: float) -> bool:
        now = microtime(self._now())
        record = LeaseRecord(
            holder=self.identity,
            lease_duration_seconds=self._duration_seconds,
            acquire_time=now,
            renew_time=now,
            transitions=0,
        )
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.to_spec(),
        }
        try:
            created = self._request("POST", self._path, body)
        except kubeapi.ApiException as exc:
            if exc.status == 409:
                # Another replica created it between our GET and POST: it holds it now.
                log.debug("lease_create_lost", lease=f"{self.namespace}/{self.name}")
            else:
                self._log_failure("create", exc)
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._log_failure("create", exc)
            return False
        self._remember_write(created, started)
        return True

    def _update(
        self, lease: dict[str, Any], record: LeaseRecord, started: float | None, *, action: str
    ) -> bool:
        """PUT `record` as the Lease's spec, conditional on the resourceVersion of `lease`."""
        body = dict(lease)
        body["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
        try:
            written = self._request("PUT", f"{self._path}/{self.name}", body)
        except kubeapi.ApiException as exc:
            if exc.status == 409:
                # The Lease changed since our GET: someone else renewed or took it first.
                log.debug(
                    "lease_update_conflict", lease=f"{self.namespace}/{self.name}", action=action
                )
            else:
                self._log_failure(action, exc)
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._log_failure(action, exc)
            return False
        self._remember_write(written, started)
        return True

    def _remember_write(self, lease: dict[str, Any], started: float | None) -> None:
        with self._state_lock:
            self._observed = LeaseRecord.from_lease(lease)
            self._observed_at = self._clock()
            self._lease = lease
            self._renewed_at = started
            self._update_claim()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # One request may use the whole renew deadline (client-go bounds a renewal by it too);
        # is_leader() keeps answering from the clock meanwhile.
        return kubeapi.request(self._api, method, path, body=body, timeout=self.renew_deadline)

    def _log_failure(self, action: str, exc: Exception) -> None:
        if isinstance(exc, kubeapi.ApiException):
            error = error_from_status(
                exc.status or 0, exc.body, kind="Lease", namespace=self.namespace, name=self.name
            )
            detail = {
                "status": exc.status,
                "error_type": type(error).__name__,
                "error": error.message,
            }
        else:
            detail = {"error_type": "UnavailableError", "error": repr(exc)}
        log.warning(
            "lease_request_failed",
            lease=f"{self.namespace}/{self.name}",
            identity=self.identity,
            action=action,
            **detail,
        )

    # --- leadership state -------------------------------------------------------------------

    def _update_claim(self) -> None:
        """Called with _state_lock held, after _observed or _renewed_at changed."""
        ours = self._observed is not None and self._observed.holder == self.identity
        self._claim = self._renewed_at if ours else None

    def _holds_fresh_lease(self) -> bool:
        claim = self._claim
        return claim is not None and self._clock() - claim < self.renew_deadline

    def _report_transition(self, *, stopping: bool = False, released: bool = False) -> bool:
        """Log and call back when leadership changed since the last report; return it."""
        with self._state_lock:
            leading = self._holds_fresh_lease()
            changed = leading != self._leading
            self._leading = leading
            holder = self._observed.holder if self._observed else None
            transitions = self._observed.transitions if self._observed else None
        if not changed:
            return leading
        lease = f"{self.namespace}/{self.name}"
        if leading:
            log.info(
                "leader_acquired", lease=lease, identity=self.identity, transitions=transitions
            )
            callback = self._on_started
        elif stopping:
            # Not released (API unreachable, or taken over meanwhile): others wait for expiry.
            log.info("leader_stopped", lease=lease, identity=self.identity, released=released)
            callback = self._on_stopped
        else:
            # Taken over: another replica found our renewals stale (or an admin edited the
            # Lease). Ours but stale: we could not renew in time (API unreachable or slow).
            why = "taken over" if holder != self.identity else "renew deadline passed"
            log.warning("leader_lost", lease=lease, identity=self.identity, holder=holder, why=why)
            callback = self._on_stopped
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("leader_callback_failed", lease=lease, leading=leading)
        return leading


__all__ = [
    "DEFAULT_LEASE_NAME",
    "KubeLeaseElector",
    "LeaseRecord",
    "default_identity",
    "microtime",
]
