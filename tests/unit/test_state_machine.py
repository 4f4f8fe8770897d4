"""The pure rollout state machine: a scenario table, focused cases and hypothesis properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollout.analysis import AnalysisVerdict, CheckOutcome
from rollout.controller import (
    ABORT_ANNOTATION,
    DRIFT_REASON,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
    Decision,
    EmitEvent,
    EventReason,
    EventType,
    Observation,
    PauseCause,
    RolloutPhase,
    RolloutState,
    SetWeights,
    WeightSplit,
    analysis_due,
    decide,
    initial_state,
    is_flag_set,
    next_analysis_time,
)
from rollout.policy import API_VERSION, RolloutPolicy

PASS = CheckOutcome.PASS
FAIL = CheckOutcome.FAIL
INCONCLUSIVE = CheckOutcome.INCONCLUSIVE
ERROR = CheckOutcome.ERROR

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_policy(
    steps: list[int] | None = None,
    *,
    failure_limit: int = 2,
    inconclusive_limit: int = 3,
    error_limit: int = 2,
    on_failure: str = "rollback",
    on_drift: str = "pause",
    stable_backend: str = "chat-v1",
    canary_backend: str = "chat-v2",
    interval: str = "30s",
) -> RolloutPolicy:
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "chat"},
            "spec": {
                "route": {"namespace": "llm", "name": "chat"},
                "stable": {"backend": stable_backend, "modelNameOverride": f"m-{stable_backend}"},
                "canary": {"backend": canary_backend, "modelNameOverride": f"m-{canary_backend}"},
                "steps": steps or [10, 30, 60],
                "analysis": {
                    "interval": interval,
                    "failureLimit": failure_limit,
                    "inconclusiveLimit": inconclusive_limit,
                    "errorLimit": error_limit,
                    "metrics": [{"kind": "error-rate", "max": 0.05}],
                },
                "onFailure": on_failure,
                "onDrift": on_drift,
            },
        }
    )


def verdict(outcome: CheckOutcome) -> AnalysisVerdict:
    return AnalysisVerdict(outcome=outcome, metrics=(), reason=f"error-rate: {outcome.value} here")


@dataclass
class Route:
    """A fake route: live weights that follow SetWeights, plus the user's annotations."""

    policy: RolloutPolicy
    stable: int = 100
    canary: int = 0
    state: RolloutState | None = None
    now: datetime = T0
    decisions: list[Decision] = field(default_factory=list)

    def tick(
        self,
        outcome: CheckOutcome | None = None,
        *,
        live: tuple[int, int] | None = None,
        policy: RolloutPolicy | None = None,
        **flags: Any,
    ) -> Decision:
        if live is not None:
            self.stable, self.canary = live
        self.policy = policy or self.policy
        observation = Observation(stable_weight=self.stable, canary_weight=self.canary, **flags)
        self.now += timedelta(seconds=30)
        decision = decide(
            self.state,
            observation,
            None if outcome is None else verdict(outcome),
            self.policy,
            self.now,
        )
        if decision.set_weights is not None:
            self.stable, self.canary = decision.set_weights.stable, decision.set_weights.canary
        self.state = decision.state
        self.decisions.append(decision)
        return decision

    @property
    def current(self) -> RolloutState:
        assert self.state is not None
        return self.state


# --------------------------------------------------------------------------------------------
# The scenario table


@dataclass(frozen=True)
class Tick:
    outcome: CheckOutcome | None = None
    pause: bool = False
    abort: bool = False
    promote: bool = False
    resume: str | None = None
    live: tuple[int, int] | None = None  # someone else sets the route weights before the tick


def t(outcome: CheckOutcome | None = None, **kwargs: Any) -> Tick:
    return Tick(outcome, **kwargs)


START = t()
# One check per tick: pass, fail, inconclusive, metrics error.
P, F, IN, E = t(PASS), t(FAIL), t(INCONCLUSIVE), t(ERROR)


