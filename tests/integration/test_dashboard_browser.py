"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) and the
Grafana dashboard's queries against a real Prometheus, both on the demo stack: the local
kube-apiserver with the upstream CRDs, the upstream AI Gateway controller, the controller with
its real adapters and the data-plane simulator, in the test's own namespace.

Chromium comes from `make deps` (scripts/install-chromium.sh); no browser is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from rollout.controller.state import RolloutPhase, RolloutState
from rollout.dashboard.app import DashboardApp, DashboardServer
from rollout.dashboard.source import DashboardSource
from rollout.demo import DEFAULT_POLICY, DemoEnvironment, Scenario
from rollout.localcluster import LocalAIGateway, LocalControlPlane
from rollout.localcluster.prometheus import LocalPrometheus

GRAFANA_DASHBOARD = (
    Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "envoy-ai-rollout.json"
)
CHROMIUM_ENV = "ROLLOUT_CHROMIUM"


def chromium() -> str:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: run `make deps` (scripts/install-chromium.sh installs "
            f"Debian's chromium package) or set {CHROMIUM_ENV} to a Chromium binary"
        )
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def long_policy(tmp_path: Path, namespace: str) -> Path:
    """The demo policy with short intervals and more steps, so that a rollout lasts long
    enough to be watched, screenshotted and aborted at a middle step."""
    text = DEFAULT_POLICY.read_text()
    for old, new in (
        ("interval: 10s", "interval: 3s"),
        ("window: 30s", "window: 9s"),
        ("namespace: default", f"namespace: {namespace}"),
        ("steps: [10, 25, 50, 100]", "steps: [10, 25, 40, 55, 70, 85, 100]"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    return path


def wait_for(
    env: DemoEnvironment, what: str, predicate: Callable[[RolloutState], bool], timeout: float = 90
) -> RolloutState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = env.state()
        if state is not None and predicate(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {env.state()}")


def weight_values(page: Page) -> list[float]:
    values = page.eval_on_selector_all(
        "#weight-chart circle.pt", "points => points.map(p => Number(p.dataset.v))"
    )
    return [float(v) for v in values]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_the_dashboard_in_chromium_follows_the_rollout_and_aborts_it(
    control_plane: LocalControlPlane,
    ai_gateway: LocalAIGateway,
    namespace: str,
    long_policy: Path,
    browser: Browser,
    tmp_path: Path,
) -> None:
    with DemoEnvironment(
        Scenario.HEALTHY, long_policy, existing_plane=control_plane, existing_aigw=ai_gateway
    ) as env:
        policies = {env.policy.name: env.policy}
        writable = DashboardServer(
            DashboardApp(
                DashboardSource(env.gateway, namespaces=[namespace], policies=lambda: policies),
                allow_actions=True,
            ),
            port=0,
            sample_seconds=0.5,
        )
        read_only = DashboardServer(
            DashboardApp(DashboardSource(env.gateway, namespaces=[namespace])), port=0
        )
        with writable, read_only:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            wait_for(env, "the rollout to start", lambda s: s.phase is RolloutPhase.PROGRESSING)

            # The list shows the rollout, and links to its page.
            page.goto(f"{writable.url}/")
            row = page.locator(f'tr.rollout[data-route="{namespace}/demo-llm"]')
            row.wait_for()
            assert "demo" in row.inner_text() and "Progressing" in row.inner_text()
            row.locator("a").click()
            page.wait_for_selector("#weight-chart")
            assert page.locator("#policy").inner_text().count("demo-llm-v2") >= 1

            # The chart gains points as the rollout advances (the live part is re-polled).
            first = weight_values(page)
            assert first and max(first) >= 10, first
            wait_until(lambda: max(weight_values(page)) >= 40, "the chart to show step 3 (40%)")
            later = weight_values(page)
            assert len(later) > len(first) and {10.0, 25.0, 40.0} <= set(later), later
            page.wait_for_selector("svg[id^='metric-'] circle.pt")
            assert page.locator("#events tr").count() >= 3  # header + started + advanced
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            assert (tmp_path / "dashboard.png").stat().st_size > 10_000

            # Read-only: no buttons, and the endpoint refuses even a well-formed request.
            other = browser.new_page()
            other.goto(f"{read_only.url}/rollouts/{namespace}/demo-llm")
            other.wait_for_selector("#actions-disabled")
            assert other.locator("button[data-action]").count() == 0
            refused = other.request.post(
                f"{read_only.url}/api/rollouts/{namespace}/demo-llm/abort",
                headers={"X-Rollout-Action": "1"},
            )
            assert refused.status == 403 and "--allow-actions" in refused.json()["message"]
            assert env.state().phase is RolloutPhase.PROGRESSING  # type: ignore[union-attr]

            # Unknown rollout: a 404 page, not a traceback.
            missing = other.goto(f"{writable.url}/rollouts/{namespace}/no-such-route")
            assert missing is not None and missing.status == 404
            assert "No rollout on aigatewayroute" in other.locator("#not-found").inner_text()
            assert "Traceback" not in other.content()

            # Abort, behind a confirmation: dismissed first (nothing happens), then accepted.
            page.once("dialog", lambda dialog: dialog.dismiss())
            page.click('button[data-action="abort"]')
            wait_until(lambda: page.locator("#action-result").inner_text() == "cancelled", "cancel")
            assert env.state().phase is RolloutPhase.PROGRESSING  # type: ignore[union-attr]
            confirmations: list[str] = []

            def accept(dialog: Any) -> None:
                confirmations.append(dialog.message)
                dialog.accept()

            page.once("dialog", accept)
            page.click('button[data-action="abort"]')
            wait_until(lambda: "abort" in page.locator("#action-result").inner_text(), "the answer")
            assert "ALL traffic back to stable" in confirmations[0]
            aborted = wait_for(env, "Aborted", lambda s: s.phase is RolloutPhase.ABORTED, 20)
            assert aborted.canary_weight == 0 and env.weights()["demo-llm-v2"] == 0
            page.wait_for_function(
                "document.getElementById('phase').textContent === 'Aborted'", timeout=15_000
            )


# ---- Grafana ----------------------------------------------------------------------------------


def _fill(expr: str, variables: dict[str, str]) -> str:
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def _prometheus(url: str, path: str, params: dict[str, str]) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    assert body["status"] == "success", body
    return body


def _label_values(url: str, definition: str) -> list[str]:
    found = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert found, definition
    body = _prometheus(url, f"/api/v1/label/{found.group(2)}/values", {"match[]": found.group(1)})
    return list(body["data"])


def test_every_grafana_panel_query_returns_data_from_a_rollout(
    control_plane: LocalControlPlane,
    ai_gateway: LocalAIGateway,
    namespace: str,
    long_policy: Path,
) -> None:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    with DemoEnvironment(
        Scenario.HEALTHY, long_policy, existing_plane=control_plane, existing_aigw=ai_gateway
    ) as env:
        controller = f"127.0.0.1:{env.metrics_server.port}"
        with LocalPrometheus(targets=[env.exporter.target, controller]) as prometheus:
            wait_for(
                env,
                "two passed checks",
                lambda s: s.phase is RolloutPhase.PROGRESSING and s.counters.passed_total >= 2,
            )
            time.sleep(3)  # a few scrapes after the last check
            url = prometheus.url
            variables = {"namespace": namespace, "route": "demo-llm"}
            # The template variables' own queries find this rollout and both variants.
            for var in dashboard["templating"]["list"]:
                if var["type"] != "query":
                    continue
                values = _label_values(url, _fill(var["definition"], variables))
                wanted = {
                    "namespace": namespace,
                    "route": "demo-llm",
                    "model": "demo-llm-v2",
                }[var["name"]]
                assert wanted in values, (var["name"], values)
                if var["name"] == "model":
                    assert "demo-llm-v1" in values
            variables.update(
                model="demo-llm-v1|demo-llm-v2",
                datasource="prometheus",
                __rate_interval="15s",
                __range="5m",
                __interval="5s",
            )
            expressions = [
                (panel["title"], target["expr"])
                for panel in dashboard["panels"]
                for target in panel.get("targets", [])
            ]
            assert len(expressions) >= 12
            empty = []
            for title, expr in expressions:
                result = _prometheus(url, "/api/v1/query", {"query": _fill(expr, variables)})
                series = result["data"]["result"]
                if not series:
                    empty.append(title)
                    continue
                if "gen_ai_request_model" in expr:  # stable and canary side by side
                    models = {s["metric"].get("gen_ai_request_model") for s in series}
                    assert {"demo-llm-v1", "demo-llm-v2"} <= models, (title, models)
            assert empty == [], f"panels without data: {empty}"
