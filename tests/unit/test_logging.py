"""The JSON log lines (orjson): valid JSON, the same keys, and what the stdlib wrote."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from rollout.logging import LazyBoundLogger, configure_logging, level_enabled


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


def test_level_enabled_follows_the_configuration_in_force() -> None:
    configure_logging(level="info", stream=io.StringIO())
    assert level_enabled(logging.INFO) and not level_enabled(logging.DEBUG)
    configure_logging(level="debug", stream=io.StringIO())
    assert level_enabled(logging.DEBUG)
    configure_logging(level="warning", stream=io.StringIO())
    assert not level_enabled(logging.INFO) and level_enabled(logging.ERROR)
    structlog.reset_defaults()  # structlog's own default logs every level
    assert level_enabled(logging.DEBUG)


class CountingLogger:
    def __init__(self) -> None:
        self.binds = 0
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **fields: Any) -> CountingLogger:
        self.binds += 1
        self.fields = fields
        return self

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.calls.append((level, event, {**self.fields, **kw}))


def test_a_lazy_logger_binds_once_and_only_when_it_writes() -> None:
    configure_logging(level="info", stream=io.StringIO())
    inner = CountingLogger()
    lazy = LazyBoundLogger(inner, rollout="r", route="x")
    lazy.debug("unchanged", step=1)  # not logged at info: nothing bound, nothing written
    assert inner.binds == 0 and inner.calls == []
    lazy.info("decision", step=2)
    lazy.warning("conflict")
    lazy.error("failed")
    assert inner.binds == 1
    assert [(level, event) for level, event, _ in inner.calls] == [
        ("info", "decision"),
        ("warning", "conflict"),
        ("error", "failed"),
    ]
    assert inner.calls[0][2] == {"rollout": "r", "route": "x", "step": 2}


def test_a_lazy_logger_writes_debug_lines_when_debug_is_logged() -> None:
    stream = io.StringIO()
    configure_logging(level="debug", stream=stream)
    LazyBoundLogger(structlog.get_logger("t"), rollout="r").debug("unchanged", step=1)
    (line,) = lines(stream)
    assert line["event"] == "unchanged" and line["rollout"] == "r" and line["step"] == 1