@dataclass(frozen=True)
class Scenario:
    name: str
    ticks: list[Tick]
    phase: RolloutPhase
    step: int
    live: tuple[int, int]  # (stable, canary) on the route at the end
    cause: PauseCause | None = None
    reason: str = ""
    policy: dict[str, Any] = field(default_factory=dict)


PROGRESSING, PAUSED = RolloutPhase.PROGRESSING, RolloutPhase.PAUSED
SUCCEEDED, ROLLED_BACK, ABORTED = (
    RolloutPhase.SUCCEEDED,
    RolloutPhase.ROLLED_BACK,
    RolloutPhase.ABORTED,
)

SCENARIOS = [
    # Starting
    Scenario(
        "first tick starts at the first step", [START], PROGRESSING, 0, (90, 10), reason="started"
    ),
    Scenario(
        "1/1 default weights are not drift before start", [t(live=(1, 1))], PROGRESSING, 0, (90, 10)
    ),
    Scenario(
        "paused before start writes nothing",
        [t(pause=True)],
        PAUSED,
        0,
        (100, 0),
        PauseCause.MANUAL,
    ),
    Scenario("pause before start, then removed", [t(pause=True), START], PROGRESSING, 0, (90, 10)),
    # Passing
    Scenario(
        "pass advances one step", [START, P], PROGRESSING, 1, (70, 30), reason="analysis passed"
    ),
    Scenario("no verdict holds the step", [START, START, START], PROGRESSING, 0, (90, 10)),
    Scenario(
        "reaching 100 is success",
        [START, P, P, P],
        SUCCEEDED,
        3,
        (0, 100),
        reason="promoted to 100%",
    ),
    Scenario(
        "two steps: one pass then success",
        [START, P, P],
        SUCCEEDED,
        2,
        (0, 100),
        policy={"steps": [1, 50]},
    ),
    # Failing
    Scenario("a failure below the limit holds", [START, F], PROGRESSING, 0, (90, 10)),
    Scenario(
        "failure limit rolls back",
        [START, F, F],
        ROLLED_BACK,
        0,
        (100, 0),
        reason="2/2 failed checks",
    ),
    Scenario("failures add up across steps", [START, F, P, F], ROLLED_BACK, 1, (100, 0)),
    Scenario(
        "failureLimit 1 rolls back at once",
        [START, P, F],
        ROLLED_BACK,
        1,
        (100, 0),
        policy={"failure_limit": 1},
    ),
    Scenario(
        "onFailure=pause freezes weights",
        [START, P, F, F],
        PAUSED,
        1,
        (70, 30),
        PauseCause.FAILED_CHECKS,
        policy={"on_failure": "pause"},
    ),
    # Inconclusive
    Scenario("inconclusive holds", [START, IN, IN], PROGRESSING, 0, (90, 10)),
    Scenario(
        "inconclusive limit pauses",
        [START, IN, IN, IN],
        PAUSED,
        0,
        (90, 10),
        PauseCause.INCONCLUSIVE_CHECKS,
        reason="3/3 inconclusive",
    ),
    Scenario(
        "a pass ends the inconclusive streak", [START, IN, IN, P, IN, IN], PROGRESSING, 1, (70, 30)
    ),
    Scenario(
        "a failure ends the inconclusive streak",
        [START, IN, IN, F, IN, IN],
        PROGRESSING,
        0,
        (90, 10),
    ),
    Scenario(
        "an error does not end the inconclusive streak",
        [START, IN, IN, E, IN],
        PAUSED,
        0,
        (90, 10),
        PauseCause.INCONCLUSIVE_CHECKS,
    ),
    # Metrics provider errors
    Scenario("an error holds, never rolls back", [START, E], PROGRESSING, 0, (90, 10)),
    Scenario(
        "error limit pauses",
        [START, P, E, E],
        PAUSED,
        1,
        (70, 30),
        PauseCause.PROVIDER_ERRORS,
        reason="2/2 metrics errors",
    ),
    Scenario("inconclusive ends the error streak", [START, E, IN, E], PROGRESSING, 0, (90, 10)),
    Scenario("a failure ends the error streak", [START, E, F, E], PROGRESSING, 0, (90, 10)),
    Scenario(
        "errors never roll back",
        [START, E, E, E, E],
        PAUSED,
        0,
        (90, 10),
        PauseCause.PROVIDER_ERRORS,
        policy={"error_limit": 4},
    ),
    # Manual pause
    Scenario(
        "pause annotation freezes, ignoring a pass",
        [START, t(pause=True), t(PASS, pause=True)],
        PAUSED,
        0,
        (90, 10),
        PauseCause.MANUAL,
    ),
    Scenario(
        "removing the pause resumes at the same step",
        [START, P, t(pause=True), START],
        PROGRESSING,
        1,
        (70, 30),
        reason="resumed",
    ),
    Scenario(
        "verdicts are not counted while paused",
        [START, t(pause=True), t(FAIL, pause=True), t(FAIL, pause=True), START, F],
        PROGRESSING,
        0,
        (90, 10),
    ),
    Scenario(
        "a manual pause does not forgive failures",
        [START, F, t(pause=True), START, F],
        ROLLED_BACK,
        0,
        (100, 0),
    ),
    # Limit pauses need the resume token
    Scenario(
        "a limit pause stays without a token",
        [START, E, E, START, START],
        PAUSED,
        0,
        (90, 10),
        PauseCause.PROVIDER_ERRORS,
    ),
    Scenario(
        "pause set and cleared does not resume a limit pause",
        [START, E, E, t(pause=True), START],
        PAUSED,
        0,
        (90, 10),
        PauseCause.PROVIDER_ERRORS,
    ),
    Scenario(
        "a new token resumes a limit pause",
        [START, E, E, t(resume="r1")],
        PROGRESSING,
        0,
        (90, 10),
        reason="resume token",
    ),
    Scenario(
        "a token seen before the pause does not resume it",
        [t(resume="r1"), E, E, t(resume="r1")],
        PAUSED,
        0,
        (90, 10),
        PauseCause.PROVIDER_ERRORS,
    ),
    Scenario(
        "a token seen while progressing is spent",
        [START, t(resume="r1"), E, E, t(resume="r1")],
        PAUSED,
        0,
        (90, 10),
        PauseCause.PROVIDER_ERRORS,
    ),
    Scenario(
        "a second token resumes a second pause",
        [START, E, E, t(resume="a"), E, E, t(resume="b")],
        PROGRESSING,
        0,
        (90, 10),
    ),
    Scenario(
        "token under a pause annotation turns the pause manual",
        [START, E, E, t(pause=True, resume="r")],
        PAUSED,
        0,
        (90, 10),
        PauseCause.MANUAL,
        reason="acknowledged",
    ),
    Scenario(
        "acknowledged pause ends when the annotation goes",
        [START, E, E, t(pause=True, resume="r"), t(pause=True), START],
        PROGRESSING,
        0,
        (90, 10),
    ),
    Scenario(
        "resuming a failure pause forgives the failures",
        [START, F, F, t(resume="r"), F],
        PROGRESSING,
        0,
        (90, 10),
        policy={"on_failure": "pause"},
    ),
    Scenario(
        "resumed inconclusive streak starts over",
        [START, IN, IN, IN, t(resume="r"), IN, IN],
        PROGRESSING,
        0,
        (90, 10),
    ),
    # Abort and promote
    Scenario(
        "abort sends everything to stable",
        [START, P, t(abort=True)],
        ABORTED,
        1,
        (100, 0),
        reason="aborted",
    ),
    Scenario("abort on the first tick", [t(abort=True)], ABORTED, 0, (100, 0)),
    Scenario(
        "abort while paused",
        [START, t(pause=True), t(abort=True, pause=True)],
        ABORTED,
        0,
        (100, 0),
    ),
    Scenario("abort beats promote", [START, t(abort=True, promote=True)], ABORTED, 0, (100, 0)),
    Scenario("abort beats a passing verdict", [START, t(PASS, abort=True)], ABORTED, 0, (100, 0)),
    Scenario(
        "promote sends everything to canary",
        [START, t(promote=True)],
        SUCCEEDED,
        3,
        (0, 100),
        reason="promoted",
    ),
    Scenario("promote ends a limit pause", [START, E, E, t(promote=True)], SUCCEEDED, 3, (0, 100)),
    # Drift
    Scenario(
        "drift pauses",
        [START, t(live=(100, 0))],
        PAUSED,
        0,
        (100, 0),
        PauseCause.WEIGHT_DRIFT,
        reason=DRIFT_REASON,
    ),
    Scenario(
        "drift is not progress: the pass is not used",
        [START, t(PASS, live=(50, 50))],
        PAUSED,
        0,
        (50, 50),
        PauseCause.WEIGHT_DRIFT,
    ),
    Scenario(
        "drift pause resumes by token, weights written again",
        [START, P, t(live=(100, 0)), t(resume="r")],
        PROGRESSING,
        1,
        (70, 30),
    ),
    Scenario(
        "removing nothing does not end a drift pause",
        [START, t(live=(100, 0)), START],
        PAUSED,
        0,
        (100, 0),
        PauseCause.WEIGHT_DRIFT,
    ),
    Scenario(
        "reassert writes the weights back",
        [START, t(PASS, live=(100, 0))],
        PROGRESSING,
        0,
        (90, 10),
        policy={"on_drift": "reassert"},
    ),
    Scenario(
        "after reasserting, the next pass advances",
        [START, t(PASS, live=(1, 1)), P],
        PROGRESSING,
        1,
        (70, 30),
        policy={"on_drift": "reassert"},
    ),
    Scenario(
        "weights edited during a manual pause are restored on resume",
        [START, t(pause=True, live=(100, 0)), START],
        PROGRESSING,
        0,
        (90, 10),
    ),
    # Terminal phases absorb everything
    Scenario(
        "rolled back stays rolled back",
        [START, F, F, t(PASS, promote=True), t(live=(50, 50)), t(resume="r")],
        ROLLED_BACK,
        0,
        (50, 50),
    ),
    Scenario(
        "succeeded stays succeeded",
        [START, P, P, P, t(abort=True), t(FAIL, live=(100, 0))],
        SUCCEEDED,
        3,
        (100, 0),
    ),
    Scenario(
        "aborted stays aborted", [t(abort=True), t(promote=True), P, START], ABORTED, 0, (100, 0)
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    route = Route(make_policy(**scenario.policy))
    for tick in scenario.ticks:
        route.tick(
            tick.outcome,
            live=tick.live,
            pause=tick.pause,
            abort=tick.abort,
            promote=tick.promote,
            resume_token=tick.resume,
        )
    state = route.current
    assert (state.phase, state.step_index) == (scenario.phase, scenario.step), state.reason
    assert (route.stable, route.canary) == scenario.live
    assert state.pause_cause is scenario.cause
    assert scenario.reason in state.reason
    assert state.stable_weight + state.canary_weight == 100


def test_paused_scenarios_name_their_cause() -> None:
    # Keeps the table honest: every scenario ending paused states why.
    for scenario in SCENARIOS:
        assert (scenario.phase is PAUSED) == (scenario.cause is not None), scenario.name


# --------------------------------------------------------------------------------------------
# Actions and recorded reasons


def test_start_writes_both_weights_and_an_event() -> None:
    decision = Route(make_policy()).tick()
    assert decision.actions == (
        SetWeights(stable=90, canary=10),
        EmitEvent(
            reason=EventReason.ROLLOUT_STARTED,
            message="started: canary at step 1 of 4 (10%)",
            type=EventType.NORMAL,
        ),
    )
    assert decision.changed
    state = decision.state
    assert state.written_weights == WeightSplit(stable=90, canary=10)
    assert (
        state.started_at
        == state.step_started_at
        == state.last_transition_time
        == T0 + timedelta(seconds=30)
    )


def test_idle_tick_changes_nothing() -> None:
    route = Route(make_policy())
    route.tick()
    decision = route.tick()
    assert decision.actions == ()
    assert not decision.changed


def test_rollback_event_carries_the_counts_and_the_metric_reason() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(FAIL)
    decision = route.tick(FAIL)
    assert decision.set_weights == SetWeights(stable=100, canary=0)
    (event,) = decision.events
    assert event.type is EventType.WARNING
    assert event.reason is EventReason.ROLLED_BACK
    assert "2/2 failed checks" in event.message
    assert "error-rate: Fail here" in event.message
    assert route.current.last_analysis == verdict(FAIL)


def test_held_checks_emit_events_with_counts() -> None:
    route = Route(make_policy())
    route.tick()
    failed = route.tick(FAIL)
    assert [(e.reason, e.type) for e in failed.events] == [
        (EventReason.ANALYSIS_FAILED, EventType.WARNING)
    ]
    assert "1/2 failed checks" in failed.events[0].message
    inconclusive = route.tick(INCONCLUSIVE)
    assert inconclusive.events[0].reason is EventReason.ANALYSIS_INCONCLUSIVE
    assert inconclusive.events[0].type is EventType.NORMAL
    errored = route.tick(ERROR)
    assert errored.events[0].reason is EventReason.ANALYSIS_ERROR
    assert errored.set_weights is None
    counters = route.current.counters
    assert (counters.failures, counters.failed_total) == (1, 1)
    assert (counters.consecutive_inconclusive, counters.inconclusive_total) == (1, 1)
    assert (counters.consecutive_errors, counters.errors_total) == (1, 1)


def test_drift_pause_reason_is_exact_and_the_event_shows_the_weights() -> None:
    route = Route(make_policy())
    route.tick()
    decision = route.tick(live=(100, 0))
    assert decision.set_weights is None
    assert decision.state.reason == DRIFT_REASON
    assert decision.state.pause_reason == DRIFT_REASON
    (event,) = decision.events
    assert event.reason is EventReason.WEIGHTS_DRIFTED
    assert "expected stable 90 / canary 10, found 100 / 0" in event.message


def test_reassert_keeps_the_state_and_writes_the_last_weights() -> None:
    route = Route(make_policy(on_drift="reassert"))
    route.tick()
    before = route.current
    decision = route.tick(PASS, live=(100, 0))
    assert decision.state == before
    assert not decision.changed
    assert decision.set_weights == SetWeights(stable=90, canary=10)
    assert decision.events[0].reason is EventReason.WEIGHTS_REASSERTED


def test_resume_writes_weights_only_if_the_route_differs() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(pause=True)
    assert route.tick().set_weights is None
    route.tick(pause=True)
    assert route.tick(live=(100, 0)).set_weights == SetWeights(stable=90, canary=10)


def test_every_transition_records_reason_and_time() -> None:
    route = Route(make_policy(on_failure="pause"))
    script: list[dict[str, Any]] = [
        {},
        {"outcome": PASS},
        {"pause": True},
        {},
        {"outcome": FAIL},
        {"outcome": FAIL},
        {"resume_token": "r"},
        {"outcome": PASS},
        {"live": (0, 0)},
        {"resume_token": "s"},
        {"promote": True},
    ]
    previous: RolloutState | None = None
    for kwargs in script:
        outcome = kwargs.pop("outcome", None)
        state = route.tick(outcome, **kwargs).state
        moved = previous is None or (previous.phase, previous.step_index) != (
            state.phase,
            state.step_index,
        )
        if moved:
            assert state.last_transition_time == route.now
            assert state.reason and (previous is None or state.reason != previous.reason)
        previous = state
    assert route.current.phase is SUCCEEDED


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(
            None,
            Observation(stable_weight=100, canary_weight=0),
            None,
            make_policy(),
            datetime(2026, 1, 1),  # naive: the point of the test
        )


# --------------------------------------------------------------------------------------------
# Persistence and restarts


def test_state_round_trips_through_the_annotation() -> None:
    route = Route(make_policy())
    for outcome in (None, PASS, FAIL, INCONCLUSIVE, ERROR):
        route.tick(outcome)
    state = route.current
    assert RolloutState.from_annotation(state.to_annotation()) == state


def test_state_from_a_newer_controller_still_loads() -> None:
    route = Route(make_policy())
    route.tick()
    text = route.current.to_annotation().replace("{", '{"added_later": 1, ', 1)
    assert RolloutState.from_annotation(text) == route.current


def test_a_restarted_controller_continues_at_the_same_step() -> None:
    policy = make_policy()
    route = Route(policy)
    route.tick()
    route.tick(PASS)  # now at step 1 (30%), persisted with the weights
    persisted = route.current.to_annotation()
    observation = Observation(stable_weight=route.stable, canary_weight=route.canary)
    later = route.now + timedelta(minutes=5)

    for _ in range(3):  # any number of restarts, same inputs
        restored = RolloutState.from_annotation(persisted)
        idle = decide(restored, observation, None, policy, later)
        assert (idle.state.step_index, idle.actions, idle.changed) == (1, (), False)
        passed = decide(restored, observation, verdict(PASS), policy, later)
        assert passed.state.step_index == 2  # the next step, not a repeat nor a skip
        assert passed.set_weights == SetWeights(stable=40, canary=60)


def test_no_state_yet_and_initial_state_behave_the_same() -> None:
    policy = make_policy()
    observation = Observation(stable_weight=100, canary_weight=0)
    assert decide(None, observation, None, policy, T0) == decide(
        initial_state(policy), observation, None, policy, T0
    )


# --------------------------------------------------------------------------------------------
# Policy edits and backend changes


def test_policy_edit_reanchors_on_the_current_weight_without_writing() -> None:
    route = Route(make_policy([10, 30, 60]))
    route.tick()
    route.tick(PASS)  # 30%
    decision = route.tick(policy=make_policy([10, 20, 40, 80]))
    assert decision.set_weights is None
    assert [e.reason for e in decision.events] == [EventReason.POLICY_CHANGED]
    assert decision.state.step_index == 1  # 20% is the highest step not above 30%
    assert (route.stable, route.canary) == (70, 30)
    assert route.tick(PASS).set_weights == SetWeights(stable=60, canary=40)


def test_policy_edit_that_only_changes_thresholds_keeps_the_step() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(PASS)
    decision = route.tick(policy=make_policy(failure_limit=5))
    assert decision.state.step_index == 1
    assert decision.state.policy_hash == make_policy(failure_limit=5).fingerprint()
    assert decision.set_weights is None


def test_policy_edit_above_the_current_weight_moves_to_the_new_first_step() -> None:
    route = Route(make_policy([10, 30, 60]))
    route.tick()
    decision = route.tick(policy=make_policy([25, 50]))
    assert decision.set_weights == SetWeights(stable=75, canary=25)
    assert decision.state.step_index == 0


def test_backend_change_mid_rollout_pauses_until_resumed() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(PASS)
    other = make_policy(canary_backend="chat-v3")
    paused = route.tick(policy=other)
    assert paused.state.phase is PAUSED
    assert paused.state.pause_cause is PauseCause.BACKENDS_CHANGED
    assert paused.set_weights is None
    assert route.tick(PASS).state.phase is PAUSED  # still, and idempotent
    resumed = route.tick(resume_token="go")
    assert resumed.state.phase is PROGRESSING
    assert (resumed.state.step_index, resumed.state.canary_backend) == (1, "chat-v3")


def test_abort_works_after_a_backend_change() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(policy=make_policy(canary_backend="chat-v3"))
    assert route.tick(abort=True).state.phase is ABORTED


def test_backend_change_before_any_write_is_adopted() -> None:
    route = Route(make_policy())
    route.tick(pause=True)
    decision = route.tick(policy=make_policy(canary_backend="chat-v3"))
    assert decision.state.phase is PROGRESSING
    assert decision.state.canary_backend == "chat-v3"


def test_a_new_canary_after_a_finished_rollout_starts_a_new_rollout() -> None:
    route = Route(make_policy())
    route.tick()
    route.tick(promote=True)
    same = route.tick()
    assert same.state.phase is SUCCEEDED and same.actions == ()
    next_rollout = make_policy(stable_backend="chat-v2", canary_backend="chat-v3")
    decision = route.tick(policy=next_rollout)
    assert decision.state.phase is PROGRESSING
    assert decision.state.step_index == 0
    assert decision.set_weights == SetWeights(stable=90, canary=10)
    assert (decision.state.stable_backend, decision.state.canary_backend) == (
        "chat-v2",
        "chat-v3",
    )


# --------------------------------------------------------------------------------------------
# Scheduling helpers and annotations


def test_analysis_is_due_an_interval_after_the_step_and_after_each_check() -> None:
    policy = make_policy(interval="30s")
    route = Route(policy)
    start = route.tick().state
    assert start.step_started_at is not None
    assert next_analysis_time(start, policy) == start.step_started_at + timedelta(seconds=30)
    assert not analysis_due(start, policy, start.step_started_at + timedelta(seconds=29))
    assert analysis_due(start, policy, start.step_started_at + timedelta(seconds=30))

    checked = route.tick(INCONCLUSIVE).state
    assert checked.last_analysis_at == route.now
    assert next_analysis_time(checked, policy) == route.now + timedelta(seconds=30)

    paused = route.tick(pause=True).state
    assert next_analysis_time(paused, policy) is None
    assert not analysis_due(paused, policy, route.now + timedelta(hours=1))


def test_nothing_is_due_before_the_start() -> None:
    policy = make_policy()
    assert next_analysis_time(initial_state(policy), policy) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("true", True),
        ("", True),
        ("yes", True),
        ("False", False),
        ("no", False),
        ("0", False),
        (" off ", False),
    ],
)
def test_flag_values(value: str | None, expected: bool) -> None:
    annotations = {} if value is None else {PAUSE_ANNOTATION: value}
    assert is_flag_set(annotations, PAUSE_ANNOTATION) is expected


