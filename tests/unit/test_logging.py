"""The JSON log lines (orjson): valid JSON, the same keys, and what the stdlib wrote."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from rollout.logging import configure_logging


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # other tests log with structlog's defaults


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_decision_line_is_one_json_object_with_its_fields() -> None:
    stream = io.StringIO()
    configure_logging(level="info", stream=stream)
    metrics = [{"metric": "error-rate", "outcome": "Pass", "canary": 0.01, "stable": None}]
    structlog.get_logger("t").bind(rollout="r", namespace="ns").info(
        "rollout_decision", step=1, weights={"stable": 90, "canary": 10}, metrics=metrics
    )
    (line,) = lines(stream)
    assert set(line) == {
        "rollout",
        "namespace",
        "step",
        "weights",
        "metrics",
        "event",
        "level",
        "timestamp",
    }
    assert line["metrics"] == metrics and line["event"] == "rollout_decision"
    assert line["level"] == "info"


def test_values_json_cannot_hold_are_written_as_before_or_as_null() -> None:
    stream = io.StringIO()
    configure_logging(level="info", stream=stream)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    structlog.get_logger("t").info("e", when=when, keys={1: "a"}, nan=float("nan"))
    structlog.get_logger("t").info("e", big=2**70)  # beyond orjson: the stdlib encoder
    first, second = lines(stream)
    assert first["when"] == repr(when)  # structlog's fallback, as with the stdlib encoder
    assert first["keys"] == {"1": "a"}
    assert first["nan"] is None  # valid JSON (the stdlib wrote NaN)
    assert second["big"] == 2**70


def test_configuring_again_writes_to_the_new_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="info", stream=first)
    log = structlog.get_logger("t")
    log.info("one")
    configure_logging(level="info", stream=second)
    log.info("two")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]
