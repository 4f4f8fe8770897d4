"""The dashboard as a WSGI application: served alone by `rollout dashboard`, or mounted by the
controller under a path of its metrics port (ControllerSettings.dashboard_path).

Routes (relative to where it is mounted):
  GET  /                                 every rollout
  GET  /live                             the list's table (polled by the page)
  GET  /rollouts/NS/ROUTE                one rollout; 404 page for an unknown one
  GET  /rollouts/NS/ROUTE/live           its live part (polled)
  GET  /api/rollouts                     the list as JSON
  POST /api/rollouts/NS/ROUTE/ACTION     pause | resume | abort | promote | approve: the
                                         annotations the CLI sets (approve: the step the
                                         rollout waits at, 409 when it waits for none).
                                         403 without --allow-actions, 503 on a replica
                                         that is not the leader, 400 without the
                                         X-Rollout-Action header (a cross-site form cannot set
                                         it, so another web page cannot press the buttons).

Errors are pages with a message, never a traceback (the traceback goes to the log).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

from rollout.controller.annotations import CONTROL_ACTIONS
from rollout.controller.state import PauseCause
from rollout.dashboard import pages
from rollout.dashboard.source import DashboardSource, RolloutView
from rollout.gateway.errors import AIGatewayError, NotFoundError

log = structlog.get_logger("rollout.dashboard")

StartResponse = Callable[..., object]
Environ = dict[str, Any]

HISTORY_WINDOW_SECONDS = 6 * 3600


@dataclass(frozen=True)
class _Response:
    status: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _html(status: str, text: str) -> _Response:
    return _Response(status, text.encode())


def _json(status: str, data: object) -> _Response:
    return _Response(status, json.dumps(data).encode(), "application/json")


class DashboardApp:
    """`DashboardApp(source, allow_actions=...)` is a WSGI callable."""

    def __init__(
        self,
        source: DashboardSource,
        *,
        allow_actions: bool = False,
        refuse_action: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.source = source
        self.allow_actions = allow_actions
        # Why an action must be refused now (not the leader), or None.
        self._refuse_action = refuse_action

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        base = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
        try:
            response = self._route(environ, base)
        except Exception as exc:
            log.exception("dashboard_error", path=environ.get("PATH_INFO"))
            message = (
                f"the Kubernetes API did not answer: {exc}"
                if isinstance(exc, AIGatewayError)
                else f"internal error ({type(exc).__name__}); see the dashboard's log"
            )
            response = _html("500 Internal Server Error", pages.error_page(base, message))
        start_response(
            response.status,
            [
                ("Content-Type", response.content_type),
                ("Content-Length", str(len(response.body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [response.body]

    # ---- routing -------------------------------------------------------------------------
    def _route(self, environ: Environ, base: str) -> _Response:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "")) or "/"
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if method == "POST":
            if len(parts) == 5 and parts[:2] == ["api", "rollouts"]:
                return self._action(environ, parts[2], parts[3], parts[4])
            return _json("404 Not Found", {"ok": False, "message": f"no such endpoint {path}"})
        if method not in ("GET", "HEAD"):
            return _json("405 Method Not Allowed", {"ok": False, "message": "GET or POST only"})
        if not parts:
            return _html("200 OK", self._list_page(base))
        if parts == ["live"]:
            return _html("200 OK", self._list_table(base))
        if parts == ["api", "rollouts"]:
            return _json("200 OK", [self._row_json(v) for v in self.source.rollouts()])
        if len(parts) in (3, 4) and parts[0] == "rollouts" and parts[3:] in ([], ["live"]):
            view = self.source.rollout(parts[1], parts[2])
            if view is None:
                return _html(
                    "404 Not Found",
                    pages.not_found_page(
                        base,
                        f"No rollout on aigatewayroute {parts[1]}/{parts[2]}: the route does "
                        "not exist, or no controller has acted on it.",
                    ),
                )
            live = self._live(view)
            if len(parts) == 4:
                return _html("200 OK", live)
            return _html(
                "200 OK",
                pages.rollout_page(
                    view,
                    self._policy_of(view),
                    live,
                    base,
                    allow_actions=self.allow_actions,
                    knows_policies=self.source.knows_policies,
                    sources=self._sources(),
                ),
            )
        return _html("404 Not Found", pages.not_found_page(base, f"No page {path}."))

    def _sources(self) -> str:
        prometheus = (
            f"Prometheus {self.source.prometheus_url}"
            if self.source.prometheus_url
            else "no Prometheus (history since the dashboard started, and from the Events)"
        )
        return (
            f"Sources: the routes' state annotations and Events, {prometheus}. Refreshed every "
            f"{pages.POLL_MILLISECONDS // 1000}s."
        )

    def _policy_of(self, view: RolloutView) -> Any:
        return self.source.policy(view.state.policy_name) if view.state else None

    def _list_table(self, base: str) -> str:
        views = self.source.rollouts()
        policies = {
            v.state.policy_name: self.source.policy(v.state.policy_name) for v in views if v.state
        }
        return pages.list_table(views, base, policies)

    def _list_page(self, base: str) -> str:
        return pages.list_page(self._list_table(base), base, self._sources())

    def _live(self, view: RolloutView) -> str:
        events = self.source.events(view)
        since = self.source.now() - HISTORY_WINDOW_SECONDS
        if view.state is not None and view.state.started_at is not None:
            since = max(since, view.state.started_at.timestamp() - 30)
        return pages.live_section(
            view,
            self._policy_of(view),
            events,
            self.source.weight_history(view, events, since),
            self.source.metric_history(view, since),
            self.source.now(),
        )

    @staticmethod
    def _row_json(view: RolloutView) -> dict[str, Any]:
        state = view.state
        return {
            "namespace": view.namespace,
            "route": view.route,
            "rollout": state.policy_name if state else None,
            "phase": state.phase.value if state else None,
            "step": state.step_index if state else None,
            "canaryWeight": state.canary_percent if state else None,
            "lastAnalysis": state.last_analysis.outcome.value
            if state and state.last_analysis
            else None,
            "reason": state.reason if state else view.problem,
        }

    # ---- actions -------------------------------------------------------------------------
    def _action(self, environ: Environ, namespace: str, route: str, action: str) -> _Response:
        if not self.allow_actions:
            return _json(
                "403 Forbidden",
                {
                    "ok": False,
                    "message": "actions are disabled: this dashboard was started without "
                    "--allow-actions (read-only)",
                },
            )
        if action not in CONTROL_ACTIONS:
            return _json(
                "404 Not Found",
                {"ok": False, "message": f"unknown action {action!r}; one of {CONTROL_ACTIONS}"},
            )
        if environ.get("HTTP_X_ROLLOUT_ACTION") != "1":
            return _json(
                "400 Bad Request",
                {"ok": False, "message": "send the X-Rollout-Action: 1 header (the page does)"},
            )
        refusal = self._refuse_action()
        if refusal is not None:
            return _json("503 Service Unavailable", {"ok": False, "message": refusal})
        view = self.source.rollout(namespace, route)
        if view is None:
            return _json(
                "404 Not Found",
                {"ok": False, "message": f"no rollout on aigatewayroute {namespace}/{route}"},
            )
        step = None
        if action == "approve":
            # As `rollout approve ROUTE` without --step: the step the rollout waits at.
            state = view.state
            if state is None or state.pause_cause is not PauseCause.AWAITING_APPROVAL:
                where = state.reason if state is not None else view.problem
                return _json(
                    "409 Conflict",
                    {"ok": False, "message": f"the rollout is not waiting for approval ({where})"},
                )
            step = f"step {state.step_index + 1}"
        try:
            done = self.source.act(namespace, route, action, step=step)
        except NotFoundError as exc:
            return _json("404 Not Found", {"ok": False, "message": str(exc)})
        except AIGatewayError as exc:
            return _json("502 Bad Gateway", {"ok": False, "message": str(exc)})
        log.info("dashboard_action", namespace=namespace, route=route, action=action)
        return _json("200 OK", {"ok": True, "message": done})


# ---- serving ----------------------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # every poll would be a log line


class DashboardServer:
    """The dashboard on its own port, and a sampler that keeps the in-memory history."""

    def __init__(
        self,
        app: DashboardApp,
        host: str = "127.0.0.1",
        port: int = 8090,
        *,
        sample_seconds: float = 2.0,
    ) -> None:
        self.app = app
        self._server = make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.host = host
        self.port = int(self._server.server_port)
        self._sample_seconds = sample_seconds
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True, name="dashboard"),
            threading.Thread(target=self._sample, daemon=True, name="dashboard-sampler"),
        ]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.app.source.sample_all()
            self._stop.wait(self._sample_seconds)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._threads[0].is_alive():
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads[1:]:
            if thread.is_alive():
                thread.join(5)

    def __enter__(self) -> DashboardServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
