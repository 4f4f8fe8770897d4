"""ControllerMetrics caches its labelled children; /metrics says what `.labels()` would."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from rollout.analysis.verdicts import AnalysisVerdict, CheckOutcome, JudgeSummary, MetricVerdict
from rollout.controller.observability import ControllerMetrics, labelled_child
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


def judged_verdict(threshold: str = "canary <= 1") -> AnalysisVerdict:
    metrics = tuple(
        MetricVerdict(
            metric=name,
            outcome=outcome,
            canary=canary,
            stable=None if name == "ttft-p95" else 0.5,
            threshold=threshold,
            reason="r",
            unit="s",
            judge=JudgeSummary(
                outcome=CheckOutcome.PASS, n_canary=3, n_stable=4, p_value=0.2, relative_shift=0.1
            )
            if name == "request-duration-p99"
            else None,
        )
        for name, outcome, canary in (
            ("error-rate", CheckOutcome.PASS, 0.0),
            ("ttft-p95", CheckOutcome.INCONCLUSIVE, None),
            ("request-duration-p99", CheckOutcome.FAIL, 31.0),
        )
    )
    return AnalysisVerdict(outcome=CheckOutcome.FAIL, metrics=metrics, reason="x")


def through_labels(metrics: ControllerMetrics) -> ControllerMetrics:
    """`metrics` with every child made by prometheus_client's own `.labels()`."""

    def child(metric: Any, *values: str) -> Any:
        key = (metric, values)
        if key not in metrics._children:
            metrics._children[key] = metric.labels(*values)
        return metrics._children[key]

    metrics.child = child  # type: ignore[method-assign]
    return metrics


def exposition(metrics: ControllerMetrics) -> list[str]:
    return [line for line in text(metrics).splitlines() if "_created" not in line]


def test_children_made_directly_export_what_labels_children_export() -> None:
    fast, slow = ControllerMetrics(), through_labels(ControllerMetrics())
    for metrics in (fast, slow):
        for name in ("a", "b", "c"):
            metrics.observe_verdict(name, "ns", f"route-{name}", judged_verdict())
            metrics.observe_state("ns", f"route-{name}", state(name))
            metrics.count_write(name, "ns", f"route-{name}", "weights")
            metrics.count_reconcile_error(name, "ns", f"route-{name}", "boom")
        metrics.observe_verdict("a", "ns", "route-a", judged_verdict("canary <= 2"))
        metrics.remove_rollout("b", "ns", "route-b")
    assert exposition(fast) == exposition(slow)
    assert len(exposition(fast)) > 40


def test_a_child_made_directly_is_the_one_labels_returns_and_looks_like_it() -> None:
    registry = ControllerMetrics()
    for metric, values in (
        (registry.metric_value, ("r", "ns", "route", "ttft-p95")),
        (registry.checks, ("r", "ns", "route", "Pass")),
        (registry.phase, ("r", "ns", "route", "Paused")),
    ):
        made = labelled_child(metric, values)
        assert metric.labels(*values) is made
        assert labelled_child(metric, values) is made
        reference = type(metric)(
            metric._original_name,
            metric._documentation,
            metric._labelnames,
            registry=None,
            _labelvalues=values,
        )
        ignore = {"_value", "_created"}
        assert {k: v for k, v in vars(made).items() if k not in ignore} == {
            k: v for k, v in vars(reference).items() if k not in ignore
        }
        assert type(made._value) is type(reference._value)
        assert made._value is not metric.labels(*values[:3], "other")._value


def test_labelled_child_refuses_what_labels_refuses() -> None:
    metrics = ControllerMetrics()
    with pytest.raises(ValueError, match="Incorrect label count"):
        labelled_child(metrics.metric_value, ("r", "ns"))
