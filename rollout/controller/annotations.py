"""The annotations on an AIGatewayRoute through which users and the controller talk.

Every key of ours is defined here (the prefix comes from rollout.gateway.constants) so that the
CLI, the reconciler and the docs cannot drift apart. Manual controls are annotations rather than
spec fields: a GitOps tool owns the spec and would undo an abort written there.

- pause:   while set (any value but a false one), the rollout is frozen at its weights.
- abort:   all traffic back to stable at once; the rollout ends Aborted.
- promote: all traffic to the canary at once; the rollout ends Succeeded.
- resume:  a token (e.g. a timestamp); a token the controller has not seen before resumes a
           rollout paused by its limits or by drift. `rollout resume` writes a fresh one.
- approve: a step waiting for approval (`{weight: 50, approve: true}`) goes on when this names
           it: its number as in the messages ("3", "step 3") or its weight ("50%"; a bare
           number that is no step number but a step's weight is taken as the weight).
- state:   the controller's JSON RolloutState; written with the weights, read every tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from rollout.gateway.constants import ANNOTATION_PREFIX

PAUSE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/pause"
ABORT_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/abort"
PROMOTE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/promote"
RESUME_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/resume"
APPROVE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/approve"
STATE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/state"

# `kubectl annotate ... pause=false` should read as "not paused", not as a set flag.
_FALSE_VALUES: Final = frozenset({"false", "no", "off", "0"})


def is_flag_set(annotations: Mapping[str, str], key: str) -> bool:
    """Whether a flag annotation is present with a value other than false/no/off/0.

    An empty value counts as set, so `kubectl annotate route x rollout.model-registry.io/pause=`
    pauses.
    """
    value = annotations.get(key)
    if value is None:
        return False
    return value.strip().lower() not in _FALSE_VALUES


def resume_token(annotations: Mapping[str, str]) -> str | None:
    """The resume token, or None when absent or blank."""
    token = annotations.get(RESUME_ANNOTATION, "").strip()
    return token or None


# The manual controls, as `rollout pause|resume|abort|promote` and the dashboard's buttons set
# them: one definition, so that a button does exactly what the command does.
CONTROL_ACTIONS: Final = ("pause", "resume", "abort", "promote", "approve")


def control_changes(
    action: str, *, clear: bool = False, now: datetime | None = None, step: str | None = None
) -> dict[str, str | None]:
    """The annotation changes (None: remove) for a manual control. `resume` clears a manual
    pause and writes a fresh resume token (the time, to the microsecond); `clear` removes the
    abort or promote annotation instead of setting it; `approve` names `step` ("step 3",
    "50%")."""
    if action == "approve":
        if not step:
            raise ValueError("approve needs the step it approves")
        return {APPROVE_ANNOTATION: step}
    if action == "pause":
        return {PAUSE_ANNOTATION: "true"}
    if action == "resume":
        token = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {PAUSE_ANNOTATION: None, RESUME_ANNOTATION: token}
    if action in ("abort", "promote"):
        key = ABORT_ANNOTATION if action == "abort" else PROMOTE_ANNOTATION
        return {key: None if clear else "true"}
    raise ValueError(f"unknown control {action!r}; one of {', '.join(CONTROL_ACTIONS)}")


def approved_step(value: str | None, weights: tuple[float, ...]) -> int | str | None:
    """The step index (0-based) an approve annotation names, None when absent, or why it names
    none (a message for the Event that says the annotation was ignored)."""
    if value is None or not value.strip():
        return None
    lowered = value.strip().lower()
    as_number = lowered.startswith("step")
    text = lowered.removeprefix("step").strip()
    as_weight = text.endswith("%")
    number_text = text.removesuffix("%").strip()
    if not number_text.isdigit():
        return f'{value!r} names no step: give its number (e.g. "2") or its weight ("50%")'
    number = int(number_text)
    by_weight = weights.index(number) if number in weights else None
    by_number = number - 1 if 1 <= number <= len(weights) else None
    if as_weight:
        return by_weight if by_weight is not None else f"no step has the weight {number}%"
    if as_number:
        return by_number if by_number is not None else f"there is no step {number}"
    if by_number is not None and by_weight is not None and by_number != by_weight:
        return (
            f"{value!r} is ambiguous: step {number} is {weights[by_number]}%, and the step of "
            f'{number}% is step {by_weight + 1}; write "step {number}" or "{number}%"'
        )
    found = by_number if by_number is not None else by_weight
    if found is None:
        return f"{value!r} names no step: the steps are {list(weights)} (numbers 1..{len(weights)})"
    return found
