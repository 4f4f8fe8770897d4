"""The controller's other ports (besides the gateway's AIGatewayClient and the analysis
MetricsProvider): Kubernetes Events, transition notifications, leader election and route
change notifications.

Contract: Protocols and plain data only; the Kubernetes adapters live in
`rollout.controller.runtime` (kube_events, kube_lease, kube_watch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rollout.controller.state import EmitEvent, EventType, RolloutState

if TYPE_CHECKING:
    from rollout.controller.gates import GateResult
    from rollout.policy.schema import GateSpec, RolloutPolicy


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (the AIGatewayRoute)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None


class EventRecorder(Protocol):
    def record(self, about: ObjectRef, reason: str, message: str, type: EventType) -> None:
        """Record a Kubernetes Event; failures are logged, never raised (an Event is advice)."""
        ...


class Notifier(Protocol):
    def notify(
        self,
        policy: RolloutPolicy,
        about: ObjectRef,
        event: EmitEvent,
        message: str,
        state: RolloutState,
    ) -> None:
        """Send (later) a notification of the transition `event` (recorded as an Event with
        `message`) into `state`, to the receivers that want it. Never blocks a tick and never
        raises: delivery happens elsewhere, its failures are logged and counted."""
        ...


class LeaderElector(Protocol):
    def is_leader(self) -> bool:
        """True while this replica holds a lease it renewed recently enough to write."""
        ...

    def run(self, stop: threading.Event) -> None:
        """Acquire and renew the lease until `stop` is set, then release it."""
        ...


@dataclass(frozen=True)
class RouteChange:
    namespace: str
    name: str
    annotations: dict[str, str]
    deleted: bool = False
    # The AI Gateway controller's condition on the route: (type, status, message), or None
    # before it has written one. A change here (Accepted <-> NotAccepted) is reacted to.
    gateway_condition: tuple[str, str, str] | None = None


class RouteWatcher(Protocol):
    def watch(
        self,
        namespaces: Sequence[str] | None,
        on_change: Callable[[RouteChange], None],
        stop: threading.Event,
    ) -> None:
        """Call `on_change` for every added, modified or deleted AIGatewayRoute in the
        namespaces (None: all), reconnecting after errors, until `stop` is set. Blocks."""
        ...


class GateRunner(Protocol):
    def run(self, gate: GateSpec, payload: Mapping[str, object]) -> GateResult:
        """Call a webhook gate with `payload` (rollout.controller.gates.gate_payload) and say
        how it answered: PASSED (2xx), FAILED (4xx/5xx, the answer's message) or ERROR (no
        usable answer: hold, never roll back). Blocks for at most the gate's timeout (plus a
        little); never raises; never logs or returns the gate's token."""
        ...
