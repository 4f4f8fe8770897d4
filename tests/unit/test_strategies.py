"""Sticky session cohorts in the state machine's terms, and the simulator's routing table."""

from __future__ import annotations

import random
import uuid
from typing import Any

from rollout.controller.strategies import RouteWrite, plan_write, served_split
from rollout.gateway.manifests.cohorts import cohort_regex, cohort_selected_percent
from rollout.gateway.models import RouteSnapshot, RuleWeights
from rollout.policy import API_VERSION, RolloutPolicy
from rollout.simulator.routing import routing_table


def policy(sticky: bool) -> RolloutPolicy:
    spec: dict[str, Any] = {
        "route": {"namespace": "llm", "name": "chat"},
        "stable": {"backend": "v1", "modelNameOverride": "m1"},
        "canary": {"backend": "v2", "modelNameOverride": "m2"},
        "steps": [1, 10, 50],
        "analysis": {"interval": "30s", "metrics": [{"kind": "error-rate", "max": 0.05}]},
    }
    if sticky:
        spec["stickiness"] = {"header": "X-Session-ID"}
    return RolloutPolicy.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "RolloutPolicy",
            "metadata": {"name": "c"},
            "spec": spec,
        }
    )


def test_sticky_steps_are_cohort_shares_and_read_back_as_steps() -> None:
    sticky = policy(True)
    assert sticky.spec.stickiness is not None and sticky.spec.stickiness.header == "x-session-id"
    assert plan_write(sticky, 90, 10) == RouteWrite((100, 0), 10.0)
    assert plan_write(sticky, 0, 100) == RouteWrite((0, 100), None)  # promoted: no cohort
    assert plan_write(sticky, 100, 0) == RouteWrite((100, 0), None)  # rolled back: no cohort
    for step in (1, 10, 50):
        assert served_split(sticky, (100, 0), cohort_selected_percent(step)) == (100 - step, step)
    assert served_split(sticky, (60, 40), 10.0) == (60, 40)  # weighted rule changed: drift
    assert plan_write(policy(False), 90, 10) == RouteWrite((90, 10), None)
    assert policy(False).fingerprint() != sticky.fingerprint()


def test_the_routing_table_matches_cohort_rules_before_weights_and_sessions_stick() -> None:
    model = {"name": "x-ai-eg-model", "type": "Exact", "value": "llama"}

    def snapshot(percent: float) -> RouteSnapshot:
        cohort = RuleWeights(
            name="v2-cohort",
            weights={"v2": 1},
            header_matches=[
                [model, {"name": "x-session-id", "type": "RegularExpression",
                         "value": cohort_regex(percent)}]
            ],
        )  # fmt: skip
        weighted = RuleWeights(weights={"v1": 100, "v2": 0}, header_matches=[[model]])
        return RouteSnapshot(
            namespace="llm", name="chat", api_version="v1beta1", rules=[cohort, weighted]
        )

    rng = random.Random(1)
    sessions = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(4000)]
    seen: dict[str, list[str]] = {}
    for percent in (1, 10, 50):
        table = routing_table(snapshot(percent), None)
        assert table is not None and table.model_name == "llama"
        on_canary = 0
        for session in sessions:
            picked = table.pick({"x-session-id": session, "x-ai-eg-model": "llama"}, rng)
            assert picked is not None
            seen.setdefault(session, [])
            if not seen[session] or seen[session][-1] != picked.name:
                seen[session].append(picked.name)
            on_canary += picked.name == "v2"
        assert abs(on_canary / len(sessions) * 100 - percent) < 4 * (percent**0.5) + 1
        assert table.pick({"x-ai-eg-model": "llama"}, rng).name == "v1"  # type: ignore[union-attr]
    assert all(h in (["v1"], ["v2"], ["v1", "v2"]) for h in seen.values())  # never back


def test_opt_in_is_a_first_phase_before_the_steps_and_ends_with_the_rollout() -> None:
    from datetime import UTC, datetime, timedelta

    from rollout.analysis import AnalysisVerdict, CheckOutcome
    from rollout.controller import Observation
    from rollout.controller.state import decide

    rollout = RolloutPolicy.model_validate(
        {
            **policy(False).model_dump(mode="json", by_alias=True),
            "spec": {
                **policy(False).model_dump(mode="json", by_alias=True)["spec"],
                "optIn": {"header": "X-Tenant-ID", "values": ["internal", "beta-customer"]},
            },
        }
    )
    assert rollout.spec.phases == (0, 1, 10, 50, 100)
    assert plan_write(rollout, 100, 0) == RouteWrite((100, 0), None, ("internal", "beta-customer"))
    assert plan_write(rollout, 90, 10).opt_in == ("internal", "beta-customer")
    assert plan_write(rollout, 100, 0, ended=True) == RouteWrite((100, 0))
    now, state, live = datetime(2026, 1, 1, tzinfo=UTC), None, (100, 0)
    passed = AnalysisVerdict(outcome=CheckOutcome.PASS, metrics=(), reason="ok")
    reasons = []
    for verdict in (None, passed, passed):
        now += timedelta(seconds=30)
        observation = Observation(stable_weight=live[0], canary_weight=live[1])
        decision = decide(state, observation, verdict, rollout, now)
        state = decision.state
        live = (state.stable_weight, state.canary_weight)
        reasons.append(state.reason)
    assert "opt-in tenants only" in reasons[0]
    assert live == (90, 10)  # step 3 of 5: the percentage steps began after the opt-in phase
