"""Server-rendered SVG line charts (no JavaScript library, nothing to build or download).

Contract: pure: data in, markup out. Every point is a `<circle class="pt">` with its time and
value in `data-t` / `data-v`, so tests (and curious users) can read the chart's data back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (unix time, value), sorted by time
    css: str = "canary"  # canary | stable | threshold | weight
    step: bool = False  # hold each value until the next point (weights)
    dashed: bool = False
    dots: bool = True


@dataclass(frozen=True)
class Marker:
    at: float  # unix time
    label: str
    css: str = "event"  # event | warning


@dataclass(frozen=True)
class Chart:
    title: str
    series: Sequence[Series]
    markers: Sequence[Marker] = ()
    unit: str = ""
    y_min: float | None = None
    y_max: float | None = None
    width: int = 720
    height: int = 220
    chart_id: str = ""
    notes: Sequence[str] = field(default_factory=tuple)


_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 28, 36, 34


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def render(chart: Chart, t0: float, t1: float) -> str:
    """The chart over [t0, t1] (unix times) as an inline <svg>."""
    w, h = chart.width, chart.height
    plot_w, plot_h = w - _LEFT - _RIGHT, h - _TOP - _BOTTOM
    if t1 <= t0:
        t1 = t0 + 1
    values = [v for s in chart.series for _, v in _finite(s.points)]
    low = chart.y_min if chart.y_min is not None else min(values, default=0.0)
    high = chart.y_max if chart.y_max is not None else max(values, default=1.0)
    if chart.y_min is None and low > 0 and low < high * 0.5:
        low = 0.0
    if high <= low:
        high = low + (abs(low) or 1.0)
    pad = 0 if chart.y_max is not None else (high - low) * 0.08
    high += pad

    def x(t: float) -> float:
        return _LEFT + (min(max(t, t0), t1) - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return _TOP + plot_h - (min(max(v, low), high) - low) / (high - low) * plot_h

    ident = f' id="{escape(chart.chart_id)}"' if chart.chart_id else ""
    parts = [
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}"{ident} '
        f'role="img" aria-label="{escape(chart.title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text class="title" x="{_LEFT}" y="16">{escape(chart.title)}'
        + (f" ({escape(chart.unit)})" if chart.unit else "")
        + "</text>",
        f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for tick in _ticks(low, high):
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{_label(tick)}</text>"
        )
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        clock = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")
        parts.append(
            f'<text class="axis" x="{x(t):.1f}" y="{h - 14}" text-anchor="middle">{clock}</text>'
        )
    for marker in chart.markers:
        if not t0 <= marker.at <= t1:
            continue
        mx = x(marker.at)
        parts.append(
            f'<g class="marker {escape(marker.css)}" data-t="{marker.at:.3f}">'
            f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}"/>'
            f"<title>{escape(marker.label)}</title></g>"
        )
    legend_x = _LEFT
    for series in chart.series:
        points = _finite(series.points)
        css = escape(series.css)
        group = [f'<g class="series {css}" data-series="{escape(series.name)}">']
        coords: list[tuple[float, float]] = []
        for index, (t, v) in enumerate(points):
            if series.step and index > 0:
                coords.append((x(t), y(points[index - 1][1])))
            coords.append((x(t), y(v)))
        if series.step and points:
            coords.append((x(t1), y(points[-1][1])))
        if len(coords) > 1:
            dash = ' stroke-dasharray="6 4"' if series.dashed else ""
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            group.append(f'<polyline points="{path}"{dash}/>')
        if series.dots:
            group.extend(
                f'<circle class="pt" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" '
                f'data-t="{t:.3f}" data-v="{v:.6g}"><title>{escape(series.name)} '
                f"{_label(v)}</title></circle>"
                for t, v in points
                if t0 <= t <= t1
            )
        group.append("</g>")
        parts.extend(group)
        parts.append(
            f'<text class="legend {css}" x="{legend_x}" y="30">{escape(series.name)}</text>'
        )
        legend_x += 12 + 6 * len(series.name)
    for index, note in enumerate(chart.notes):
        parts.append(
            f'<text class="note" x="{_LEFT + 8}" y="{_TOP + 14 + 14 * index}">{escape(note)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
