"""The scheduler's pure parts and its policy reloading, with fake ports (no cluster)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rollout.analysis.provider import AnalysisRequest, Measurements
from rollout.analysis.verdicts import Measurement
from rollout.controller.observability import ControllerMetrics
from rollout.controller.scheduler import AnalysisBatcher, RolloutController, slot_start, tick_slot
from rollout.policy.loading import load_policy_paths
from rollout.policy.schema import RolloutPolicy


class CountingProvider:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def measure(self, requests: Sequence[AnalysisRequest]) -> Measurements:
        self.calls.append([r.key for r in requests])
        return {
            r.key: {
                "error-rate": Measurement(
                    metric="error-rate", canary=0.0, stable=0.0, canary_requests=100
                )
            }
            for r in requests
        }

    def is_online(self) -> bool:
        return True


def policy_text(name: str, interval: str = "10s", route: str | None = None) -> str:
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {{name: {name}}}
        spec:
          route: {{namespace: ns, name: {route or name}}}
          stable: {{backend: {name}-v1, modelNameOverride: {name}-v1}}
          canary: {{backend: {name}-v2, modelNameOverride: {name}-v2}}
          steps: [10, 100]
          analysis:
            interval: {interval}
            metrics:
              - kind: error-rate
                max: 0.1
        ---
        """)


def policies(tmp_path: Path, *texts: str) -> list[RolloutPolicy]:
    (tmp_path / "p.yaml").write_text("".join(texts))
    result = load_policy_paths([tmp_path])
    assert result.ok, result.errors
    return result.policies


def test_tick_slots_are_interval_aligned() -> None:
    now = datetime(2026, 11, 27, 15, 0, 7, tzinfo=UTC)
    slot = tick_slot(now, 10)
    assert slot_start(slot, 10) == datetime(2026, 11, 27, 15, 0, 0, tzinfo=UTC)
    assert tick_slot(now + timedelta(seconds=2.999), 10) == slot
    assert tick_slot(now + timedelta(seconds=3), 10) == slot + 1


def test_one_provider_call_per_interval_and_slot_for_all_rollouts(tmp_path: Path) -> None:
    fast = [policy_text(f"fast-{i}") for i in range(50)]
    slow = [policy_text(f"slow-{i}", interval="1m") for i in range(3)]
    loaded = policies(tmp_path, *fast, *slow)
    provider = CountingProvider()
    batcher = AnalysisBatcher(provider, ControllerMetrics())
    by_interval: dict[float, list[RolloutPolicy]] = {}
    for p in loaded:
        by_interval.setdefault(p.spec.analysis.interval.total_seconds(), []).append(p)
    for p in loaded:
        interval = p.spec.analysis.interval.total_seconds()
        got = batcher.measurements(p, 7, lambda i=interval: by_interval[i])  # type: ignore[misc]
        assert got["error-rate"].canary_requests == 100
    assert len(provider.calls) == 2  # one per interval group, not one per rollout
    assert sorted(len(c) for c in provider.calls) == [3, 50]
    batcher.measurements(loaded[0], 8, lambda: by_interval[10.0])
    assert len(provider.calls) == 3  # the next slot measures again


class FakeScheduler:
    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}


def test_a_broken_file_keeps_its_last_good_policies_and_others_run(tmp_path: Path) -> None:
    good, other = tmp_path / "good.yaml", tmp_path / "other.yaml"
    good.write_text(policy_text("alpha"))
    other.write_text(policy_text("beta"))
    controller = RolloutController(
        gateway=None,  # type: ignore[arg-type]  # no rate limits in these policies
        provider=CountingProvider(),
        reconciler=None,  # type: ignore[arg-type]
        policy_paths=[tmp_path],
    )
    controller.sync_policies()
    assert sorted(controller.policies) == ["alpha", "beta"]
    assert controller.scheduler.get_job("rollout:alpha") is not None
    good.write_text(policy_text("alpha").replace("max: 0.1", "max: lots"))
    result = controller.sync_policies()
    assert not result.ok and "good.yaml" in str(result.errors[0])
    assert sorted(controller.policies) == ["alpha", "beta"]  # alpha kept, last good version
    other.unlink()
    controller.sync_policies()
    assert sorted(controller.policies) == ["alpha"]
    assert controller.scheduler.get_job("rollout:beta") is None
    good.write_text(policy_text("alpha", interval="20s"))
    controller.sync_policies()
    job = controller.scheduler.get_job("rollout:alpha")
    assert job is not None and job.trigger.interval == timedelta(seconds=20)
