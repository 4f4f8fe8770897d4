"""The rollout state machine: (state, observation, verdict, policy, now) -> Decision.

Contract: pure. No clients, no clock reads (`now` is an argument), no logging. The same inputs
give the same Decision, so a restarted controller that reads back its persisted state and the
live weights continues at the same step, never repeating or skipping one.

One tick, in order of precedence:
1. A terminal phase (Succeeded, RolledBack, Aborted) does nothing, for ever (a new rollout
   starts only when the policy names another stable/canary pair).
2. The abort annotation: 100% stable at once, Aborted. Beats promote when both are set.
3. The promote annotation: 100% canary at once, Succeeded.
4. The policy now names other backends than the rollout started with: Paused (BackendsChanged),
   unless no weight was ever written, in which case the rollout simply adopts them.
5. The gateway (when the controller is told to listen to it): while the route is not Accepted
   by the AI Gateway controller (NotAccepted, or no condition at all: it has not seen the route),
   a Pending rollout does not start and a Progressing one does not advance: it holds, with one
   Event quoting the gateway, and carries on when the route is Accepted (the step's analysis
   window starts again then). After every weight write the generated HTTPRoute must show the
   weights before the step is analysed; if it does not within the verification timeout, the
   rollout holds likewise until it does.
5b. Pending: start at the first (non-zero) step, or go straight to Paused if the pause
   annotation is already set (no weight is written until it is removed).
6. A policy edit (new fingerprint): the step index is re-anchored on the current canary weight
   (the highest step not above it), so an edit never raises the canary's traffic unanalysed.
7. Paused: a manual pause ends when the annotation is removed; a pause caused by limits, drift
   or a backend change ends when a resume token the controller has not seen appears (and the
   pause annotation is absent: the token then only turns the pause into a manual one). Resuming
   writes the current step's weights again if the live ones differ.
8. Progressing + the pause annotation: Paused (Manual), weights frozen.
9. Progressing + live weights differ from the last written ones: Paused with reason
   "weights changed outside the controller", or with onDrift=reassert the last weights are
   written again. The verdict of that tick is not used (it is still due on the next tick).
10. Progressing + a verdict:
    - PASS: next step; reaching 100% is Succeeded (100% is never analysed: no stable is left to
      compare with).
    - FAIL: counted; at failureLimit (total over the rollout) RolledBack (100% stable), or
      Paused with onFailure=pause.
    - INCONCLUSIVE: hold; at inconclusiveLimit consecutive ones, Paused.
    - ERROR: hold; at errorLimit consecutive ones, Paused. Never a rollback: a metrics outage
      says nothing about the canary.
    No verdict (analysis not due): nothing happens.

Counters: `failures` counts toward failureLimit and is reset only by resuming from a
failure pause; the consecutive counters are reset by any resume. PASS and FAIL end both
streaks, INCONCLUSIVE ends the error streak (the provider answered), ERROR ends neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome
from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    STATE_ANNOTATION,
    approved_step,
    is_flag_set,
    resume_token,
)
from rollout.frozen import PerObject, copy_without_validation, new_without_validation
from rollout.policy.schema import (
    DriftAction,
    FailureAction,
    GateWhen,
    RolloutPolicy,
    format_duration,
)

DRIFT_REASON: Final = "weights changed outside the controller"


class RolloutPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ROLLING_BACK = "RollingBack"  # onFailure: {rollback: {steps, interval}}: stepping down
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"

    @property
    def is_terminal(self) -> bool:
        return self in {RolloutPhase.SUCCEEDED, RolloutPhase.ROLLED_BACK, RolloutPhase.ABORTED}


class PauseCause(StrEnum):
    MANUAL = "Manual"  # the pause annotation: ends when it is removed
    # The rest end only with a new resume token.
    FAILED_CHECKS = "FailedChecks"
    INCONCLUSIVE_CHECKS = "InconclusiveChecks"
    PROVIDER_ERRORS = "ProviderErrors"
    WEIGHT_DRIFT = "WeightDrift"
    BACKENDS_CHANGED = "BackendsChanged"
    # A step with `approve: true` passed its analysis: ends with the approve annotation.
    AWAITING_APPROVAL = "AwaitingApproval"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    ROLLOUT_STARTED = "RolloutStarted"
    STEP_ADVANCED = "StepAdvanced"
    ROLLOUT_SUCCEEDED = "RolloutSucceeded"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ANALYSIS_ERROR = "AnalysisError"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    PAUSE_ACKNOWLEDGED = "PauseAcknowledged"
    RESUMED = "Resumed"
    ABORTED = "Aborted"
    PROMOTED = "Promoted"
    WEIGHTS_DRIFTED = "WeightsDrifted"
    WEIGHTS_REASSERTED = "WeightsReasserted"
    POLICY_CHANGED = "PolicyChanged"
    BACKENDS_CHANGED = "BackendsChanged"
    ROUTE_NOT_RECONCILED = "RouteNotReconciled"
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"
    WEIGHTS_NOT_APPLIED = "WeightsNotApplied"
    GATEWAY_READY = "GatewayReady"
    WAITING_FOR_APPROVAL = "WaitingForApproval"
    APPROVED = "Approved"
    APPROVAL_IGNORED = "ApprovalIgnored"
    STEP_HELD = "StepHeld"
    ROLLBACK_STEPPED = "RollbackStepped"
    GATE_WAITING = "GateWaiting"
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"
    GATE_ERROR = "GateError"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Route weights: percentages (a total of 100), or, for a policy with sub-percent steps,
# units of a larger total (WEIGHT_TOTAL_FINE: 1 unit = 0.01%).
RouteWeight = Annotated[int, Field(ge=0, le=1_000_000)]


class WeightSplit(_Frozen):
    """Route weights of the two backends, on a `total` of 100 (percent) or more."""

    stable: RouteWeight
    canary: RouteWeight
    total: int = Field(default=100, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _sums_to_total(self) -> WeightSplit:
        if self.stable + self.canary != self.total:
            raise ValueError(f"weights must sum to {self.total}, got {self.stable}+{self.canary}")
        return self

    @classmethod
    def for_canary(cls, canary_percent: float, total: int = 100) -> WeightSplit:
        canary = round(canary_percent * total / 100)
        return cls(stable=total - canary, canary=canary, total=total)

    @property
    def canary_percent(self) -> float:
        return self.canary * 100 / self.total


class SetWeights(_Frozen):
    """Write these weights on the route's stable and canary backendRefs (both, always)."""

    kind: Literal["SetWeights"] = "SetWeights"
    stable: RouteWeight
    canary: RouteWeight
    total: int = Field(default=100, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _sums_to_total(self) -> SetWeights:
        if self.stable + self.canary != self.total:
            raise ValueError(f"weights must sum to {self.total}, got {self.stable}+{self.canary}")
        return self

    @classmethod
    def of(cls, split: WeightSplit) -> SetWeights:
        return cls(stable=split.stable, canary=split.canary, total=split.total)


class EmitEvent(_Frozen):
    """Record a Kubernetes Event on the route."""

    kind: Literal["EmitEvent"] = "EmitEvent"
    reason: EventReason
    message: str
    type: EventType = EventType.NORMAL


class RunGate(_Frozen):
    """Call the webhook gate `gate` for `key` (its name and the step it guards); the answer
    comes back as a GateAnswer in a later tick's Observation."""

    kind: Literal["RunGate"] = "RunGate"
    gate: str
    key: str
    step_index: int


Action = Annotated[SetWeights | EmitEvent | RunGate, Field(discriminator="kind")]


class _Persisted(BaseModel):
    # Unknown keys are ignored, not refused: a state written by a newer controller must still
    # be readable by an older one after a downgrade.
    model_config = ConfigDict(frozen=True, extra="ignore")


# Changes built here from valid values: copied without validation (rollout.frozen).
_copy = copy_without_validation


class CheckCounters(_Persisted):
    failures: int = 0  # toward failureLimit
    consecutive_inconclusive: int = 0  # toward inconclusiveLimit
    consecutive_errors: int = 0  # toward errorLimit
    passed_total: int = 0
    failed_total: int = 0
    inconclusive_total: int = 0
    errors_total: int = 0

    def after(self, outcome: CheckOutcome) -> CheckCounters:
        """The counters once a check with this outcome is counted."""
        match outcome:
            case CheckOutcome.PASS:
                changes = {
                    "passed_total": self.passed_total + 1,
                    "consecutive_inconclusive": 0,
                    "consecutive_errors": 0,
                }
            case CheckOutcome.FAIL:
                changes = {
                    "failures": self.failures + 1,
                    "failed_total": self.failed_total + 1,
                    "consecutive_inconclusive": 0,
                    "consecutive_errors": 0,
                }
            case CheckOutcome.INCONCLUSIVE:
                changes = {
                    "consecutive_inconclusive": self.consecutive_inconclusive + 1,
                    "inconclusive_total": self.inconclusive_total + 1,
                    "consecutive_errors": 0,
                }
            case CheckOutcome.ERROR:
                changes = {
                    "consecutive_errors": self.consecutive_errors + 1,
                    "errors_total": self.errors_total + 1,
                }
        return _copy(self, changes)

    def cleared_for_resume(self, cause: PauseCause) -> CheckCounters:
        """A human resumed: old streaks are over; failures are forgiven only if they paused."""
        failures = 0 if cause is PauseCause.FAILED_CHECKS else self.failures
        return self.model_copy(
            update={"failures": failures, "consecutive_inconclusive": 0, "consecutive_errors": 0}
        )


class RolloutState(_Persisted):
    """Everything the controller remembers about one rollout; stored as JSON in the route's
    `rollout.model-registry.io/state` annotation, written together with the weights."""

    policy_name: str
    policy_hash: str  # RolloutPolicy.fingerprint() the state follows
    stable_backend: str
    canary_backend: str
    phase: RolloutPhase = RolloutPhase.PENDING
    step_index: int = Field(default=0, ge=0)  # into policy.spec.steps
    stable_weight: RouteWeight = 100  # what the current phase and step call for, in units of
    canary_weight: RouteWeight = 0  # weight_total (100: percent)
    weight_total: int = 100
    written_weights: WeightSplit | None = None  # the last weights this controller wrote
    counters: CheckCounters = CheckCounters()
    reason: str = "waiting for the first tick"  # of the last transition
    last_transition_time: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    step_started_at: AwareDatetime | None = None  # entering the current step, or resuming
    last_analysis_at: AwareDatetime | None = None
    last_analysis: AnalysisVerdict | None = None
    pause_cause: PauseCause | None = None
    pause_reason: str | None = None
    resume_token: str | None = None  # the last resume token seen (used or not)
    # Why the gateway holds the rollout (route not Accepted, weights not applied), else None.
    hold_reason: str | None = None
    weights_written_at: AwareDatetime | None = None  # when written_weights were written
    # Written, but the generated HTTPRoute has not been seen carrying them yet.
    awaiting_verification: bool = False
    weights_verified_at: AwareDatetime | None = None
    approval_ignored: str | None = None  # the approve value last refused (said once)
    gates_passed: tuple[str, ...] = ()  # keys ("<gate>@<step index>") of gates passed
    gate_waiting: str | None = None  # the key of the gate the rollout waits for
    gate_retry_after: AwareDatetime | None = None  # a failed/erroring gate runs again then
    rollback_index: int | None = None  # into onFailure.rollback.steps while RollingBack

    def to_annotation(self) -> str:
        return self.model_dump_json()

    @property
    def canary_percent(self) -> float:
        return self.canary_weight * 100 / self.weight_total

    @property
    def stable_percent(self) -> float:
        return self.stable_weight * 100 / self.weight_total

    @classmethod
    def from_annotation(cls, text: str) -> RolloutState:
        return cls.model_validate_json(text)

    @classmethod
    def from_route_annotations(cls, annotations: Mapping[str, str]) -> RolloutState | None:
        """The state a route's annotations hold, or None before any controller wrote one.

        Raises pydantic.ValidationError for an unreadable one (callers decide what that means).
        """
        raw = annotations.get(STATE_ANNOTATION)
        return None if raw is None else cls.from_annotation(raw)


class GateAnswer(_Frozen):
    """How a gate call for `key` answered: Passed (2xx), Failed (4xx/5xx) or Error."""

    key: str
    outcome: Literal["Passed", "Failed", "Error"]
    message: str = ""


class GatewayObservation(_Frozen):
    """What the AI Gateway controller says of the route this tick, and what the controller
    is told to require of it (both checks on by default, see ControllerSettings)."""

    require_accepted: bool = True
    verify_weights: bool = True
    verification_timeout: timedelta = timedelta(seconds=30)
    reconciled: bool = False  # the gateway has written a condition on the route
    accepted: bool = False
    message: str | None = None  # the gateway's message when it does not accept the route
    # The stable/canary weights of the generated HTTPRoute's rule, when it was read this tick.
    applied_weights: tuple[int, int] | None = None
    applied_detail: str | None = None  # why applied_weights is None, or what it shows

    def shows(self, split: WeightSplit) -> bool:
        return self.applied_weights == (split.stable, split.canary)


class Observation(_Frozen):
    """What the controller reads from the route this tick."""

    stable_weight: int = Field(ge=0)  # raw route weights (not necessarily percentages)
    canary_weight: int = Field(ge=0)
    pause: bool = False
    abort: bool = False
    promote: bool = False
    resume_token: str | None = None
    approve: str | None = None  # the approve annotation as written
    gateway: GatewayObservation | None = None  # None: the gateway is not consulted
    gate_answers: tuple[GateAnswer, ...] = ()  # gate calls completed since the last tick

    @classmethod
    def from_route(
        cls,
        annotations: Mapping[str, str],
        *,
        stable_weight: int,
        canary_weight: int,
        gateway: GatewayObservation | None = None,
        gate_answers: tuple[GateAnswer, ...] = (),
    ) -> Observation:
        fields = {
            "stable_weight": stable_weight,
            "canary_weight": canary_weight,
            "pause": is_flag_set(annotations, PAUSE_ANNOTATION),
            "abort": is_flag_set(annotations, ABORT_ANNOTATION),
            "promote": is_flag_set(annotations, PROMOTE_ANNOTATION),
            "resume_token": resume_token(annotations),
            "approve": annotations.get(APPROVE_ANNOTATION),
            "gateway": gateway,
            "gate_answers": gate_answers,
        }
        # Made once per rollout and tick: values already of the fields' types (what the
        # reconciler passes) skip validation; anything else is validated as always.
        approve = fields["approve"]
        if (
            cls is Observation
            and type(stable_weight) is int
            and type(canary_weight) is int
            and stable_weight >= 0
            and canary_weight >= 0
            and (approve is None or type(approve) is str)
            and (gateway is None or type(gateway) is GatewayObservation)
            and type(gate_answers) is tuple
            and all(type(answer) is GateAnswer for answer in gate_answers)
        ):
            return new_without_validation(cls, fields)
        return cls(**fields)

    def shows(self, split: WeightSplit) -> bool:
        return (self.stable_weight, self.canary_weight) == (split.stable, split.canary)


class Decision(_Frozen):
    """The new state to persist and the actions to carry out, in order.

    Carry out the actions even when `changed` is False (a reasserted weight leaves the state
    as it was); persist the state when `changed` is True.
    """

    state: RolloutState
    actions: tuple[Action, ...] = ()
    changed: bool

    @property
    def set_weights(self) -> SetWeights | None:
        return next((action for action in self.actions if isinstance(action, SetWeights)), None)

    @property
    def events(self) -> tuple[EmitEvent, ...]:
        return tuple(action for action in self.actions if isinstance(action, EmitEvent))

    @property
    def gate_runs(self) -> tuple[RunGate, ...]:
        return tuple(action for action in self.actions if isinstance(action, RunGate))


# ---------------------------------------------------------------------------------------------
# Public helpers

# RolloutPolicy.fingerprint() dumps and hashes the whole spec (the largest cost of a tick with
# nothing to do); policies are frozen, so each policy object's fingerprint is computed once.
_fingerprints: PerObject[RolloutPolicy, str] = PerObject(lambda policy: policy.fingerprint())


def policy_fingerprint(policy: RolloutPolicy) -> str:
    """`policy.fingerprint()`, computed once per policy object."""
    return _fingerprints(policy)


def initial_state(policy: RolloutPolicy) -> RolloutState:
    """A Pending rollout of the policy's stable -> canary pair."""
    return RolloutState(
        policy_name=policy.name,
        policy_hash=policy_fingerprint(policy),
        stable_backend=policy.spec.stable.backend,
        canary_backend=policy.spec.canary.backend,
    )


def is_same_rollout(state: RolloutState, policy: RolloutPolicy) -> bool:
    """Whether the state belongs to a rollout of the policy's stable -> canary pair."""
    return (state.stable_backend, state.canary_backend) == (
        policy.spec.stable.backend,
        policy.spec.canary.backend,
    )


def next_analysis_time(state: RolloutState, policy: RolloutPolicy) -> datetime | None:
    """When the next check is due: one interval after entering (or resuming) the step, after
    the last check, and after the warm-up that follows the last weight write (so each check
    judges at least one interval of settled traffic). None when no check is wanted."""
    if state.phase is not RolloutPhase.PROGRESSING:
        return None
    warmed_up = (
        state.weights_written_at + policy.spec.analysis.warmup
        if state.weights_written_at is not None
        else None
    )
    anchors = [
        t for t in (state.step_started_at, state.last_analysis_at, warmed_up) if t is not None
    ]
    if not anchors:
        return None
    return max(anchors) + policy.spec.analysis.interval


def judged_since(state: RolloutState, policy: RolloutPolicy) -> datetime | None:
    """The start of the traffic a check may judge: the last weight write plus the warm-up
    (None: unknown, judge the whole window). Traffic from before it is never judged."""
    written = state.weights_written_at or state.step_started_at
    return None if written is None else written + policy.spec.analysis.warmup


def analysis_due(state: RolloutState, policy: RolloutPolicy, now: datetime) -> bool:
    """Whether a check is due; never while the gateway holds the rollout or has not been seen
    applying the last weights (a step is not judged on traffic it may not have had)."""
    if state.hold_reason is not None or state.awaiting_verification:
        return False
    due = next_analysis_time(state, policy)
    return due is not None and now >= due


def decide(
    state: RolloutState | None,
    observation: Observation,
    verdict: AnalysisVerdict | None,
    policy: RolloutPolicy,
    now: datetime,
) -> Decision:
    """One tick of the rollout. `state` None: no state stored yet. `verdict` None: no analysis
    ran this tick. `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    current = state
    if current is None or (current.phase.is_terminal and not is_same_rollout(current, policy)):
        current = initial_state(policy)
    if current.phase.is_terminal:
        return _decision(current, (), _differs(current, state))

    resume_requested = (
        observation.resume_token is not None and observation.resume_token != current.resume_token
    )
    if resume_requested:
        current = _evolve(current, resume_token=observation.resume_token)
    tick = _Tick(observation, verdict, policy, now, resume_requested)
    new_state, actions = _tick(current, tick)
    return _decision(new_state, tuple(actions), _differs(new_state, state))


_ACTION_TYPES = (SetWeights, EmitEvent, RunGate)


def _decision(state: RolloutState, actions: tuple[Action, ...], changed: bool) -> Decision:
    """`Decision(state=..., actions=..., changed=...)`: made per rollout and tick from the
    state machine's own objects, so those skip validation (anything else is validated)."""
    if type(state) is RolloutState and all(type(a) in _ACTION_TYPES for a in actions):
        fields = {"state": state, "actions": actions, "changed": bool(changed)}
        return new_without_validation(Decision, fields)
    return Decision(state=state, actions=actions, changed=changed)


def _differs(new: RolloutState, old: RolloutState | None) -> bool:
    # A tick with nothing to do returns the very state it read: skip pydantic's field-wise
    # comparison then.
    return new is not old and new != old


# ---------------------------------------------------------------------------------------------
# The tick

_Result = tuple[RolloutState, list[SetWeights | EmitEvent | RunGate]]


@dataclass(slots=True)  # made per rollout and tick, never changed: no frozen __init__'s cost
class _Tick:
    observation: Observation
    verdict: AnalysisVerdict | None
    policy: RolloutPolicy
    now: datetime
    resume_requested: bool

    # Derived values of the spec, read many times per tick (cached on the frozen spec itself:
    # a cached_property here would take its lock once per tick).
    @property
    def steps(self) -> tuple[float, ...]:
        return self.policy.spec.phases

    @property
    def total(self) -> int:
        return self.policy.spec.weight_total

    def split(self, canary_percent: float) -> WeightSplit:
        return WeightSplit.for_canary(canary_percent, self.total)

    def describe_step(self, index: int) -> str:
        if self.policy.spec.phase_step(index) is None:
            return f"step {index + 1} of {len(self.steps)} (opt-in tenants only)"
        return f"step {index + 1} of {len(self.steps)} ({self.steps[index]:g}%)"


def _tick(state: RolloutState, tick: _Tick) -> _Result:
    observation = tick.observation
    if observation.abort:
        return _finish(
            state,
            tick,
            RolloutPhase.ABORTED,
            tick.split(0),
            EventReason.ABORTED,
            f"aborted by the {ABORT_ANNOTATION} annotation: all traffic to stable",
            EventType.WARNING,
        )
    if observation.promote:
        return _finish(
            _evolve(state, step_index=len(tick.steps) - 1),
            tick,
            RolloutPhase.SUCCEEDED,
            tick.split(100),
            EventReason.PROMOTED,
            f"promoted by the {PROMOTE_ANNOTATION} annotation: all traffic to canary",
            EventType.NORMAL,
        )
    if state.phase is RolloutPhase.ROLLING_BACK:
        return _roll_back_step(state, tick)
    if not is_same_rollout(state, tick.policy):
        if state.written_weights is None:
            state = _adopt_backends(state, tick.policy)
        elif not _resumes_backend_change(state, tick):
            return _pause_for_backend_change(state, tick)

    state, approval_actions = _check_approval_annotation(state, tick)
    state, gateway_actions, go_on = _consult_gateway(state, tick)
    gateway_actions = approval_actions + gateway_actions
    if not go_on:
        return state, gateway_actions

    if state.phase is RolloutPhase.PENDING:
        # pre-rollout gates: before any user traffic reaches the canary (an eval suite...).
        state, gate_actions, go_on = _gates_before(state, tick, GateWhen.PRE_ROLLOUT, 0)
        if not go_on:
            return state, gateway_actions + gate_actions
        started, actions = _start(state, tick)
        return started, gateway_actions + gate_actions + actions

    state, edit_actions = _follow_policy_edit(state, tick)
    if any(isinstance(action, SetWeights) for action in edit_actions):
        return state, edit_actions

    if state.phase is RolloutPhase.PAUSED:
        new_state, actions = _while_paused(state, tick)
    elif observation.pause:
        new_state, actions = _pause(
            state,
            tick,
            PauseCause.MANUAL,
            f"paused by the {PAUSE_ANNOTATION} annotation at "
            f"{tick.describe_step(state.step_index)}",
        )
    else:
        new_state, actions = _drift(state, tick) or _judge(state, tick)
        if not actions and new_state.gate_waiting is not None and tick.verdict is None:
            # Waiting for a gate at an advance: look at its answer (or run it again).
            new_state, actions = _advance(new_state, tick)
    return new_state, gateway_actions + edit_actions + actions


def _gates_before(
    state: RolloutState, tick: _Tick, when: GateWhen, step_index: int
) -> tuple[RolloutState, list[SetWeights | EmitEvent | RunGate], bool]:
    """(state, actions, go on?) for the gates that run at `when` before step `step_index`:
    go on once each has passed (2xx). A failed gate (4xx/5xx) counts as a failed check, an
    erroring one (timeout, connection) as a metrics error: both hold the rollout and run the
    gate again an interval later; their limits roll back or pause as for checks."""
    actions: list[SetWeights | EmitEvent | RunGate] = []
    answers = {a.key: a for a in tick.observation.gate_answers}
    for gate in tick.policy.spec.gates_at(when):
        key = f"{gate.name}@{step_index}"
        if key in state.gates_passed:
            continue
        answer = answers.get(key)
        where = f"{gate.when.value} gate {gate.name} for {tick.describe_step(step_index)}"
        if answer is not None and answer.outcome == "Passed":
            state = _evolve(
                state,
                gates_passed=(*state.gates_passed, key),
                gate_waiting=None,
                gate_retry_after=None,
            )
            actions.append(
                EmitEvent(
                    reason=EventReason.GATE_PASSED, message=f"{where} passed: {answer.message}"
                )
            )
            continue
        if answer is not None:
            return _gate_did_not_pass(state, tick, key, where, answer, actions)
        retry_after = state.gate_retry_after
        if state.gate_waiting == key and (retry_after is None or tick.now < retry_after):
            return state, actions, False  # called, no answer yet (or not yet time to retry)
        waiting = _evolve(
            state,
            gate_waiting=key,
            gate_retry_after=None,
            reason=f"waiting for the {where}",
            last_transition_time=tick.now,
        )
        actions += [
            RunGate(gate=gate.name, key=key, step_index=step_index),
            EmitEvent(reason=EventReason.GATE_WAITING, message=f"calling the {where}"),
        ]
        return waiting, actions, False
    return state, actions, True


def _gate_did_not_pass(
    state: RolloutState,
    tick: _Tick,
    key: str,
    where: str,
    answer: GateAnswer,
    actions: list[SetWeights | EmitEvent | RunGate],
) -> tuple[RolloutState, list[SetWeights | EmitEvent | RunGate], bool]:
    failed = answer.outcome == "Failed"
    counters = state.counters.after(CheckOutcome.FAIL if failed else CheckOutcome.ERROR)
    limits = tick.policy.spec.analysis
    retry = tick.now + limits.interval
    held = _evolve(state, counters=counters, gate_waiting=key, gate_retry_after=retry)
    message = f"{where} {'failed' if failed else 'gave no answer'}: {answer.message}"
    count = counters.failures if failed else counters.consecutive_errors
    limit = limits.failure_limit if failed else limits.error_limit
    if count < limit:
        event = EmitEvent(
            reason=EventReason.GATE_FAILED if failed else EventReason.GATE_ERROR,
            message=f"{message} ({count}/{limit}); calling it again in "
            f"{format_duration(limits.interval)}",
            type=EventType.WARNING,
        )
        return held, [*actions, event], False
    if failed and tick.policy.spec.failure_action is FailureAction.ROLLBACK:
        if held.phase is RolloutPhase.PENDING:
            # No weight was ever written: the rollout ends without moving traffic.
            ended = _transition(held, tick, RolloutPhase.ROLLED_BACK, message)
            event = EmitEvent(
                reason=EventReason.ROLLED_BACK, message=message, type=EventType.WARNING
            )
            return ended, [*actions, event], False
        if tick.policy.spec.gradual_rollback is not None:
            result = _start_gradual_rollback(held, tick, f"rolling back: {message}")
        else:
            result = _finish(
                held,
                tick,
                RolloutPhase.ROLLED_BACK,
                tick.split(0),
                EventReason.ROLLED_BACK,
                f"rolled back: {message}",
                EventType.WARNING,
            )
        return result[0], [*actions, *result[1]], False
    cause = PauseCause.FAILED_CHECKS if failed else PauseCause.PROVIDER_ERRORS
    paused, events = _pause(
        _evolve(held, gate_waiting=None, gate_retry_after=None),
        tick,
        cause,
        f"paused after {count}/{limit}: {message}",
        event_type=EventType.WARNING,
    )
    return paused, [*actions, *events], False


def _consult_gateway(
    state: RolloutState, tick: _Tick
) -> tuple[RolloutState, list[SetWeights | EmitEvent | RunGate], bool]:
    """(state, actions, go on with the tick?). Holds Pending and Progressing rollouts while the
    gateway does not accept the route or has not applied the last weights in time."""
    gateway = tick.observation.gateway
    if gateway is None or not gateway.verify_weights:
        # The checks were switched off: nothing may stay held by them. (Copied only when it
        # was: a tick with nothing to do returns the state it read, see _differs.)
        if state.awaiting_verification:
            state = _evolve(state, awaiting_verification=False)
        if gateway is None and state.hold_reason is not None:
            state = _evolve(state, hold_reason=None)
    if gateway is None or state.phase not in (RolloutPhase.PENDING, RolloutPhase.PROGRESSING):
        return state, [], True
    written = state.written_weights
    if state.awaiting_verification and written is not None and not tick.observation.shows(written):
        # Someone changed our route's weights since we wrote them: that is drift (a pause, or
        # reasserted weights), decided below; the HTTPRoute is verified after that.
        return state, [], True
    hold = _gateway_hold(state, gateway, tick)
    if hold is None and state.awaiting_verification:
        if written is None or not gateway.shows(written):
            return state, [], False  # within the timeout: wait, analyse nothing
        state = _evolve(state, awaiting_verification=False, weights_verified_at=tick.now)
    if hold is not None:
        event_reason, message = hold
        if state.hold_reason == message:
            return state, [], False
        held = _evolve(state, hold_reason=message, reason=message, last_transition_time=tick.now)
        return (
            held,
            [EmitEvent(reason=event_reason, message=message, type=EventType.WARNING)],
            False,
        )
    if state.hold_reason is None:
        return state, [], True
    # The hold is over. A Progressing step starts its analysis window again: the traffic of
    # the hold may not have followed the weights.
    at = (
        tick.describe_step(state.step_index)
        if state.phase is RolloutPhase.PROGRESSING
        else "the first step"
    )
    message = f"the gateway accepts the route and serves the weights: continuing at {at}"
    resumed = _evolve(
        state,
        hold_reason=None,
        reason=message,
        last_transition_time=tick.now,
        step_started_at=tick.now if state.phase is RolloutPhase.PROGRESSING else None,
    )
    event = EmitEvent(reason=EventReason.GATEWAY_READY, message=message)
    return resumed, [event], state.phase is RolloutPhase.PENDING


def _gateway_hold(
    state: RolloutState, gateway: GatewayObservation, tick: _Tick
) -> tuple[EventReason, str] | None:
    """Why the gateway holds the rollout now (Event reason, message), else None."""
    if gateway.require_accepted and not gateway.reconciled:
        return (
            EventReason.ROUTE_NOT_RECONCILED,
            "held: the AI Gateway controller has not reconciled the route (no Accepted "
            "condition); is it running? No traffic is shifted until it accepts the route",
        )
    if gateway.require_accepted and not gateway.accepted:
        return (
            EventReason.ROUTE_NOT_ACCEPTED,
            f"held: the gateway does not accept the route: {gateway.message or 'NotAccepted'}",
        )
    written, since = state.written_weights, state.weights_written_at
    if (
        gateway.verify_weights
        and state.awaiting_verification
        and written is not None
        and since is not None
        and not gateway.shows(written)
        and tick.now - since >= gateway.verification_timeout
    ):
        shows = gateway.applied_detail or "other weights"
        return (
            EventReason.WEIGHTS_NOT_APPLIED,
            f"held: the gateway has not applied stable {written.stable} / canary "
            f"{written.canary} within {format_duration(gateway.verification_timeout)} "
            f"({shows}); is the AI Gateway controller running?",
        )
    return None


def _start(state: RolloutState, tick: _Tick) -> _Result:
    started = _evolve(
        state,
        policy_name=tick.policy.name,
        policy_hash=policy_fingerprint(tick.policy),
        step_index=0,
        started_at=tick.now,
        step_started_at=tick.now,
    )
    if tick.observation.pause:
        return _pause(
            started,
            tick,
            PauseCause.MANUAL,
            f"paused by the {PAUSE_ANNOTATION} annotation before the first step",
        )
    split = tick.split(tick.steps[0])
    reason = f"started: canary at {tick.describe_step(0)}"
    new_state = _with_weights(
        _transition(started, tick, RolloutPhase.PROGRESSING, reason), split, tick
    )
    return new_state, [
        SetWeights.of(split),
        EmitEvent(reason=EventReason.ROLLOUT_STARTED, message=reason),
    ]


def _follow_policy_edit(state: RolloutState, tick: _Tick) -> _Result:
    fingerprint = policy_fingerprint(tick.policy)
    if state.policy_hash == fingerprint:
        return state, []
    index = _anchor_step(tick.steps, state.canary_percent)
    edited = _evolve(state, policy_name=tick.policy.name, policy_hash=fingerprint, step_index=index)
    message = (
        f"policy changed: canary at {state.canary_percent:g}%, counted as "
        f"{tick.describe_step(index)}"
    )
    actions: list[SetWeights | EmitEvent | RunGate] = [
        EmitEvent(reason=EventReason.POLICY_CHANGED, message=message)
    ]
    if edited.phase is RolloutPhase.PROGRESSING and edited.canary_percent < tick.steps[0]:
        # Below the new first step: that step is where every rollout starts, unanalysed.
        split = tick.split(tick.steps[0])
        edited = _with_weights(_evolve(edited, step_started_at=tick.now), split, tick)
        actions.insert(0, SetWeights.of(split))
    return edited, actions


def _anchor_step(steps: tuple[float, ...], canary_weight: float) -> int:
    """The highest analysed step (never the final 100) whose weight is not above the canary's."""
    below = [index for index, weight in enumerate(steps[:-1]) if weight <= canary_weight]
    return below[-1] if below else 0


def _check_approval_annotation(state: RolloutState, tick: _Tick) -> _Result:
    """An approve annotation that names no step is ignored, and an Event says why (once)."""
    value = tick.observation.approve
    named = approved_step(value, tick.steps)
    if not isinstance(named, str):
        return (_evolve(state, approval_ignored=None) if state.approval_ignored else state), []
    if state.approval_ignored == value:
        return state, []
    message = f"the {APPROVE_ANNOTATION} annotation is ignored: {named}"
    event = EmitEvent(reason=EventReason.APPROVAL_IGNORED, message=message, type=EventType.WARNING)
    return _evolve(state, approval_ignored=value), [event]


def _approved(state: RolloutState, tick: _Tick) -> bool:
    return approved_step(tick.observation.approve, tick.steps) == state.step_index


def _while_paused(state: RolloutState, tick: _Tick) -> _Result:
    cause = state.pause_cause or PauseCause.MANUAL
    if cause is PauseCause.AWAITING_APPROVAL:
        # Only the approval ends this pause (a resume token does not stand in for it); the
        # pause annotation holds an approved step back until it is removed.
        if _approved(state, tick) and not tick.observation.pause:
            approved = _transition(
                state,
                tick,
                RolloutPhase.PROGRESSING,
                f"{tick.describe_step(state.step_index)} approved",
            )
            advanced, actions = _advance(approved, tick, approval_checked=True)
            event = EmitEvent(
                reason=EventReason.APPROVED,
                message=f"{tick.describe_step(state.step_index)} approved by the "
                f"{APPROVE_ANNOTATION} annotation",
            )
            return advanced, [event, *actions]
        return state, []
    if tick.observation.pause:
        if cause is not PauseCause.MANUAL and tick.resume_requested:
            reason = (
                f"{cause.value} pause acknowledged; still paused by the {PAUSE_ANNOTATION} "
                "annotation"
            )
            acknowledged = _evolve(
                _adopt_backends(state, tick.policy),
                pause_cause=PauseCause.MANUAL,
                pause_reason=reason,
                reason=reason,
                last_transition_time=tick.now,
            )
            return acknowledged, [EmitEvent(reason=EventReason.PAUSE_ACKNOWLEDGED, message=reason)]
        return state, []
    if cause is PauseCause.MANUAL or tick.resume_requested:
        return _resume(state, tick, cause)
    return state, []


def _resume(state: RolloutState, tick: _Tick, cause: PauseCause) -> _Result:
    split = tick.split(tick.steps[state.step_index])
    how = "pause annotation removed" if cause is PauseCause.MANUAL else "resume token"
    reason = f"resumed ({how}) at {tick.describe_step(state.step_index)}"
    resumed = _transition(
        _adopt_backends(state, tick.policy),
        tick,
        RolloutPhase.PROGRESSING,
        reason,
        counters=state.counters.cleared_for_resume(cause),
        step_started_at=tick.now,
    )
    actions: list[SetWeights | EmitEvent | RunGate] = []
    if not tick.observation.shows(split):
        actions.append(SetWeights.of(split))
    actions.append(EmitEvent(reason=EventReason.RESUMED, message=reason))
    return _with_weights(resumed, split, tick), actions


def _resumes_backend_change(state: RolloutState, tick: _Tick) -> bool:
    return (
        state.phase is RolloutPhase.PAUSED
        and state.pause_cause is PauseCause.BACKENDS_CHANGED
        and tick.resume_requested
    )


def _pause_for_backend_change(state: RolloutState, tick: _Tick) -> _Result:
    if state.phase is RolloutPhase.PAUSED and state.pause_cause is PauseCause.BACKENDS_CHANGED:
        return state, []
    spec = tick.policy.spec
    reason = (
        f"the policy changed the backends from {state.stable_backend} -> {state.canary_backend} "
        f"to {spec.stable.backend} -> {spec.canary.backend} during the rollout; abort, or "
        "resume to continue at the same step with the new backends"
    )
    return _pause(state, tick, PauseCause.BACKENDS_CHANGED, reason, EventReason.BACKENDS_CHANGED)


def _drift(state: RolloutState, tick: _Tick) -> _Result | None:
    written = state.written_weights
    observation = tick.observation
    if written is None or observation.shows(written):
        return None
    found = (
        f"expected stable {written.stable} / canary {written.canary}, "
        f"found {observation.stable_weight} / {observation.canary_weight}"
    )
    if tick.policy.spec.on_drift is DriftAction.REASSERT:
        event = EmitEvent(
            reason=EventReason.WEIGHTS_REASSERTED,
            message=f"{DRIFT_REASON} ({found}): writing them again",
            type=EventType.WARNING,
        )
        return state, [SetWeights.of(written), event]
    paused, _ = _pause(state, tick, PauseCause.WEIGHT_DRIFT, DRIFT_REASON)
    event = EmitEvent(
        reason=EventReason.WEIGHTS_DRIFTED,
        message=f"{DRIFT_REASON}: {found}",
        type=EventType.WARNING,
    )
    return paused, [event]


def _judge(state: RolloutState, tick: _Tick) -> _Result:
    verdict = tick.verdict
    if verdict is None:
        return state, []
    counters = state.counters.after(verdict.outcome)
    judged = _evolve(state, counters=counters, last_analysis=verdict, last_analysis_at=tick.now)
    if verdict.outcome is CheckOutcome.PASS:
        return _advance(judged, tick)

    limits = tick.policy.spec.analysis
    rule = {
        CheckOutcome.FAIL: _LimitRule(
            count=counters.failures,
            limit=limits.failure_limit,
            counted="failed checks",
            what_happened="check failed",
            hold_event=EventReason.ANALYSIS_FAILED,
            hold_event_type=EventType.WARNING,
            pause_cause=PauseCause.FAILED_CHECKS,
        ),
        CheckOutcome.INCONCLUSIVE: _LimitRule(
            count=counters.consecutive_inconclusive,
            limit=limits.inconclusive_limit,
            counted="inconclusive checks in a row",
            what_happened="check inconclusive",
            hold_event=EventReason.ANALYSIS_INCONCLUSIVE,
            hold_event_type=EventType.NORMAL,
            pause_cause=PauseCause.INCONCLUSIVE_CHECKS,
        ),
        CheckOutcome.ERROR: _LimitRule(
            count=counters.consecutive_errors,
            limit=limits.error_limit,
            counted="metrics errors in a row",
            what_happened="metrics unavailable",
            hold_event=EventReason.ANALYSIS_ERROR,
            hold_event_type=EventType.WARNING,
            pause_cause=PauseCause.PROVIDER_ERRORS,
        ),
    }[verdict.outcome]
    at = tick.describe_step(state.step_index)
    count = f"{rule.count}/{rule.limit} {rule.counted}"
    if rule.count < rule.limit:
        message = f"{rule.what_happened} ({count}), holding at {at}: {verdict.reason}"
        return judged, [
            EmitEvent(reason=rule.hold_event, message=message, type=rule.hold_event_type)
        ]
    if rule.pause_cause is PauseCause.FAILED_CHECKS and (
        tick.policy.spec.failure_action is FailureAction.ROLLBACK
    ):
        if tick.policy.spec.gradual_rollback is not None:
            return _start_gradual_rollback(
                judged, tick, f"rolling back from {at} after {count}: {verdict.reason}"
            )
        return _finish(
            judged,
            tick,
            RolloutPhase.ROLLED_BACK,
            tick.split(0),
            EventReason.ROLLED_BACK,
            f"rolled back at {at} after {count}: {verdict.reason}",
            EventType.WARNING,
        )
    return _pause(
        judged,
        tick,
        rule.pause_cause,
        f"paused at {at} after {count}: {verdict.reason}",
        event_type=EventType.WARNING,
    )


def _start_gradual_rollback(state: RolloutState, tick: _Tick, why: str) -> _Result:
    """onFailure: {rollback: {steps, interval}}: the first rollback step below the canary's
    weight, then one per interval (`_roll_back_step`); 0 ends RolledBack."""
    rollback = tick.policy.spec.gradual_rollback
    assert rollback is not None
    index = next(i for i, w in enumerate(rollback.steps) if w < state.canary_percent)
    return _rollback_to(state, tick, index, why)


def _rollback_to(state: RolloutState, tick: _Tick, index: int, why: str) -> _Result:
    rollback = tick.policy.spec.gradual_rollback
    assert rollback is not None
    weight = rollback.steps[index]
    split = tick.split(weight)
    if weight == 0:
        return _finish(
            state,
            tick,
            RolloutPhase.ROLLED_BACK,
            split,
            EventReason.ROLLED_BACK,
            f"{why}: canary at 0%, rolled back",
            EventType.WARNING,
        )
    reason = (
        f"{why}: canary stepped down to {weight}%, next step in "
        f"{format_duration(rollback.interval)}"
    )
    stepping = _transition(
        state,
        tick,
        RolloutPhase.ROLLING_BACK,
        reason,
        rollback_index=index,
        step_started_at=tick.now,
    )
    return _with_weights(stepping, split, tick), [
        SetWeights.of(split),
        EmitEvent(reason=EventReason.ROLLBACK_STEPPED, message=reason, type=EventType.WARNING),
    ]


def _roll_back_step(state: RolloutState, tick: _Tick) -> _Result:
    rollback = tick.policy.spec.gradual_rollback
    if rollback is None or state.rollback_index is None:
        # The policy no longer asks for a gradual rollback: finish it at once.
        return _finish(
            state,
            tick,
            RolloutPhase.ROLLED_BACK,
            tick.split(0),
            EventReason.ROLLED_BACK,
            "rolled back: the policy no longer steps the rollback down",
            EventType.WARNING,
        )
    since = state.step_started_at or tick.now
    if tick.now - since < rollback.interval:
        return state, []
    index = min(state.rollback_index + 1, len(rollback.steps) - 1)
    return _rollback_to(state, tick, index, "gradual rollback")


def rollback_step_due(state: RolloutState, policy: RolloutPolicy) -> datetime | None:
    """When a gradual rollback takes its next step (None: not rolling back)."""
    rollback = policy.spec.gradual_rollback
    if state.phase is not RolloutPhase.ROLLING_BACK or rollback is None:
        return None
    return (state.step_started_at or state.last_transition_time or datetime.now(UTC)) + (
        rollback.interval
    )


@dataclass(frozen=True)
class _LimitRule:
    """How a non-passing check is counted and what happens at its limit."""

    count: int
    limit: int
    counted: str  # what is counted, for messages
    what_happened: str
    hold_event: EventReason
    hold_event_type: EventType
    pause_cause: PauseCause


def _advance(state: RolloutState, tick: _Tick, *, approval_checked: bool = False) -> _Result:
    step = tick.policy.spec.phase_step(state.step_index)
    at = tick.describe_step(state.step_index)
    if step is not None and step.hold is not None and state.step_started_at is not None:
        until = state.step_started_at + step.hold
        if tick.now < until:
            reason = (
                f"analysis passed at {at}; held there until {until.isoformat()} "
                f"(hold {format_duration(step.hold)}), the checks still running"
            )
            if state.reason.startswith(f"analysis passed at {at}; held there until"):
                return state, []
            held = _evolve(state, reason=reason, last_transition_time=tick.now)
            return held, [EmitEvent(reason=EventReason.STEP_HELD, message=reason)]
    if step is not None and step.approve and not approval_checked and not _approved(state, tick):
        reason = (
            f"waiting for approval: analysis passed at {at}; approve with `rollout approve` or "
            f'the {APPROVE_ANNOTATION} annotation set to "{state.step_index + 1}"'
        )
        return _pause(
            state, tick, PauseCause.AWAITING_APPROVAL, reason, EventReason.WAITING_FOR_APPROVAL
        )
    index = state.step_index + 1
    when = GateWhen.BEFORE_PROMOTION if index == len(tick.steps) - 1 else GateWhen.BEFORE_STEP
    state, gate_actions, go_on = _gates_before(state, tick, when, index)
    if not go_on:
        return state, gate_actions
    split = tick.split(tick.steps[index])
    passed = f"analysis passed at {tick.describe_step(state.step_index)}"
    if split.canary == split.total:
        promoted, actions = _finish(
            _evolve(state, step_index=index),
            tick,
            RolloutPhase.SUCCEEDED,
            split,
            EventReason.ROLLOUT_SUCCEEDED,
            f"{passed}: canary promoted to 100%",
            EventType.NORMAL,
        )
        return promoted, [*gate_actions, *actions]
    reason = f"{passed}: canary now at {tick.describe_step(index)}"
    advanced = _transition(
        state, tick, RolloutPhase.PROGRESSING, reason, step_index=index, step_started_at=tick.now
    )
    return _with_weights(advanced, split, tick), [
        *gate_actions,
        SetWeights.of(split),
        EmitEvent(reason=EventReason.STEP_ADVANCED, message=reason),
    ]


# ---------------------------------------------------------------------------------------------
# State building blocks


def _pause(
    state: RolloutState,
    tick: _Tick,
    cause: PauseCause,
    reason: str,
    event_reason: EventReason = EventReason.PAUSED,
    event_type: EventType = EventType.NORMAL,
) -> _Result:
    paused = _transition(
        state, tick, RolloutPhase.PAUSED, reason, pause_cause=cause, pause_reason=reason
    )
    return paused, [EmitEvent(reason=event_reason, message=reason, type=event_type)]


def _finish(
    state: RolloutState,
    tick: _Tick,
    phase: RolloutPhase,
    split: WeightSplit,
    event_reason: EventReason,
    message: str,
    event_type: EventType,
) -> _Result:
    finished = _with_weights(_transition(state, tick, phase, message), split, tick)
    return finished, [
        SetWeights.of(split),
        EmitEvent(reason=event_reason, message=message, type=event_type),
    ]


def _transition(
    state: RolloutState, tick: _Tick, phase: RolloutPhase, reason: str, **changes: Any
) -> RolloutState:
    """Every phase or step change goes through here, so each records its reason and time."""
    pause_fields: dict[str, Any] = (
        {} if phase is RolloutPhase.PAUSED else {"pause_cause": None, "pause_reason": None}
    )
    return _evolve(
        state,
        phase=phase,
        reason=reason,
        last_transition_time=tick.now,
        **pause_fields,
        **changes,
    )


def _with_weights(state: RolloutState, split: WeightSplit, tick: _Tick) -> RolloutState:
    gateway = tick.observation.gateway
    return _evolve(
        state,
        stable_weight=split.stable,
        canary_weight=split.canary,
        weight_total=split.total,
        written_weights=split,
        weights_written_at=tick.now,
        awaiting_verification=gateway is not None and gateway.verify_weights,
    )


def _adopt_backends(state: RolloutState, policy: RolloutPolicy) -> RolloutState:
    return _evolve(
        state,
        stable_backend=policy.spec.stable.backend,
        canary_backend=policy.spec.canary.backend,
    )


def _evolve(state: RolloutState, **changes: Any) -> RolloutState:
    return _copy(state, changes)
