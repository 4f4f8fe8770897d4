"""The per-tick work skipped when nothing changed: the policy fingerprint is computed once
per policy object, the state annotation parsed once per text (never the text just written),
and nothing else changes."""

from __future__ import annotations

import gc
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rollout.analysis.verdicts import Measurement
from rollout.controller import state as state_module
from rollout.controller.annotations import STATE_ANNOTATION
from rollout.controller.observability import ControllerMetrics
from rollout.controller.reconciler import GatewayChecks, Reconciler
from rollout.controller.state import RolloutPhase, RolloutState, policy_fingerprint
from rollout.gateway.manifests import parse_route_snapshot
from rollout.gateway.models import RouteSnapshot
from rollout.policy.loading import load_policy_paths
from rollout.policy.schema import RolloutPolicy

POLICY = textwrap.dedent("""\
    apiVersion: rollout.model-registry.io/v1alpha1
    kind: RolloutPolicy
    metadata: {name: chat}
    spec:
      route: {namespace: ns, name: chat}
      stable: {backend: chat-v1, modelNameOverride: chat-v1}
      canary: {backend: chat-v2, modelNameOverride: chat-v2}
      steps: [10, 100]
      analysis:
        interval: 10s
        metrics:
          - {kind: error-rate, max: 0.1}
    """)


def load(tmp_path: Path, text: str = POLICY) -> RolloutPolicy:
    (tmp_path / "p.yaml").write_text(text)
    result = load_policy_paths([tmp_path])
    assert result.ok, result.errors
    (policy,) = result.policies
    return policy


def test_the_fingerprint_is_the_policy_s_and_is_forgotten_with_it(tmp_path: Path) -> None:
    policy = load(tmp_path)
    assert policy_fingerprint(policy) == policy.fingerprint()
    assert policy_fingerprint(policy) == policy.fingerprint()  # the memo's answer
    key = id(policy)
    assert key in state_module._fingerprints
    edited = load(tmp_path, POLICY.replace("steps: [10, 100]", "steps: [20, 100]"))
    assert policy_fingerprint(edited) == edited.fingerprint() != policy_fingerprint(policy)
    del policy
    gc.collect()
    assert key not in state_module._fingerprints


class Events:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def record(self, about: Any, reason: str, message: str, type: Any) -> None:
        self.reasons.append(reason)


class Gateway:
    """One route as the API server holds it; reads parse it, writes change it."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "apiVersion": "aigateway.envoyproxy.io/v1beta1",
            "kind": "AIGatewayRoute",
            "metadata": {"name": "chat", "namespace": "ns", "uid": "u", "annotations": {}},
            "spec": {
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "chat-v1", "weight": 100},
                            {"name": "chat-v2", "weight": 0},
                        ]
                    }
                ]
            },
        }

    def get_route_snapshot(self, namespace: str, name: str) -> RouteSnapshot:
        return parse_route_snapshot(self.obj)

    def update_traffic_weights(
        self, namespace: str, name: str, weights: dict[str, int], **kwargs: Any
    ) -> None:
        for ref in self.obj["spec"]["rules"][0]["backendRefs"]:
            ref["weight"] = weights[ref["name"]]
        self.obj["metadata"]["annotations"].update(kwargs.get("annotations") or {})

    def set_route_annotations(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.obj["metadata"]["annotations"].update(annotations)


def passing(state: RolloutState) -> dict[str, Measurement]:
    return {"error-rate": Measurement(metric="error-rate", canary=0.0, canary_requests=1000)}


def test_ticks_parse_the_state_annotation_once_per_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = load(tmp_path)
    gateway, events = Gateway(), Events()
    reconciler = Reconciler(
        gateway,  # type: ignore[arg-type]  # the calls a tick makes
        events,
        metrics=ControllerMetrics(),
        gateway_checks=GatewayChecks(require_accepted=False, verify_weights=False),
    )
    parsed: list[str] = []
    original = RolloutState.from_annotation.__func__  # type: ignore[attr-defined]

    def counting(cls: type[RolloutState], text: str) -> RolloutState:
        parsed.append(text)
        return original(cls, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(RolloutState, "from_annotation", classmethod(counting))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    first = reconciler.tick(policy, now, passing)
    assert first.wrote and first.decision is not None
    assert first.decision.state.phase is RolloutPhase.PROGRESSING
    written = gateway.obj["metadata"]["annotations"][STATE_ANNOTATION]
    results = [reconciler.tick(policy, now + timedelta(seconds=s), passing) for s in (1, 2, 3)]
    # Never parsed: the text read back is the one written, so its state is the one written.
    assert parsed == []
    assert all(not r.wrote and r.decision and not r.decision.changed for r in results)
    states = {id(r.decision.state) for r in results if r.decision}
    assert states == {id(first.decision.state)}
    # Someone else's write (here: a hand edit of the annotation) is read, not the memo.
    edited = RolloutState.from_annotation(written).model_copy(update={"reason": "edited"})
    parsed.clear()
    gateway.obj["metadata"]["annotations"][STATE_ANNOTATION] = edited.to_annotation()
    result = reconciler.tick(policy, now + timedelta(seconds=4), passing)
    assert result.decision is not None and result.decision.state.reason == "edited"
    assert len(parsed) == 1


def test_an_unreadable_state_is_refused_every_tick(tmp_path: Path) -> None:
    policy = load(tmp_path)
    gateway, events = Gateway(), Events()
    reconciler = Reconciler(
        gateway,  # type: ignore[arg-type]
        events,
        gateway_checks=GatewayChecks(require_accepted=False, verify_weights=False),
    )
    gateway.obj["metadata"]["annotations"][STATE_ANNOTATION] = "{not json"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(2):
        result = reconciler.tick(policy, now, passing)
        assert result.skipped is not None and result.skipped.startswith("state_unreadable")
    assert events.reasons == ["StateUnreadable", "StateUnreadable"]
