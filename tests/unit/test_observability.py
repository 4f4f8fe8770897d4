"""ControllerMetrics caches its labelled children; /metrics says what `.labels()` would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

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
    child = metrics.child(metrics.api_writes, "r", "ns", "route", "state")
    assert child is metrics.api_writes.labels("r", "ns", "route", "state")
    assert metrics.child(metrics.api_writes, "r", "ns", "route", "state") is child


def reference_gauges(registry: CollectorRegistry) -> dict[str, Gauge]:
    """prometheus_client Gauges as ControllerMetrics declared them before holding the
    per-rollout gauges as plain values: what /metrics must still say."""
    rollout = ["rollout", "namespace", "route"]
    return {
        "phase": Gauge(
            "rollout_phase",
            "1 for the rollout's current phase, else 0",
            [*rollout, "phase"],
            registry=registry,
        ),
        "weight": Gauge(
            "rollout_canary_weight", "Canary weight (percent) written", rollout, registry=registry
        ),
        "step": Gauge(
            "rollout_step_index", "Index of the current step", rollout, registry=registry
        ),
        "value": Gauge(
            "rollout_metric_value",
            "Last measured canary value",
            [*rollout, "metric"],
            registry=registry,
        ),
        "stable": Gauge(
            "rollout_metric_stable_value",
            "Last measured stable value",
            [*rollout, "metric"],
            registry=registry,
        ),
        "threshold": Gauge(
            "rollout_metric_threshold_info",
            "The metric's pass condition and the unit of its values (value 1)",
            [*rollout, "metric", "threshold", "unit"],
            registry=registry,
        ),
    }


def gauge_families(text: str, names: tuple[str, ...]) -> list[str]:
    """The lines of these metrics (HELP, TYPE and samples), in order."""

    def metric_of(line: str) -> str:
        if line.startswith("#"):
            return line.split(" ")[2]
        return line.split("{")[0].split(" ")[0]

    return [line for line in text.splitlines() if metric_of(line) in names]


def test_the_rollout_gauges_export_what_prometheus_client_gauges_would() -> None:
    metrics = ControllerMetrics()
    registry = CollectorRegistry()
    gauges = reference_gauges(registry)
    moves = [
        ("a", RolloutPhase.PENDING, 0, 0),
        ("b", RolloutPhase.PROGRESSING, 1, 10),
        ("a", RolloutPhase.PAUSED, 0, 0),
        ("c", RolloutPhase.SUCCEEDED, 2, 100),
        ("b", RolloutPhase.ROLLING_BACK, 1, 5),
    ]
    for name, phase, step, canary in moves:
        observed = RolloutState(
            policy_name=name,
            policy_hash="h",
            stable_backend="s",
            canary_backend="c",
            phase=phase,
            step_index=step,
            stable_weight=100 - canary,
            canary_weight=canary,
        )
        metrics.observe_state("ns", f"route-{name}", observed)
        labels = (name, "ns", f"route-{name}")
        for each in RolloutPhase:
            gauges["phase"].labels(*labels, each.value).set(1 if each is phase else 0)
        gauges["weight"].labels(*labels).set(observed.canary_percent)
        gauges["step"].labels(*labels).set(step)
    for threshold in ("canary <= 1", "canary <= 2"):
        metrics.observe_verdict("b", "ns", "route-b", verdict(threshold))
    gauges["value"].labels("b", "ns", "route-b", "error-rate").set(0.1)
    gauges["stable"].labels("b", "ns", "route-b", "error-rate").set(0.2)
    gauges["threshold"].labels("b", "ns", "route-b", "error-rate", "canary <= 2", "ratio").set(1)
    names = tuple(gauge._name for gauge in gauges.values())
    expected = gauge_families(generate_latest(registry).decode(), names)
    assert len(expected) == 2 * len(names) + 3 * len(RolloutPhase) + 3 + 3 + 3
    assert gauge_families(text(metrics), names) == expected
    assert (
        metrics.registry.get_sample_value(
            "rollout_phase",
            {"rollout": "b", "namespace": "ns", "route": "route-b", "phase": "RollingBack"},
        )
        == 1.0
    )


def test_a_removed_rollout_leaves_its_gauges_and_comes_back_last() -> None:
    metrics = ControllerMetrics()
    for name in ("a", "b"):
        metrics.observe_state("ns", "route", state(name))
    metrics.remove_rollout("a", "ns", "route")
    assert series(metrics, "a") == []
    metrics.observe_state("ns", "route", state("a"))
    weights = [line for line in text(metrics).splitlines() if line.startswith("rollout_canary")]
    assert [line.split('rollout="')[1][0] for line in weights] == ["b", "a"]


def test_two_gauges_of_one_name_are_refused_as_for_prometheus_client() -> None:
    metrics = ControllerMetrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("rollout_phase", "again", registry=metrics.registry)


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


def test_the_leader_gauge_exports_what_a_prometheus_client_gauge_would() -> None:
    metrics = ControllerMetrics()
    registry = CollectorRegistry()
    gauge = Gauge("rollout_leader", "1 while this replica is the leader", registry=registry)
    for value in (0, 1, 0):
        metrics.is_leader.set(value)
        gauge.set(value)
        expected = generate_latest(registry).decode().splitlines()
        assert gauge_families(text(metrics), ("rollout_leader",)) == expected
