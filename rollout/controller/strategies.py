"""Traffic strategies: how the state machine's canary percentage becomes route writes (pure).

The state machine thinks in one number, the canary's share. With `stickiness`, that share is
a share of SESSIONS: the weighted rule keeps stable at 100 (requests without the session
header stay on stable) and a cohort rule sends the selected sessions to the canary; promotion
ends with the canary at 100% and no cohort rule, a rollback or abort with stable at 100% and
no cohort rule. Read back, the route's cohort share is the canary's share again, so drift
detection and weight verification compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.gateway.manifests.cohorts import cohort_share
from rollout.gateway.models import GeneratedRoute
from rollout.policy.schema import RolloutPolicy


@dataclass(frozen=True)
class RouteWrite:
    """The weighted rule's (stable, canary) weights, the cohort rule's share of sessions
    (None: the route must have no cohort rule), and the opt-in tenants (None: no opt-in
    rule)."""

    weights: tuple[int, int]
    cohort_percent: float | None = None
    opt_in: tuple[str, ...] | None = None


def plan_write(
    policy: RolloutPolicy, stable: int, canary: int, *, ended: bool = False
) -> RouteWrite:
    """What to write for the state machine's split (route weights on the policy's
    weight_total). `ended`: the rollout is over (promoted, rolled back, aborted): no header
    rule stays."""
    spec = policy.spec
    total = stable + canary
    opt_in = spec.opt_in.values if spec.opt_in is not None and not ended else None
    if spec.stickiness is None:
        return RouteWrite((stable, canary), None, opt_in)
    if ended or canary >= total or canary <= 0:
        return RouteWrite((stable, canary), None, opt_in)
    return RouteWrite((total, 0), canary * 100 / total, opt_in)


def served_split(
    policy: RolloutPolicy, weights: tuple[int, int], cohort_percent: float | None
) -> tuple[int, int]:
    """The (stable, canary) split in the state machine's terms for what a route holds: the
    weighted rule's weights, and its cohort rule's share of sessions (None: no cohort rule, or
    one we did not write). The share (rounded down to 1/65536 by the regex) reads back as the
    step, in units of the policy's weight total (0.01% at the finest)."""
    total = policy.spec.weight_total
    if policy.spec.stickiness is None or cohort_percent is None or weights != (total, 0):
        return weights  # not sticky, no cohort, or the weighted rule was changed: as it is
    share = round(cohort_percent * total / 100)
    return (total - share, share)


def generated_cohort_percent(generated: GeneratedRoute, header: str) -> float | None:
    """The share of sessions the generated HTTPRoute's cohort rule selects (None: none)."""
    for rule in generated.rules:
        for match in rule.header_matches:
            for h in match:
                if h.get("name", "").lower() == header and h.get("type") == "RegularExpression":
                    try:
                        return cohort_share(h.get("value", ""))
                    except ValueError:
                        return None
    return None
