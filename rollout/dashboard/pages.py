"""The dashboard's HTML (pure: views in, markup out; everything user-supplied is escaped).

Pages are complete without JavaScript; a few lines of inline script refresh the live part
every two seconds (short polling of the same server) and put the confirmation in front of
the control buttons. No script or style is fetched from anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

import yaml

from rollout.controller.state import RolloutPhase
from rollout.dashboard.source import EventView, MetricSample, RolloutView
from rollout.dashboard.svg import Chart, Marker, Series, render
from rollout.policy.schema import RolloutPolicy

POLL_MILLISECONDS = 2000

# What each button does, in the words of the CLI command it stands for.
ACTIONS: dict[str, str] = {
    "pause": "Freeze the rollout at its current weights (sets the pause annotation).",
    "resume": "Clear a manual pause and hand the controller a fresh resume token.",
    "abort": "Send ALL traffic back to stable at once; the rollout ends Aborted.",
    "promote": "Skip the remaining steps: ALL traffic to the canary; the rollout ends Succeeded.",
    "approve": "Approve the step the rollout waits at (sets the approve annotation naming it).",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 20px}header a{color:#fff;text-decoration:none}
main{padding:14px 20px}h1{font-size:20px;margin:6px 0 10px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}.phase{font-weight:600;padding:1px 6px;border-radius:3px}
.Progressing{background:#dbeafe}.Paused{background:#fef3c7}.Succeeded{background:#dcfce7}
.RolledBack,.Aborted{background:#fee2e2}.Pending{background:#e5e7eb}
.Pass{color:#15803d}.Fail{color:#b91c1c;font-weight:600}.Inconclusive{color:#a16207}
.Error{color:#7e22ce}.Warning td{background:#fff7ed}
.chart{background:#fff;border:1px solid #dde1e6;margin:4px 8px 8px 0}
.chart .plot{fill:#fff;stroke:#c9ced6}.chart .grid{stroke:#eef0f3}
.chart .axis,.chart .note{font-size:10px;fill:#5b6472}.chart .title{font-size:12px;font-weight:600}
.chart .legend{font-size:11px}.chart polyline{fill:none;stroke-width:2}
.series.canary polyline,.series.weight polyline{stroke:#d97706}
.series.canary circle,.series.weight circle{fill:#d97706}.legend.canary,.legend.weight{fill:#d97706}
.series.stable polyline{stroke:#2563eb}.series.stable circle{fill:#2563eb}
.legend.stable{fill:#2563eb}
.series.threshold polyline{stroke:#dc2626;stroke-width:1.5}.legend.threshold{fill:#dc2626}
.marker line{stroke:#64748b;stroke-dasharray:2 3}.marker.warning line{stroke:#dc2626}
.charts{display:flex;flex-wrap:wrap}.muted{color:#5b6472;font-size:12px}
.actions button{margin-right:8px;padding:5px 12px;font-size:13px;cursor:pointer}
button.danger{background:#b91c1c;color:#fff;border:0;border-radius:3px}
pre{background:#fff;border:1px solid #dde1e6;padding:8px;font-size:12px;overflow:auto}
#action-result{margin-left:8px;font-size:13px}
"""

_POLL_SCRIPT = """
<script>
(function(){
  const live = document.getElementById('live');
  async function poll(){
    try {
      const r = await fetch(live.dataset.src, {cache: 'no-store'});
      if (r.ok) { live.innerHTML = await r.text(); live.dataset.refreshed = Date.now(); }
    } catch (e) {}
  }
  setInterval(poll, %d);
})();
</script>
"""

_ACTION_SCRIPT = """
<script>
document.querySelectorAll('button[data-action]').forEach(function(b){
  b.addEventListener('click', async function(){
    const out = document.getElementById('action-result');
    if (!window.confirm(b.dataset.confirm)) { out.textContent = 'cancelled'; return; }
    const r = await fetch(b.dataset.url, {method: 'POST', headers: {'X-Rollout-Action': '1'}});
    const body = await r.json();
    out.textContent = (r.ok ? '' : 'refused: ') + body.message;
    out.dataset.status = r.status;
  });
});
</script>
"""


def _clock(t: float | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.4g} {unit}".strip()


