"""ControllerMetrics caches its labelled children; /metrics says what `.labels()` would."""

from __future__ import annotations

from prometheus_client import generate_latest

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome, MetricVerdict
from rollout.controller.observability import ControllerMetrics
from rollout.controller.state import RolloutPhase, RolloutState


def verdict(threshold: str = "canary <= 1") -> AnalysisVerdict:
    metric = MetricVerdict(
        metric="error-rate",
        outcome=CheckOutcome.PASS,
        canary=0.1,
        stable=0.2,
        threshold=threshold,
        reason="ok",
        unit="ratio",
    )
    return AnalysisVerdict(outcome=CheckOutcome.PASS, metrics=(metric,), reason="ok")


def state(name: str) -> RolloutState:
    return RolloutState(
        policy_name=name,
        policy_hash="h",
        stable_backend="a",
        canary_backend="b",
        phase=RolloutPhase.PROGRESSING,
        step_index=1,
        stable_weight=90,
        canary_weight=10,
    )


def text(metrics: ControllerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def series(metrics: ControllerMetrics, rollout: str) -> list[str]:
    return [
        line
        for line in text(metrics).splitlines()
        if f'rollout="{rollout}"' in line and "_created" not in line
    ]


def test_a_cached_child_is_the_child_labels_gives() -> None:
    metrics = ControllerMetrics()
    child = metrics.child(metrics.step, "r", "ns", "route")
    assert child is metrics.step.labels("r", "ns", "route")
    assert metrics.child(metrics.step, "r", "ns", "route") is child


def test_repeated_observations_say_what_they_said_uncached() -> None:
    metrics = ControllerMetrics()
    for _ in range(3):
        metrics.observe_verdict("r", "ns", "route", verdict())
        metrics.observe_state("ns", "route", state("r"))
        metrics.count_write("r", "ns", "route", "weights")
    lines = series(metrics, "r")
    assert (
        'rollout_checks_total{namespace="ns",outcome="Pass",rollout="r",route="route"} 3.0' in lines
    )
    assert (
        'rollout_api_writes_total{kind="weights",namespace="ns",rollout="r",route="route"} 3.0'
    ) in lines
    assert (
        'rollout_phase{namespace="ns",phase="Progressing",rollout="r",route="route"} 1.0' in lines
    )


def test_a_new_threshold_replaces_the_series_and_the_old_one_can_come_back() -> None:
    metrics = ControllerMetrics()
    metrics.observe_verdict("r", "ns", "route", verdict("canary <= 1"))
    metrics.observe_verdict("r", "ns", "route", verdict("canary <= 2"))
    info = [line for line in series(metrics, "r") if "threshold_info" in line]
    assert len(info) == 1 and 'threshold="canary <= 2"' in info[0]
    # A stale cached child would be written to but no longer exported.
    metrics.observe_verdict("r", "ns", "route", verdict("canary <= 1"))
    info = [line for line in series(metrics, "r") if "threshold_info" in line]
    assert len(info) == 1 and 'threshold="canary <= 1"' in info[0]


def test_remove_rollout_drops_its_series_and_children_and_no_other() -> None:
    metrics = ControllerMetrics()
    for name in ("r", "other"):
        metrics.observe_verdict(name, "ns", "route", verdict())
        metrics.observe_state("ns", "route", state(name))
        metrics.count_write(name, "ns", "route", "state")
        metrics.count_reconcile_error(name, "ns", "route", "route_unreadable")
    before_other = series(metrics, "other")
    metrics.remove_rollout("r", "ns", "route")
    assert series(metrics, "r") == []
    assert series(metrics, "other") == before_other
    assert all(values[0] != "r" for _, values in metrics._children)
    # Observed again, its series come back (fresh children, counters from zero).
    metrics.observe_verdict("r", "ns", "route", verdict())
    assert 'rollout_checks_total{namespace="ns",outcome="Pass",rollout="r",route="route"} 1.0' in (
        series(metrics, "r")
    )
    assert any("threshold_info" in line for line in series(metrics, "r"))
