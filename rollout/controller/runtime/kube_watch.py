"""KubeRouteWatcher: the RouteWatcher port as LIST + WATCH of AIGatewayRoutes.

Per scope (one namespace, or the whole cluster) the loop is client-go's reflector, simplified:

1. LIST (paginated) for a consistent snapshot and its resourceVersion; every listed route is
   delivered as a change, so a (re)started controller reconciles everything, and a route that
   was known before but is no longer listed is delivered as deleted (a deletion missed while
   disconnected is not lost).
2. WATCH from that resourceVersion with timeoutSeconds and bookmarks, following it through
   ADDED/MODIFIED/DELETED/BOOKMARK events; when the server ends the watch, watch again.
3. 410 Gone (the resourceVersion was compacted away): LIST again. Other API errors (403, a
   removed CRD version, 5xx): back off and LIST again, re-resolving the API version. A dropped
   connection: back off and resume the watch from the last resourceVersion. Backoff doubles
   from 1 s to 30 s and resets once data flows again.

Why the raw HTTP pool and not `kubernetes.watch.Watch`: `Watch` needs a generated API method
(for custom objects, CustomObjectsApi with its pydantic layer, whose results we would turn back
into dicts), creates its own default `ApiClient()` on construction, and retries a 410 once by
itself from an old resourceVersion. The raw request is `param_serialize` (the same URL, auth
and TLS as every other call) plus `pool_manager.request(preload_content=False)`, read line by
line: one JSON watch event per line.

Stopping: `watch` runs one worker thread per scope and the calling thread waits on `stop`;
when it is set, every open watch response is shut down (`HTTPResponse.shutdown()` unblocks a
read in progress from another thread), so `watch` returns within a moment instead of waiting
out the watch's read timeout. Namespaces: None is one cluster-wide watch; a list is one watch
per namespace (only namespaced permissions are needed). `on_change` is called from the worker
threads but never concurrently (calls are serialized), and an exception it raises is logged,
not propagated: the periodic reconcile still covers that route.

The cache: with a `RouteStore`, every LIST replaces the scope's copy (what it no longer shows is
gone) and every event updates it, so ticks read routes from memory instead of a GET each. A
scope is marked synced after its LIST and when a watch resumes, unsynced as soon as its watch
fails (until then ticks read from the API), and re-LISTed every `resync_seconds` as a
safety net against a cache that drifted.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import structlog
import urllib3
from kubernetes import client as k8s

from rollout import kubeapi
from rollout.controller.ports import RouteChange
from rollout.gateway.constants import AI_GATEWAY_ROUTE, AIGATEWAY_GROUP
from rollout.gateway.errors import error_from_status
from rollout.gateway.route_store import RouteStore

log = structlog.get_logger("rollout.watch")

DEFAULT_WATCH_TIMEOUT_SECONDS: Final = 60
DEFAULT_RESYNC_SECONDS: Final = 600.0
LIST_PAGE_SIZE: Final = 500
_CONNECT_TIMEOUT: Final = 5.0
# The server ends a watch after timeoutSeconds; a read silent for longer than that plus this
# margin means the connection is dead (no bookmark, no close), so give up on it.
_READ_MARGIN: Final = 5.0
_JOIN_TIMEOUT: Final = 10.0

_Key = tuple[str, str]  # (namespace, name)


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): LIST again."""


class _WatchClosed(Exception):
    """The server ended a watch at once without a single event; treated like a dropped
    connection so a misbehaving proxy cannot make us spin."""


@dataclass
class _Scope:
    """One watched scope's progress: where to resume and what it has delivered."""

    namespace: str | None
    version: str | None = None
    resource_version: str | None = None  # None: LIST first
    known: dict[_Key, dict[str, str]] = field(default_factory=dict)  # last annotations
    listed_at: float = 0.0  # time.monotonic() of the last LIST

    @property
    def label(self) -> str:
        return self.namespace or "<all namespaces>"


