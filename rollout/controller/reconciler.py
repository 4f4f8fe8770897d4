"""One tick of one rollout: read the route, decide (pure), act through the ports.

The reconciler holds no Kubernetes or Prometheus client: it talks to the AIGatewayClient port,
the EventRecorder and LeaderElector ports, and receives measurements from the scheduler's
batch. Each tick is: one route read, at most one route write (weights and the state annotation
in the same request), Events, and one structured log event with the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from rollout.analysis.verdicts import AnalysisVerdict, Measurement, evaluate_measurements
from rollout.controller.annotations import STATE_ANNOTATION
from rollout.controller.gate_tracker import GateTracker
from rollout.controller.gates import (
    WebhookMetricSource,
    fetch_webhook_measurements,
    gate_payload,
    merge_webhook_measurements,
    webhook_checks,
)
from rollout.controller.observability import ControllerMetrics
from rollout.controller.ports import EventRecorder, LeaderElector, Notifier, ObjectRef
from rollout.controller.state import (
    Decision,
    EventType,
    GateAnswer,
    GatewayObservation,
    Observation,
    RolloutState,
    analysis_due,
    decide,
)
from rollout.controller.strategies import (
    RouteWrite,
    generated_cohort_percent,
    plan_write,
    served_split,
)
from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.gateway.errors import AIGatewayError, ConflictError, NotFoundError
from rollout.gateway.models import RouteSnapshot
from rollout.gateway.port import AIGatewayClient, RouteCache
from rollout.logging import LazyBoundLogger
from rollout.policy.schema import RolloutPolicy

log = structlog.get_logger("rollout.controller")

# Called with the rollout's state when a check is due (the batch clips its window to the
# traffic since the state's last weight write plus the warm-up).
MeasureFn = Callable[[RolloutState], Mapping[str, Measurement]]


@dataclass(frozen=True)
class GatewayChecks:
    """What the controller requires of the AI Gateway before traffic moves (both on by
    default: a rollout against a gateway that is not running must say so, not shift blind)."""

    require_accepted: bool = True
    verify_weights: bool = True
    verification_timeout: timedelta = timedelta(seconds=30)

    @property
    def enabled(self) -> bool:
        return self.require_accepted or self.verify_weights


@dataclass(frozen=True)
class TickResult:
    """What a tick did, for tests, the CLI and benchmarks."""

    decision: Decision | None
    wrote: bool = False
    skipped: str | None = None  # why nothing was decided (route missing, not leader, ...)


def metric_summary(verdict: AnalysisVerdict) -> str:
    """Each metric's values against its threshold, for Events and the CLI."""

    return "; ".join(m.describe() for m in verdict.metrics)