def test_observation_from_route_annotations() -> None:
    observation = Observation.from_route(
        {
            PAUSE_ANNOTATION: "true",
            ABORT_ANNOTATION: "false",
            PROMOTE_ANNOTATION: "",
            RESUME_ANNOTATION: " 2026-01-01T10:00:00Z ",
            "unrelated": "x",
        },
        stable_weight=90,
        canary_weight=10,
    )
    assert observation == Observation(
        stable_weight=90,
        canary_weight=10,
        pause=True,
        abort=False,
        promote=True,
        resume_token="2026-01-01T10:00:00Z",
    )
    blank = Observation.from_route({RESUME_ANNOTATION: "  "}, stable_weight=1, canary_weight=1)
    assert blank.resume_token is None


def test_annotation_keys() -> None:
    from rollout.controller import STATE_ANNOTATION

    assert PAUSE_ANNOTATION == "rollout.model-registry.io/pause"
    assert ABORT_ANNOTATION == "rollout.model-registry.io/abort"
    assert PROMOTE_ANNOTATION == "rollout.model-registry.io/promote"
    assert RESUME_ANNOTATION == "rollout.model-registry.io/resume"
    assert STATE_ANNOTATION == "rollout.model-registry.io/state"


# --------------------------------------------------------------------------------------------
# Properties


