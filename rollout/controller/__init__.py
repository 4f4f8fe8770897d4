"""The rollout controller.

`state` is the pure state machine (no I/O, no clock); `annotations` names every annotation
key of ours. The reconciler and the scheduler loop build on them.
"""

from rollout.controller.annotations import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RESUME_ANNOTATION,
    STATE_ANNOTATION,
    is_flag_set,
    resume_token,
)
from rollout.controller.state import (
    DRIFT_REASON,
    Action,
    CheckCounters,
    Decision,
    EmitEvent,
    EventReason,
    EventType,
    GatewayObservation,
    Observation,
    PauseCause,
    RolloutPhase,
    RolloutState,
    SetWeights,
    WeightSplit,
    analysis_due,
    decide,
    initial_state,
    is_same_rollout,
    next_analysis_time,
)

__all__ = [
    "ABORT_ANNOTATION",
    "DRIFT_REASON",
    "PAUSE_ANNOTATION",
    "PROMOTE_ANNOTATION",
    "RESUME_ANNOTATION",
    "STATE_ANNOTATION",
    "Action",
    "CheckCounters",
    "Decision",
    "EmitEvent",
    "EventReason",
    "EventType",
    "GatewayObservation",
    "Observation",
    "PauseCause",
    "RolloutPhase",
    "RolloutState",
    "SetWeights",
    "WeightSplit",
    "analysis_due",
    "decide",
    "initial_state",
    "is_flag_set",
    "is_same_rollout",
    "next_analysis_time",
    "resume_token",
]