class Reconciler:
    def __init__(
        self,
        gateway: AIGatewayClient,
        events: EventRecorder,
        *,
        leader: LeaderElector | None = None,
        metrics: ControllerMetrics | None = None,
        gateway_checks: GatewayChecks | None = None,
        gates: GateTracker | None = None,
        webhook_metrics: WebhookMetricSource | None = None,
        notifier: Notifier | None = None,
        routes: RouteCache | None = None,
    ) -> None:
        self._gateway = gateway
        # Read routes from the watch's cache when it can answer, else one GET each.
        self._routes = routes
        self._observed: dict[tuple[str, str], RolloutState] = {}  # last state on /metrics
        # Per route, the state annotation last read and the state parsed from it.
        self._read: dict[tuple[str, str], tuple[str | None, RolloutState | None]] = {}
        self._notifier = notifier
        self._events = events
        self._leader = leader
        self._metrics = metrics or ControllerMetrics()
        self._checks = gateway_checks or GatewayChecks()
        self._gates = gates
        self._webhook_metrics = webhook_metrics

    def forget(self, policy: RolloutPolicy) -> None:
        """A removed policy: drop its series from /metrics and what this reconciler recalls
        of them (so that a policy added again publishes its state again)."""
        route = policy.spec.route
        self._observed.pop((route.namespace, route.name), None)
        self._read.pop((route.namespace, route.name), None)
        self._metrics.remove_rollout(policy.name, route.namespace, route.name)

    def tick(self, policy: RolloutPolicy, now: datetime, measure: MeasureFn | None) -> TickResult:
        """Reconcile `policy` at `now`. `measure` is called only when a check is due; None
        means this tick must not analyse (a watch-triggered reaction to an annotation)."""
        route = policy.spec.route
        bound = LazyBoundLogger(
            log, rollout=policy.name, namespace=route.namespace, route=route.name
        )
        leading = self._leader is None or self._leader.is_leader()
        self._metrics.is_leader.set(1 if leading else 0)
        if not leading:
            return TickResult(None, skipped="not the leader")
        try:
            snapshot = self._snapshot(route.namespace, route.name)
        except AIGatewayError as exc:
            return self._skip(policy, bound, "route_unreadable", exc)
        about = ObjectRef(
            snapshot.api_version,
            AI_GATEWAY_ROUTE.kind,
            snapshot.namespace,
            snapshot.name,
            snapshot.uid,
        )
        stable, canary = policy.spec.stable.backend, policy.spec.canary.backend
        try:
            rule_index = snapshot.rule_index_for(
                [stable, canary],
                route.rule_name if route.rule_name is not None else route.rule_index,
            )
        except LookupError as exc:
            self._events.record(
                about, "BackendsNotFound", f"{policy.name}: {exc}", EventType.WARNING
            )
            return self._skip(policy, bound, "backends_not_in_route", exc)
        state = self._read_state(snapshot, policy, about, bound)
        if isinstance(state, TickResult):
            return state
        rule = snapshot.rules[rule_index]
        raw = (rule.weights[stable], rule.weights[canary])
        cohort = snapshot.cohort_percent if snapshot.cohort_backend == canary else None
        served = served_split(policy, raw, cohort)  # in the state machine's terms
        answers = self._gates.answers(policy.name) if self._gates is not None else ()
        observation = Observation.from_route(
            snapshot.annotations,
            stable_weight=served[0],
            canary_weight=served[1],
            gateway=self._observe_gateway(snapshot, rule_index, policy, state),
            gate_answers=answers,
        )
        verdict: AnalysisVerdict | None = None
        if measure is not None and state is not None and analysis_due(state, policy, now):
            verdict = evaluate_measurements(
                policy.spec.analysis, self._measured(policy, state, measure(state))
            )
            self._metrics.observe_verdict(policy.name, route.namespace, route.name, verdict)
        decision = decide(state, observation, verdict, policy, now)
        if self._leader is not None and not self._leader.is_leader():
            # Leadership can lapse while Prometheus answered: never write without it.
            return TickResult(decision, skipped="lost leadership during the tick")
        wrote = self._carry_out(policy, raw, decision, bound)
        if wrote is None:
            return TickResult(decision, skipped="weights changed between read and write")
        self._run_gates(policy, decision, answers, served)
        measured = f" [{metric_summary(verdict)}]" if verdict is not None else ""
        for event in decision.events:
            message = f"{policy.name}: {event.message}{measured}"
            self._events.record(about, event.reason.value, message, event.type)
            if self._notifier is not None:
                self._notifier.notify(policy, about, event, message, decision.state)
        key = (route.namespace, route.name)
        observed = self._observed.get(key)
        # Unchanged: the gauges already say so. The state read back after a write is equal to
        # the one written, not the same object: keep it, so that later ticks (which decide on
        # it) find the very object and skip pydantic's field-wise comparison.
        if observed is not decision.state:
            if observed != decision.state:
                self._metrics.observe_state(route.namespace, route.name, decision.state)
            self._observed[key] = decision.state
        self._log_decision(bound, decision, verdict, observation, wrote)
        return TickResult(decision, wrote=wrote)

    def _snapshot(self, namespace: str, name: str) -> RouteSnapshot:
        """The route from the cache (NotFoundError once the watch saw it deleted: no tick
        decides on a route that is gone), or from the API when the cache cannot tell."""
        if self._routes is not None:
            cached = self._routes.cached_snapshot(namespace, name)
            if cached is not None:
                return cached
        return self._gateway.get_route_snapshot(namespace, name)

    def _observe_gateway(
        self,
        snapshot: RouteSnapshot,
        rule_index: int,
        policy: RolloutPolicy,
        state: RolloutState | None,
    ) -> GatewayObservation | None:
        """The route's status (part of the read already made) and, only while weights await
        verification, the generated HTTPRoute's weights: one GET, after weight writes only."""
        checks = self._checks
        if not checks.enabled:
            return None
        applied: tuple[int, int] | None = None
        detail: str | None = None
        if checks.verify_weights and state is not None and state.awaiting_verification:
            applied, detail = self._applied_weights(snapshot, rule_index, policy)
        return GatewayObservation(
            require_accepted=checks.require_accepted,
            verify_weights=checks.verify_weights,
            verification_timeout=checks.verification_timeout,
            reconciled=snapshot.status.reconciled,
            accepted=snapshot.status.ready,
            message=snapshot.status.rejection,
            applied_weights=applied,
            applied_detail=detail,
        )

    def _applied_weights(
        self, snapshot: RouteSnapshot, rule_index: int, policy: RolloutPolicy
    ) -> tuple[tuple[int, int] | None, str]:
        """The stable/canary split the generated HTTPRoute carries, and what it shows."""
        stable, canary = policy.spec.stable.backend, policy.spec.canary.backend
        try:
            generated = self._gateway.get_generated_route(snapshot.namespace, snapshot.name)
        except NotFoundError:
            return None, "no HTTPRoute generated from the route yet"
        except AIGatewayError as exc:
            return None, f"the generated HTTPRoute is unreadable: {exc}"
        if generated.owner_uid is not None and generated.owner_uid != snapshot.uid:
            return None, "the HTTPRoute was generated from an earlier route of that name"
        weights = generated.weights_by_backend(rule_index, list(snapshot.rules[rule_index].weights))
        if weights is None:
            return None, f"the HTTPRoute's rule {rule_index} does not match the route's yet"
        raw = (weights[stable], weights[canary])
        sticky = policy.spec.stickiness
        cohort = generated_cohort_percent(generated, sticky.header) if sticky else None
        applied = served_split(policy, raw, cohort)
        shows = f"the HTTPRoute shows stable {raw[0]} / canary {raw[1]}"
        if cohort is not None:
            shows += f" and {cohort:.4g}% of sessions on the canary"
        return applied, shows

    def _read_state(
        self,
        snapshot: RouteSnapshot,
        policy: RolloutPolicy,
        about: ObjectRef,
        bound: LazyBoundLogger,
    ) -> RolloutState | TickResult | None:
        key = (snapshot.namespace, snapshot.name)
        text = snapshot.annotations.get(STATE_ANNOTATION)
        last = self._read.get(key)
        if last is not None and last[0] == text:
            # The annotation this controller read (or wrote) last: the frozen state parsed
            # from it then, not a parse of the same JSON every tick.
            return last[1]
        try:
            state = RolloutState.from_route_annotations(snapshot.annotations)
        except ValidationError as exc:
            # Starting over could move traffic the last controller never meant to move: stop
            # and ask a person (remove the annotation to restart the rollout from its start).
            message = (
                f"{policy.name}: the {STATE_ANNOTATION} annotation is unreadable, so the "
                f"rollout is held; remove it to start over ({exc.errors()[0]['msg']})"
            )
            self._events.record(about, "StateUnreadable", message, EventType.WARNING)
            return self._skip(policy, bound, "state_unreadable", exc)
        self._read[key] = (text, state)
        return state

    def _carry_out(
        self,
        policy: RolloutPolicy,
        raw: tuple[int, int],
        decision: Decision,
        bound: LazyBoundLogger,
    ) -> bool | None:
        """Write weights (and, sticky, the cohort rule) and state in ONE request; None if the
        weights moved meanwhile. `raw`: the weighted rule's weights as read this tick."""
        route = policy.spec.route
        labels = (policy.name, route.namespace, route.name)
        set_weights = decision.set_weights
        # Serialized only when it is written (most ticks change nothing).
        annotations = (
            {STATE_ANNOTATION: decision.state.to_annotation()} if decision.changed else None
        )
        try:
            if set_weights is not None:
                plan = plan_write(
                    policy,
                    set_weights.stable,
                    set_weights.canary,
                    ended=decision.state.phase.is_terminal,
                )
                self._write_plan(policy, plan, raw, annotations)
                self._metrics.count_write(*labels, "weights")
            elif annotations is not None:
                self._gateway.set_route_annotations(route.namespace, route.name, annotations)
                self._metrics.count_write(*labels, "state")
            else:
                return False
        except ConflictError as exc:
            bound.warning("write_conflict", error=str(exc))
            return None
        if annotations is not None:
            # The next tick reads this very text back: its state is the one just written, not
            # a parse of it (and a field-wise comparison with it) once per written rollout.
            key = (route.namespace, route.name)
            self._read[key] = (annotations[STATE_ANNOTATION], decision.state)
        return True

    def _measured(
        self,
        policy: RolloutPolicy,
        state: RolloutState,
        measured: Mapping[str, Measurement],
    ) -> Mapping[str, Measurement]:
        """The batch's measurements with each `kind: webhook` check's value put in (one call
        per check, bounded by its timeout; no source configured: those checks are errors)."""
        if not webhook_checks(policy):
            return measured
        fetched: dict[str, Measurement] = {}
        if self._webhook_metrics is not None:
            offset = 1 if policy.spec.opt_in is not None else 0
            fetched = fetch_webhook_measurements(
                self._webhook_metrics,
                policy,
                step_index=min(max(state.step_index - offset, 0), len(policy.spec.steps) - 1),
                stable_weight=state.stable_percent,
                canary_weight=state.canary_percent,
            )
        return merge_webhook_measurements(policy, measured, fetched)

    def _run_gates(
        self,
        policy: RolloutPolicy,
        decision: Decision,
        answers: tuple[GateAnswer, ...],
        served: tuple[int, int],
    ) -> None:
        """The answers this tick used are spent; the gate calls it asked for start (off the
        tick, in the tracker's pool)."""
        if self._gates is None:
            if decision.gate_runs:
                log.error(
                    "gates_not_configured",
                    rollout=policy.name,
                    gates=[run.gate for run in decision.gate_runs],
                )
            return
        self._gates.consumed(policy.name, [a.key for a in answers])  # no-op when empty
        if not decision.gate_runs:
            return
        specs = {gate.name: gate for gate in policy.spec.gates}
        offset = 1 if policy.spec.opt_in is not None else 0
        total = policy.spec.weight_total
        for run in decision.gate_runs:
            gate = specs.get(run.gate)
            if gate is None:
                continue
            payload = gate_payload(
                policy,
                gate,
                step_index=min(max(run.step_index - offset, 0), len(policy.spec.steps) - 1),
                stable_weight=served[0] * 100 / total,
                canary_weight=served[1] * 100 / total,
            )
            self._gates.submit(policy.name, gate, run.key, payload)

    def _write_plan(
        self,
        policy: RolloutPolicy,
        plan: RouteWrite,
        raw: tuple[int, int],
        annotations: Mapping[str, str] | None,
    ) -> None:
        """The weights, the header rule they go with and the state in ONE JSON Patch; with
        both stickiness and optIn, the opt-in rule is added (first phase) or removed (end) by a
        second, weight-less patch."""
        route = policy.spec.route
        stable, canary = policy.spec.stable.backend, policy.spec.canary.backend
        rule = route.rule_name if route.rule_name is not None else route.rule_index
        weights = {stable: plan.weights[0], canary: plan.weights[1]}
        common: dict[str, Any] = {
            "weights": weights,
            # Compare-and-swap on what we just read: a weight a person or a GitOps tool wrote
            # meanwhile is seen as drift next tick, never overwritten.
            "expected_weights": {stable: raw[0], canary: raw[1]},
            "annotations": annotations,
            "rule": rule,
        }
        sticky, opt_in = policy.spec.stickiness, policy.spec.opt_in
        if sticky is not None:
            if plan.cohort_percent is not None:
                self._gateway.set_cohort_rule(
                    route.namespace,
                    route.name,
                    backends=[stable, canary],
                    header=sticky.header,
                    canary_backend=canary,
                    percent=plan.cohort_percent,
                    **common,
                )
            else:
                self._gateway.remove_cohort_rule(
                    route.namespace, route.name, canary_backend=canary, **common
                )
            common = {"rule": rule}  # the weights and state are written
        if opt_in is not None:
            if plan.opt_in is not None:
                self._gateway.set_opt_in_rule(
                    route.namespace,
                    route.name,
                    backends=[stable, canary],
                    header=opt_in.header,
                    values=plan.opt_in,
                    canary_backend=canary,
                    **common,
                )
            else:
                self._gateway.remove_opt_in_rule(
                    route.namespace, route.name, canary_backend=canary, **common
                )
            return
        if sticky is None:
            self._gateway.update_traffic_weights(
                route.namespace,
                route.name,
                weights,
                annotations=annotations,
                expected_weights=common["expected_weights"],
                rule=rule,
                return_route=False,  # the next tick reads it from the cache
            )

    def _skip(
        self,
        policy: RolloutPolicy,
        bound: LazyBoundLogger,
        event: str,
        exc: Exception,
    ) -> TickResult:
        route = policy.spec.route
        level = "info" if isinstance(exc, NotFoundError) else "error"
        getattr(bound, level)(event, error=str(exc))
        self._metrics.count_reconcile_error(policy.name, route.namespace, route.name, event)
        return TickResult(None, skipped=f"{event}: {exc}")

    @staticmethod
    def _log_decision(
        bound: LazyBoundLogger,
        decision: Decision,
        verdict: AnalysisVerdict | None,
        observation: Observation,
        wrote: bool,
    ) -> None:
        state = decision.state
        fields: dict[str, object] = {
            "phase": state.phase.value,
            "step": state.step_index,
            "weights": {"stable": state.stable_weight, "canary": state.canary_weight},
            "observed": {"stable": observation.stable_weight, "canary": observation.canary_weight},
            "reason": state.reason,
            "changed": decision.changed,
            "wrote": wrote,
        }
        if verdict is not None:
            fields["analysis"] = verdict.outcome.value
            fields["metrics"] = [
                {
                    "metric": m.metric,
                    "outcome": m.outcome.value,
                    "canary": m.canary,
                    "stable": m.stable,
                    "threshold": m.threshold,
                }
                for m in verdict.metrics
            ]
        if decision.changed or verdict is not None or wrote:
            bound.info("rollout_decision", **fields)
        else:
            bound.debug("rollout_unchanged", **fields)
