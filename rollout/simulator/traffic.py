"""The data-plane SIMULATOR: synthetic chat traffic split by the weights Envoy would serve.

Envoy receives its routes from the HTTPRoute the AI Gateway controller generates, not from our
AIGatewayRoute: the simulator reads that HTTPRoute's weights through the gateway port (rule i,
backendRef j of it is rule i, backendRef j of the AIGatewayRoute), and the AIGatewayRoute for
what the HTTPRoute does not carry (model names, modelNameOverride, priorities). No HTTPRoute
(the gateway never accepted the route): no traffic flows, as with a real gateway. It picks a
backendRef per request by weight among the primary (priority 0) backends, and records what the
real gateway would record: the gen_ai_* histograms with gen_ai_request_model = the
backendRef's modelNameOverride. Each variant has a profile (error
rate, latencies) that a scenario sets, so that a healthy, a failing or a slow canary can be
shown for real to the controller's real Prometheus queries.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import structlog

from rollout.gateway.errors import AIGatewayError, NotFoundError
from rollout.gateway.port import AIGatewayClient
from rollout.simulator.metrics import GenAIMetricsExporter, RequestRecord
from rollout.simulator.routing import RoutingTable, routing_table

log = structlog.get_logger("rollout.simulator")


@dataclass(frozen=True)
class VariantProfile:
    """How one model version behaves (medians; each request varies around them)."""

    error_rate: float = 0.0
    time_to_first_token_seconds: float = 0.12
    time_per_output_token_seconds: float = 0.02
    input_tokens: int = 200  # total input, cached tokens included (as the gateway counts)
    output_tokens: int = 150
    cached_input_tokens: int = 80  # a warm prompt cache
    reasoning_tokens: int = 0  # part of output_tokens
    # Cold caches and fresh replicas: time to first token is this many times slower for this
    # long after every change of the weights the gateway serves.
    cold_start_seconds: float = 0.0
    cold_start_ttft_factor: float = 1.0
    # Error rate per tenant, instead of error_rate, for the tenants named here.
    tenant_error_rates: tuple[tuple[str, float], ...] = ()


SESSION_HEADER = "x-session-id"
TENANT_HEADER = "x-tenant-id"
# Tenants (the value of the tenant header) and their shares of the sessions.
DEFAULT_TENANTS: tuple[tuple[str, float], ...] = (
    ("acme", 0.10),
    ("globex", 0.30),
    ("initech", 0.30),
    ("umbrella", 0.30),
)


class TrafficSimulator:
    """Sends `requests_per_second` synthetic requests through the route as the gateway would.

    Requests come from a pool of sessions (a UUID each, as a client's x-session-id) that
    belong to tenants (x-tenant-id); header rules (sticky cohorts, tenant opt-in) are matched
    first, then the weights. `session_variants` records which backends served each session,
    so that a test can check that no conversation changed model version.
    """

    def __init__(
        self,
        gateway: AIGatewayClient,
        exporter: GenAIMetricsExporter,
        namespace: str,
        route: str,
        profiles: dict[str, VariantProfile],
        *,
        requests_per_second: float = 40.0,
        batch_seconds: float = 0.25,
        route_refresh_seconds: float = 0.5,
        seed: int = 7,
        follow_generated_route: bool = True,
        tenants: tuple[tuple[str, float], ...] = DEFAULT_TENANTS,
        sessions: int = 400,
        session_header: str = SESSION_HEADER,
        tenant_header: str = TENANT_HEADER,
    ) -> None:
        self._gateway = gateway
        self._exporter = exporter
        self.namespace = namespace
        self.route = route
        self.profiles = dict(profiles)  # by AIServiceBackend name; scenarios may swap them
        self._rps = requests_per_second
        self._batch = batch_seconds
        self._refresh = route_refresh_seconds
        self._random = random.Random(seed)
        # False: split by the AIGatewayRoute's own weights (no AI Gateway controller running).
        self._follow_generated = follow_generated_route
        names = [t for t, _ in tenants]
        shares = [share for _, share in tenants]
        self._sessions = [
            (str(uuid.UUID(int=self._random.getrandbits(128), version=4)), tenant)
            for tenant in self._random.choices(names, weights=shares, k=sessions)
        ]
        self._session_header = session_header.lower()
        self._tenant_header = tenant_header.lower()
        self._served_weights: tuple[tuple[str, int], ...] | None = None
        self._weights_changed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._table: RoutingTable | None = None
        self._route_read_at = 0.0
        self.sent: Counter[str] = Counter()  # requests per backend, for tests and the demo
        self.session_variants: dict[str, set[str]] = {}
        # Per session, the backends that served it in order, each change once ("a", "b"...).
        self.session_history: dict[str, list[str]] = {}
        self.session_tenants = dict(self._sessions)  # session -> its tenant

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _current_table(self) -> RoutingTable | None:
        now = time.monotonic()
        if now - self._route_read_at >= self._refresh:
            self._route_read_at = now
            try:
                self._table = self._served_table()
            except AIGatewayError as exc:
                log.warning("simulator_route_unreadable", route=self.route, error=str(exc))
            weights = None if self._table is None else self._table.weights
            if weights != self._served_weights:
                self._served_weights, self._weights_changed_at = weights, now
        return self._table

    def _served_table(self) -> RoutingTable | None:
        """What Envoy would route by now; None while nothing is served."""
        snapshot = self._gateway.get_route_snapshot(self.namespace, self.route)
        if not self._follow_generated:
            return routing_table(snapshot, None)
        try:
            generated = self._gateway.get_generated_route(self.namespace, self.route)
        except NotFoundError:
            return None
        return routing_table(snapshot, generated)

    def _run(self) -> None:
        carry = 0.0
        while not self._stop.wait(self._batch):
            table = self._current_table()
            if table is None:
                continue
            carry += self._rps * self._batch
            count, carry = int(carry), carry - int(carry)
            for _ in range(count):
                self.send_one(table)

    def _jitter(self, median: float) -> float:
        return median * self._random.lognormvariate(0.0, 0.25)

    def send_one(self, table: RoutingTable) -> str | None:
        """Route one request of a random session as the gateway would, and record it; returns
        the backend, None if no traffic can flow."""
        session, tenant = self._random.choice(self._sessions)
        headers = {self._session_header: session, self._tenant_header: tenant}
        if table.model_name is not None:
            headers["x-ai-eg-model"] = table.model_name
        backend = table.pick(headers, self._random)
        if backend is None:
            return None
        self.session_variants.setdefault(session, set()).add(backend.name)
        history = self.session_history.setdefault(session, [])
        if not history or history[-1] != backend.name:
            history.append(backend.name)
        profile = self.profiles.get(backend.name, VariantProfile())
        jitter = self._jitter
        ttft = jitter(profile.time_to_first_token_seconds)
        if time.monotonic() - self._weights_changed_at < profile.cold_start_seconds:
            ttft *= profile.cold_start_ttft_factor
        tpot = jitter(profile.time_per_output_token_seconds)
        output = max(1, int(jitter(profile.output_tokens)))
        error_rate = dict(profile.tenant_error_rates).get(tenant, profile.error_rate)
        error = self._random.random() < error_rate
        cached = min(profile.cached_input_tokens, profile.input_tokens)
        model = table.model_name or self.route
        self._exporter.record(
            RequestRecord(
                request_model=backend.model_name_override or model,
                original_model=model,
                duration_seconds=ttft if error else ttft + tpot * output,
                input_tokens=profile.input_tokens,
                output_tokens=output,
                error=error,
                time_to_first_token_seconds=ttft,
                time_per_output_token_seconds=tpot,
                cached_input_tokens=cached,
                reasoning_tokens=min(profile.reasoning_tokens, output),
                tenant=tenant,
            )
        )
        self.sent[backend.name] += 1
        return backend.name