class _Session:
    """What the workers of one `watch` call share: stop, open responses, serialized emits."""

    def __init__(self, stop: threading.Event, on_change: Callable[[RouteChange], None]) -> None:
        self.stop = stop
        self._on_change = on_change
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()
        self._open: set[urllib3.BaseHTTPResponse] = set()

    def emit(self, change: RouteChange) -> None:
        with self._emit_lock:
            try:
                self._on_change(change)
            except Exception:
                log.exception(
                    "route_change_handler_failed",
                    route=f"{change.namespace}/{change.name}",
                    deleted=change.deleted,
                )

    def opened(self, response: urllib3.BaseHTTPResponse) -> bool:
        """Register an open stream; False if stop was already set (the caller closes it)."""
        with self._lock:
            if self.stop.is_set():
                return False
            self._open.add(response)
            return True

    def closed(self, response: urllib3.BaseHTTPResponse) -> None:
        with self._lock:
            self._open.discard(response)

    def interrupt(self) -> None:
        with self._lock:
            for response in self._open:
                try:
                    response.shutdown()
                except Exception as exc:  # already closed or not a socket: nothing to unblock
                    log.debug("route_watch_shutdown_failed", error=repr(exc))


class KubeRouteWatcher:
    """RouteWatcher over GET .../aigatewayroutes?watch=1. One instance may serve many calls."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        version_resolver: Callable[[], str] | None = None,
        *,
        timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        label_selector: str | None = None,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
        request_timeout: float = 10.0,
        store: RouteStore | None = None,
        resync_seconds: float = DEFAULT_RESYNC_SECONDS,
    ) -> None:
        self._api = api_client
        self._store = store
        self._resync_seconds = resync_seconds
        self._version_resolver = version_resolver or self._discover_version
        self._timeout_seconds = timeout_seconds
        self._label_selector = label_selector
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._request_timeout = request_timeout

    def watch(
        self,
        namespaces: Sequence[str] | None,
        on_change: Callable[[RouteChange], None],
        stop: threading.Event,
    ) -> None:
        session = _Session(stop, on_change)
        scopes = [None] if namespaces is None else list(dict.fromkeys(namespaces))
        workers = [
            threading.Thread(
                target=self._run_scope,
                args=(_Scope(namespace), session),
                name=f"route-watch-{namespace or 'all'}",
                daemon=True,
            )
            for namespace in scopes
        ]
        for worker in workers:
            worker.start()
        stop.wait()
        session.interrupt()
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        log.info("route_watch_stopped", namespaces=scopes if namespaces is not None else None)

    # --- one scope ------------------------------------------------------------------------

    def _run_scope(self, scope: _Scope, session: _Session) -> None:
        backoff = self._min_backoff
        while not session.stop.is_set():
            try:
                if time.monotonic() - scope.listed_at > self._resync_seconds:
                    scope.resource_version = None  # resync: LIST again, between two watches
                if scope.resource_version is None:
                    scope.version = self._version_resolver()
                    self._list(scope, session)
                    backoff = self._min_backoff
                started = time.monotonic()
                delivered = self._watch_once(scope, session)
                if delivered:
                    backoff = self._min_backoff
                elif time.monotonic() - started < self._min_backoff and not session.stop.is_set():
                    raise _WatchClosed("the server ended the watch at once")
            except _Gone:
                log.info("route_watch_expired", scope=scope.label)
                scope.resource_version = None
                self._unsynced(scope)
            except Exception as exc:
                self._unsynced(scope)
                if session.stop.is_set():
                    break
                if isinstance(exc, kubeapi.ApiException) and exc.status == 410:
                    # An expired LIST continue token: the snapshot is gone, start over.
                    log.info("route_watch_expired", scope=scope.label)
                    scope.resource_version = None
                    continue
                if isinstance(exc, kubeapi.ApiException):
                    # The API answered but refused: start over from a LIST (and rediscover the
                    # version, in case the CRD changed); a dropped connection just resumes.
                    scope.resource_version = None
                self._log_failure(scope, exc, backoff)
                session.stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _list(self, scope: _Scope, session: _Session) -> None:
        assert scope.version is not None
        query = {"limit": str(LIST_PAGE_SIZE)}
        if self._label_selector:
            query["labelSelector"] = self._label_selector
        items: list[dict[str, Any]] = []
        while True:
            page = kubeapi.request(
                self._api,
                "GET",
                self._path(scope),
                query=query,
                timeout=self._request_timeout,
            )
            for item in page.get("items") or []:
                # managedFields are often most of an object and nothing here reads them: at
                # 10,000 routes, keeping them until the last page came would double the peak.
                item_metadata = item.get("metadata")
                if isinstance(item_metadata, dict):
                    item_metadata.pop("managedFields", None)
                # LIST items may leave out what the list itself says.
                item.setdefault("apiVersion", page.get("apiVersion"))
                item.setdefault("kind", AI_GATEWAY_ROUTE.kind)
                items.append(item)
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            # A continue token is only valid for a while; 410 on it means LIST again.
            query = {**query, "continue": metadata["continue"]}
        resource_version = metadata.get("resourceVersion")
        if not resource_version:
            raise _WatchClosed("the LIST answer has no metadata.resourceVersion")

        if self._store is not None:
            self._store.replace(scope.namespace, items)
        scope.listed_at = time.monotonic()
        previous, scope.known = scope.known, {}
        for item in items:
            change = _change(item, deleted=False, default_namespace=scope.namespace)
            if change is not None:
                scope.known[(change.namespace, change.name)] = change.annotations
                session.emit(change)
        for (namespace, name), last_annotations in previous.items():
            if (namespace, name) not in scope.known:
                session.emit(RouteChange(namespace, name, last_annotations, deleted=True))
        scope.resource_version = resource_version
        log.info(
            "route_watch_listed",
            scope=scope.label,
            version=scope.version,
            routes=len(scope.known),
            resource_version=resource_version,
        )

    def _watch_once(self, scope: _Scope, session: _Session) -> int:
        """Follow one watch request to its end; return how many events it delivered."""
        assert scope.resource_version is not None
        query = [
            ("watch", "1"),
            ("resourceVersion", scope.resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._timeout_seconds)),
        ]
        if self._label_selector:
            query.append(("labelSelector", self._label_selector))
        method, url, headers, _, _ = self._api.param_serialize(
            "GET",
            self._path(scope),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response: urllib3.BaseHTTPResponse = self._api.rest_client.pool_manager.request(
            method,
            url,
            headers=headers,
            preload_content=False,
            # Our loop does the retrying (with backoff and the right resourceVersion).
            retries=False,
            timeout=urllib3.Timeout(
                connect=_CONNECT_TIMEOUT, read=self._timeout_seconds + _READ_MARGIN
            ),
        )
        try:
            if not session.opened(response):
                return 0
            if response.status != 200:
                body = response.read().decode("utf-8", "replace")
                if response.status == 410:
                    raise _Gone()
                raise kubeapi.ApiException(
                    status=response.status, reason=response.reason, body=body
                )
            if self._store is not None:
                # Resumed from where it was: what happened meanwhile is replayed right now.
                self._store.mark_synced(scope.namespace)
            log.debug(
                "route_watch_opened", scope=scope.label, resource_version=scope.resource_version
            )
            delivered = 0
            for line in _lines(response):
                if self._handle(scope, session, line):
                    delivered += 1
            return delivered
        finally:
            session.closed(response)
            response.close()
            response.release_conn()

    def _handle(self, scope: _Scope, session: _Session, line: str) -> bool:
        """Apply one watch event line; True if it was an event (bookmarks count)."""
        if not line.strip():
            return False
        event = orjson.loads(line)
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone()
            raise kubeapi.ApiException(status=code, reason=obj.get("reason"), body=json.dumps(obj))
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            change = _change(obj, deleted=kind == "DELETED", default_namespace=scope.namespace)
            if change is not None:
                key = (change.namespace, change.name)
                if change.deleted:
                    scope.known.pop(key, None)
                    if self._store is not None:
                        self._store.delete(obj)
                else:
                    scope.known[key] = change.annotations
                    if self._store is not None:
                        self._store.observe(obj)
                session.emit(change)
        elif kind != "BOOKMARK":
            log.debug("route_watch_unknown_event", scope=scope.label, type=kind)
            return False
        if resource_version:
            scope.resource_version = resource_version
        return True

    # --- helpers --------------------------------------------------------------------------

    def _unsynced(self, scope: _Scope) -> None:
        if self._store is not None:
            self._store.mark_unsynced(scope.namespace)

    def _path(self, scope: _Scope) -> str:
        base = f"/apis/{AI_GATEWAY_ROUTE.group}/{scope.version}"
        if scope.namespace is None:
            return f"{base}/{AI_GATEWAY_ROUTE.plural}"
        return f"{base}/namespaces/{scope.namespace}/{AI_GATEWAY_ROUTE.plural}"

    def _discover_version(self) -> str:
        """The preferred AIGatewayRoute version the API server serves (v1beta1, v1alpha1)."""
        group = kubeapi.request(
            self._api, "GET", f"/apis/{AIGATEWAY_GROUP}", timeout=self._request_timeout
        )
        served = {
            entry["groupVersion"].split("/", 1)[1]
            for entry in group.get("versions") or []
            if "/" in entry.get("groupVersion", "")
        }
        for version in AI_GATEWAY_ROUTE.versions:
            if version in served:
                return version
        raise kubeapi.ApiException(
            status=404,
            reason="NotFound",
            body=json.dumps(
                {
                    "message": f"{AIGATEWAY_GROUP} serves {sorted(served)}, "
                    f"none of {list(AI_GATEWAY_ROUTE.versions)}"
                }
            ),
        )

    def _log_failure(self, scope: _Scope, exc: Exception, retry_in: float) -> None:
        if isinstance(exc, kubeapi.ApiException):
            error = error_from_status(exc.status or 0, exc.body, kind=AI_GATEWAY_ROUTE.kind)
            detail: dict[str, Any] = {
                "status": exc.status,
                "error_type": type(error).__name__,
                "error": error.message,
            }
        elif isinstance(exc, (urllib3.exceptions.HTTPError, OSError, _WatchClosed)):
            detail = {"error_type": "UnavailableError", "error": repr(exc)}
        else:
            # Not an API or network failure: a bug (or a malformed line); keep the traceback.
            log.exception("route_watch_crashed", scope=scope.label, retry_in=retry_in)
            return
        log.warning("route_watch_failed", scope=scope.label, retry_in=retry_in, **detail)


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
    """The response body split into lines as the chunks arrive (one watch event per line)."""
    buffer = b""
    for chunk in response.stream(None, decode_content=True):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if buffer.strip():
        yield buffer.decode("utf-8", "replace")


def _change(
    obj: dict[str, Any], *, deleted: bool, default_namespace: str | None
) -> RouteChange | None:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    namespace = metadata.get("namespace") or default_namespace
    if not isinstance(name, str) or not isinstance(namespace, str):
        log.warning("route_watch_unnamed_object", object=repr(obj)[:200])
        return None
    annotations = metadata.get("annotations") or {}
    return RouteChange(
        namespace=namespace,
        name=name,
        annotations={str(k): str(v) for k, v in annotations.items()},
        deleted=deleted,
        gateway_condition=_gateway_condition(obj),
    )


def _gateway_condition(obj: dict[str, Any]) -> tuple[str, str, str] | None:
    """(type, status, message) of the AI Gateway controller's condition, without the
    lastTransitionTime it rewrites on every reconcile (that alone is no change)."""
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    if not isinstance(conditions, list) or not conditions:
        return None
    found = [
        (str(c.get("type")), str(c.get("status")), str(c.get("message") or ""))
        for c in conditions
        if isinstance(c, dict)
    ]
    return min(found) if found else None


__all__ = ["DEFAULT_WATCH_TIMEOUT_SECONDS", "KubeRouteWatcher"]