def page(title: str, body: str, base: str, *, live_src: str | None = None) -> str:
    poll = _POLL_SCRIPT % POLL_MILLISECONDS if live_src is not None else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><a href="{escape(base)}/">envoy-ai-rollout</a> · rollouts</header>'
        f"<main>{body}</main>{poll}</body></html>"
    )


def rollout_href(base: str, view: RolloutView) -> str:
    return f"{base}/rollouts/{quote(view.namespace, safe='')}/{quote(view.route, safe='')}"


def _step_text(view: RolloutView, policy: RolloutPolicy | None) -> str:
    state = view.state
    if state is None:
        return "—"
    if policy is not None:
        steps = policy.spec.weights
        index = min(state.step_index, len(steps) - 1)
        return f"{index + 1} of {len(steps)} ({steps[index]}%)"
    return str(state.step_index + 1)


def list_table(
    views: Sequence[RolloutView], base: str, policies: dict[str, RolloutPolicy | None]
) -> str:
    if not views:
        return '<p id="no-rollouts">No rollouts found (no route carries a rollout state yet).</p>'
    rows = []
    for view in views:
        state = view.state
        href = escape(rollout_href(base, view))
        if state is None:
            rows.append(
                f'<tr class="rollout" data-route="{escape(view.namespace)}/{escape(view.route)}">'
                f'<td><a href="{href}">?</a></td><td>{escape(view.namespace)}/'
                f"{escape(view.route)}</td><td colspan=5>{escape(view.problem or '')}</td></tr>"
            )
            continue
        verdict = state.last_analysis
        outcome = verdict.outcome.value if verdict else "none yet"
        weight = f"{state.canary_percent:g}%"
        if view.live_weights is not None:
            live = view.live_weights[state.canary_backend]
            if live != state.canary_weight:
                weight += f" (route: {live})"
        rows.append(
            f'<tr class="rollout" data-route="{escape(view.namespace)}/{escape(view.route)}" '
            f'data-phase="{state.phase.value}">'
            f'<td><a href="{href}">{escape(state.policy_name)}</a></td>'
            f"<td>{escape(view.namespace)}/{escape(view.route)}</td>"
            f'<td><span class="phase {state.phase.value}">{state.phase.value}</span></td>'
            f"<td>{escape(_step_text(view, policies.get(state.policy_name)))}</td>"
            f'<td class="weight">{escape(weight)}</td>'
            f'<td class="{escape(outcome)}">{escape(outcome)}</td>'
            f"<td>{escape(state.reason)}</td></tr>"
        )
    return (
        '<table id="rollouts"><tr><th>rollout</th><th>route</th><th>phase</th><th>step</th>'
        "<th>canary weight</th><th>last analysis</th><th>reason</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def list_page(table: str, base: str, sources: str) -> str:
    body = (
        f"<h1>Rollouts</h1>"
        f'<div id="live" data-src="{escape(base)}/live">{table}</div>'
        f'<p class="muted">{escape(sources)}</p>'
    )
    return page("Rollouts", body, base, live_src=f"{base}/live")


# ---- one rollout ---------------------------------------------------------------------------

_THRESHOLD = re.compile(r"(canary/stable|canary-stable|canary) (<=|>=) (-?[0-9.eE+-]+)")


def threshold_lines(
    threshold: str, stable: Sequence[tuple[float, float]], t0: float, t1: float
) -> list[Series]:
    """The threshold text ("canary <= 0.05, canary/stable <= 1.5") as lines on the canary's
    scale: absolute limits flat, ratios and differences following stable's values."""
    lines = []
    for left, op, number in _THRESHOLD.findall(threshold):
        try:
            limit = float(number)
        except ValueError:
            continue
        label = f"{left} {op} {number}"
        if left == "canary":
            points = [(t0, limit), (t1, limit)]
        elif left == "canary/stable":
            points = [(t, v * limit) for t, v in stable]
        else:
            points = [(t, v + limit) for t, v in stable]
        lines.append(Series(label, points, css="threshold", dashed=True, dots=False))
    return lines


def _markers(events: Sequence[EventView]) -> list[Marker]:
    return [
        Marker(e.time, f"{e.reason}: {e.message}", "warning" if e.type == "Warning" else "event")
        for e in events
    ]


def _merge(*sources: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for source in sources:
        for t, v in source:
            if not math.isnan(v):
                merged[round(t, 3)] = v
    return sorted(merged.items())


def live_section(
    view: RolloutView,
    policy: RolloutPolicy | None,
    events: Sequence[EventView],
    weights: Sequence[tuple[float, float]],
    metrics: dict[
        str, tuple[list[MetricSample], list[tuple[float, float]], list[tuple[float, float]]]
    ],
    now: float,
) -> str:
    state = view.state
    if state is None:
        return f'<p class="Fail">{escape(view.problem or "no rollout state")}</p>'
    started = state.started_at.timestamp() if state.started_at else None
    firsts = [t for t, _ in weights[:1]] + [e.time for e in events[:1]]
    t0 = min([t for t in [started, *firsts] if t is not None], default=now - 60)
    t1 = max(now, t0 + 10)
    parts = [_summary(view, policy)]
    markers = _markers([e for e in events if e.time >= t0])
    parts.append('<h2>Canary weight</h2><div class="charts">')
    parts.append(
        render(
            Chart(
                "canary weight",
                [Series("canary %", weights, css="weight", step=True)],
                markers,
                unit="%",
                y_min=0,
                y_max=100,
                chart_id="weight-chart",
            ),
            t0,
            t1,
        )
    )
    parts.append("</div><h2>Checks</h2>")
    if not metrics:
        parts.append('<p class="muted">No analysis yet.</p>')
    parts.append('<div class="charts">')
    for name, (samples, prom_canary, prom_stable) in metrics.items():
        canary = _merge(prom_canary, [(s.time, s.canary) for s in samples if s.canary is not None])
        stable = _merge(prom_stable, [(s.time, s.stable) for s in samples if s.stable is not None])
        last = samples[-1] if samples else None
        threshold = last.threshold if last else ""
        unit = last.unit if last else ""
        series = [Series("canary", canary, css="canary")]
        if stable:
            series.append(Series("stable", stable, css="stable"))
        series.extend(threshold_lines(threshold, stable, t0, t1))
        notes = [threshold] if threshold else []
        parts.append(
            render(
                Chart(
                    name,
                    series,
                    markers,
                    unit=unit,
                    chart_id=f"metric-{name}",
                    notes=notes,
                    width=470,
                    height=200,
                ),
                t0,
                t1,
            )
        )
    parts.append("</div>")
    parts.append(_analysis_table(view))
    parts.append(_events_table(events))
    return "".join(parts)


def _summary(view: RolloutView, policy: RolloutPolicy | None) -> str:
    state = view.state
    assert state is not None
    c = state.counters
    weights = (
        ", ".join(f"{escape(k)} {v}" for k, v in view.live_weights.items())
        if view.live_weights
        else "backends not in the route"
    )
    rows = [
        ("phase", f'<span class="phase {state.phase.value}" id="phase">{state.phase.value}</span>'),
        ("step", escape(_step_text(view, policy))),
        (
            "weights",
            f"{weights} (the controller wants stable {state.stable_percent:g}% / canary "
            f"{state.canary_percent:g}%)",
        ),
        ("reason", escape(state.reason)),
        (
            "checks",
            f"passed {c.passed_total}, failed {c.failed_total}, inconclusive "
            f"{c.inconclusive_total}, errors {c.errors_total}",
        ),
        ("started", _clock(state.started_at.timestamp() if state.started_at else None)),
    ]
    if state.pause_reason:
        rows.append(("paused", escape(state.pause_reason)))
    if state.hold_reason:
        rows.append(("held", escape(state.hold_reason)))
    if view.controls:
        rows.append(("controls set", escape(", ".join(view.controls))))
    return (
        '<table id="summary">'
        + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _analysis_table(view: RolloutView) -> str:
    state = view.state
    assert state is not None
    verdict = state.last_analysis
    if verdict is None:
        return ""
    rows = "".join(
        f'<tr><td>{escape(m.metric)}</td><td class="{m.outcome.value}">{m.outcome.value}</td>'
        f"<td>{_num(m.canary, m.unit)}</td><td>{_num(m.stable, m.unit)}</td>"
        f"<td>{escape(m.threshold)}</td><td>{escape(m.reason)}</td></tr>"
        for m in verdict.metrics
    )
    when = _clock(state.last_analysis_at.timestamp() if state.last_analysis_at else None)
    return (
        f'<h2>Last analysis: <span class="{verdict.outcome.value}">{verdict.outcome.value}'
        f"</span> <span class=muted>at {when}</span></h2>"
        '<table id="analysis"><tr><th>check</th><th>outcome</th><th>canary</th><th>stable</th>'
        f"<th>threshold</th><th>why</th></tr>{rows}</table>"
    )


def _events_table(events: Sequence[EventView]) -> str:
    if not events:
        return '<h2>Events</h2><p class="muted">No Events on the route.</p>'
    rows = "".join(
        f'<tr class="{escape(e.type)}"><td>{_clock(e.time)}</td><td>{escape(e.type)}</td>'
        f"<td>{escape(e.reason)}</td><td>{e.count}</td><td>{escape(e.message)}</td></tr>"
        for e in reversed(events)
    )
    return (
        '<h2>Events</h2><table id="events"><tr><th>last seen</th><th>type</th><th>reason</th>'
        f"<th>count</th><th>message</th></tr>{rows}</table>"
    )


def rollout_page(
    view: RolloutView,
    policy: RolloutPolicy | None,
    live: str,
    base: str,
    *,
    allow_actions: bool,
    knows_policies: bool,
    sources: str,
) -> str:
    state = view.state
    name = state.policy_name if state else "?"
    href = rollout_href(base, view)
    title = f"{name} · {view.namespace}/{view.route}"
    parts = [f"<h1>Rollout {escape(name)} <span class=muted>on {escape(view.namespace)}/"]
    parts.append(f"{escape(view.route)}</span></h1>")
    if allow_actions:
        api = f"{base}/api/rollouts/{quote(view.namespace, safe='')}/{quote(view.route, safe='')}"
        where = f"{view.namespace}/{view.route}"
        buttons = "".join(
            f'<button data-action="{action}" data-url="{escape(f"{api}/{action}")}" '
            f'data-confirm="{escape(f"{action.title()} the rollout {name} on {where}? {text}")}" '
            f'class="{"danger" if action in ("abort", "promote") else ""}" title="{escape(text)}">'
            f"{action.title()}</button>"
            for action, text in ACTIONS.items()
        )
        parts.append(f'<div class="actions">{buttons}<span id="action-result"></span></div>')
    else:
        parts.append(
            '<p class="muted" id="actions-disabled">Read-only: start the dashboard with '
            "--allow-actions for pause, resume, abort, promote and approve buttons.</p>"
        )
    parts.append(f'<div id="live" data-src="{escape(href)}/live">{live}</div>')
    parts.append("<h2>Policy</h2>")
    if policy is not None:
        text = yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True), sort_keys=False)
        parts.append(f'<pre id="policy">{escape(text)}</pre>')
    elif knows_policies:
        parts.append(
            f'<p class="muted" id="policy">The controller has no policy named {escape(name)} '
            "now (removed or renamed?).</p>"
        )
    else:
        fingerprint = state.policy_hash if state else "?"
        parts.append(
            f'<p class="muted" id="policy">Policy {escape(name)} (fingerprint '
            f"{escape(fingerprint)}): start the dashboard with --policies PATH to show it.</p>"
        )
    parts.append(f'<p class="muted">{escape(sources)}</p>')
    script = _ACTION_SCRIPT if allow_actions else ""
    return page(title, "".join(parts) + script, base, live_src=f"{href}/live")


def not_found_page(base: str, what: str) -> str:
    body = (
        f'<h1>Not found</h1><p id="not-found">{escape(what)}</p>'
        f'<p><a href="{escape(base)}/">All rollouts</a></p>'
    )
    return page("Not found", body, base)


def error_page(base: str, message: str) -> str:
    body = f'<h1>Something went wrong</h1><p id="error">{escape(message)}</p>'
    return page("Error", body, base)


def is_terminal(view: RolloutView) -> bool:
    return view.state is not None and view.state.phase in (
        RolloutPhase.SUCCEEDED,
        RolloutPhase.ROLLED_BACK,
        RolloutPhase.ABORTED,
    )