@st.composite
def policies(draw: st.DrawFn) -> RolloutPolicy:
    steps = sorted(draw(st.sets(st.integers(1, 99), min_size=1, max_size=5)))
    return make_policy(
        steps,
        failure_limit=draw(st.integers(1, 4)),
        inconclusive_limit=draw(st.integers(1, 4)),
        error_limit=draw(st.integers(1, 4)),
        on_failure=draw(st.sampled_from(["rollback", "pause"])),
        on_drift=draw(st.sampled_from(["pause", "reassert"])),
    )


def rarely(probability_one_in: int) -> st.SearchStrategy[bool]:
    return st.integers(1, probability_one_in).map(lambda n: n == 1)


ticks = st.fixed_dictionaries(
    {
        "outcome": st.sampled_from([None, PASS, PASS, FAIL, INCONCLUSIVE, ERROR]),
        "pause": rarely(6),
        "abort": rarely(25),
        "promote": rarely(25),
        "resume_token": st.sampled_from([None, None, None, "a", "b", "c"]),
        "live": st.one_of(
            st.none(), st.none(), st.none(), st.tuples(st.integers(0, 150), st.integers(0, 150))
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(policy=policies(), script=st.lists(ticks, min_size=1, max_size=30))
def test_properties_over_random_runs(policy: RolloutPolicy, script: list[dict[str, Any]]) -> None:
    route = Route(policy)
    steps = policy.spec.weights
    previous: RolloutState | None = None
    for kwargs in script:
        state_before = route.state
        kwargs = dict(kwargs)
        outcome = kwargs.pop("outcome")
        live = kwargs.pop("live")
        if live is not None:
            route.stable, route.canary = live
        observation = Observation(stable_weight=route.stable, canary_weight=route.canary, **kwargs)
        now = route.now + timedelta(seconds=30)
        decision = route.tick(outcome, **kwargs)
        state = decision.state

        # Weights always sum to 100, within 0..100, in the state and in every write.
        assert state.stable_weight + state.canary_weight == 100
        assert 0 <= state.canary_weight <= 100
        writes = [a for a in decision.actions if isinstance(a, SetWeights)]
        assert len(writes) <= 1
        for write in writes:
            assert write.stable + write.canary == 100
            assert 0 <= write.canary <= 100

        # The canary never starts at 0 and a live rollout always sits on a step.
        if state.phase is PROGRESSING:
            assert state.canary_weight == steps[state.step_index] > 0
        if writes and state.phase in (PROGRESSING, PAUSED):
            assert writes[0].canary >= steps[0] > 0

        # Terminal phases are absorbing.
        if previous is not None and previous.phase.is_terminal:
            assert state == previous
            assert decision.actions == ()
            assert not decision.changed

        # The step index never goes back (the policy is fixed here).
        if previous is not None:
            assert state.step_index >= previous.step_index

        # Only failures roll back, and only at the limit with onFailure=rollback.
        if state.phase is ROLLED_BACK and (previous is None or not previous.phase.is_terminal):
            assert outcome is FAIL
            assert state.counters.failures >= policy.spec.analysis.failure_limit
            assert policy.spec.on_failure.value == "rollback"

        # Transitions record their time and a reason.
        if previous is None or (previous.phase, previous.step_index) != (
            state.phase,
            state.step_index,
        ):
            assert state.last_transition_time == now
            assert state.reason

        # A restart (state read back from the annotation) decides exactly the same.
        if state_before is not None:
            restored = RolloutState.from_annotation(state_before.to_annotation())
            verdict_in = None if outcome is None else verdict(outcome)
            assert decide(restored, observation, verdict_in, policy, now) == decision

        previous = state
