"""One request function for every adapter: JSON in, JSON out.

Requests go through `rollout.kubehttp.FastTransport` (kept-alive connections, about a quarter
of the CPU of the official client's urllib3 stack per request) whenever the client's
configuration is one it sends exactly (no proxy, no custom retries or socket options); else
through the official client's HTTP layer. Both take URL, TLS and auth from the same
`kubernetes.client.Configuration`, so a kubeconfig or the in-cluster service account works
the same either way, token refresh included.

Why not the generated `CustomObjectsApi`: our objects are plain JSON manifests (the pure
manifest functions build and parse them), and going through the client's pydantic-validated
methods adds a model layer we then throw away. Every adapter call is one `request()`.
Only adapters (gateway, localcluster, controller runtime) import this module.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from rollout.kubehttp import FastTransport, Request, Response

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class Limiter(Protocol):
    def acquire(self) -> float: ...


# Client-side rate limits per client (client-go keeps its limiter in the REST client); the
# long-running watch requests do not go through `request` and are not paced, as in client-go.
_limiters: weakref.WeakKeyDictionary[k8s.ApiClient, Limiter] = weakref.WeakKeyDictionary()
# The fast transport of each client (None: the client's configuration needs its own path).
_transports: weakref.WeakKeyDictionary[k8s.ApiClient, FastTransport | None] = (
    weakref.WeakKeyDictionary()
)
_transports_lock = threading.Lock()
_fast_path_enabled = True


def set_rate_limiter(api_client: k8s.ApiClient, limiter: Limiter | None) -> None:
    """Pace every `request` made with `api_client` by `limiter` (None: no pacing)."""
    if limiter is None:
        _limiters.pop(api_client, None)
    else:
        _limiters[api_client] = limiter


def _transport(api_client: k8s.ApiClient) -> FastTransport | None:
    """The fast transport for `api_client`, made on first use; None when its configuration
    needs the official client's path (a proxy, custom retries or socket options)."""
    with _transports_lock:
        if api_client in _transports:
            return _transports[api_client]
        configuration = api_client.configuration
        transport = (
            FastTransport.from_configuration(configuration)
            if _fast_path_enabled and FastTransport.supports(configuration)
            else None
        )
        _transports[api_client] = transport
        if transport is not None:
            weakref.finalize(api_client, transport.close)  # its sockets go with the client
        return transport


def use_fast_path(enabled: bool) -> None:
    """Send requests through the official client's urllib3 stack instead (False), e.g. to
    compare the two; clients that already made a request keep what they had."""
    global _fast_path_enabled
    _fast_path_enabled = enabled


def request(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    decode: bool = True,
) -> Any:
    """Send one request; return the decoded JSON body (None when empty or `decode` is False),
    or raise `ApiException` on non-2xx (and `OSError` when the API server does not answer)."""
    limiter = _limiters.get(api_client)
    if limiter is not None:
        limiter.acquire()
    header_params = _header_params(body, content_type, headers)
    transport = _transport(api_client)
    if transport is not None:
        return _fast_request(
            api_client, transport, method, path, query, body, header_params, timeout, decode
        )
    method, url, header_params, body, _ = api_client.param_serialize(
        method,
        path,
        query_params=list(query.items()) if query else None,
        header_params=header_params,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(
        method, url, header_params=header_params, body=body, _request_timeout=timeout
    )
    data: bytes = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(
            http_resp=response, body=data.decode("utf-8", "replace"), data=None
        )
    return orjson.loads(data) if data and decode else None


@dataclass(frozen=True)
class Call:
    """One request of `request_all`: what `request` takes, but for the client and timeout."""

    method: str
    path: str
    body: Any = None
    content_type: str | None = None
    query: Mapping[str, str] | None = None


def request_all(
    api_client: k8s.ApiClient,
    calls: Sequence[Call],
    *,
    timeout: float | None = None,
    decode: bool = True,
) -> list[Any]:
    """Each of `calls`, in order: pipelined on one connection by the fast transport (many
    requests, one wait; see `FastTransport.pipeline`), else one after the other. Per call,
    what `request` returns, or the exception it would raise (`ApiException`, `OSError`, or
    urllib3's `HTTPError` on the official client's path), returned rather than raised: one
    failed call does not hide the others' answers. Each call is paced like one `request`."""
    transport = _transport(api_client)
    if transport is None:
        results: list[Any] = []
        for call in calls:
            try:
                results.append(
                    request(
                        api_client,
                        call.method,
                        call.path,
                        query=call.query,
                        body=call.body,
                        content_type=call.content_type,
                        timeout=timeout,
                        decode=decode,
                    )
                )
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
                results.append(exc)
        return results
    limiter = _limiters.get(api_client)
    requests = []
    for call in calls:
        if limiter is not None:
            limiter.acquire()
        header_params = _header_params(call.body, call.content_type, None)
        requests.append(
            _fast_call(api_client, call.method, call.path, call.query, call.body, header_params)
        )
    return [
        answer if isinstance(answer, OSError) else _decoded(answer, decode)
        for answer in transport.pipeline(requests, timeout=timeout)
    ]


def _header_params(
    body: Any, content_type: str | None, headers: Mapping[str, str] | None
) -> dict[str, str]:
    """Accept JSON, the caller's headers, and the body's Content-Type when there is one."""
    header_params = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        header_params["Content-Type"] = content_type or "application/json"
    return header_params


def _fast_call(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    query: Mapping[str, str] | None,
    body: Any,
    header_params: Mapping[str, str],
) -> Request:
    """The request `param_serialize` + `call_api` would send, for the fast transport."""
    return Request(
        method.upper(),
        path,
        query=query,
        headers=_headers(api_client, header_params),
        # orjson: a tenth of json.dumps's CPU for a patch or an Event (and a third to read).
        body=None if body is None else orjson.dumps(body),
    )


def _headers(api_client: k8s.ApiClient, header_params: Mapping[str, str]) -> dict[str, str]:
    """The headers `param_serialize` + `call_api` send: the client's defaults (User-Agent),
    the cookie, the bearer token (through its refresh hook), then `header_params`."""
    headers = {**api_client.default_headers, **header_params}
    if api_client.cookie:
        headers["Cookie"] = api_client.cookie
    auth = api_client.configuration.auth_settings().get("BearerToken")
    if auth and auth.get("value"):
        headers[auth["key"]] = auth["value"]
    return headers


def _decoded(answer: Response, decode: bool) -> Any:
    """An answer's JSON (None when empty or not wanted), or the ApiException for non-2xx."""
    if not 200 <= answer.status <= 299:
        return _api_exception(answer)
    return orjson.loads(answer.body) if answer.body and decode else None


def _fast_request(
    api_client: k8s.ApiClient,
    transport: FastTransport,
    method: str,
    path: str,
    query: Mapping[str, str] | None,
    body: Any,
    header_params: dict[str, str],
    timeout: float | None,
    decode: bool,
) -> Any:
    """The same request as `param_serialize` + `call_api` build (default headers such as
    User-Agent, the cookie, the bearer token with its refresh hook), sent by `transport`."""
    call = _fast_call(api_client, method, path, query, body, header_params)
    answer = transport.request(
        call.method,
        call.path,
        query=call.query,
        headers=call.headers,
        body=call.body,
        timeout=timeout,
    )
    result = _decoded(answer, decode)
    if isinstance(result, ApiException):
        raise result
    return result


class _Answer:
    """What `ApiException.from_response` reads of an answer."""

    def __init__(self, answer: Response) -> None:
        self.status = answer.status
        self.reason = answer.reason
        self.headers = answer.headers
        self.data = answer.body


def _api_exception(answer: Response) -> ApiException:
    try:
        ApiException.from_response(
            http_resp=_Answer(answer), body=answer.body.decode("utf-8", "replace"), data=None
        )
    except ApiException as exc:  # from_response raises the status's own subclass
        return exc
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "JSON_PATCH",
    "MERGE_PATCH",
    "ApiException",
    "Call",
    "request",
    "request_all",
    "use_fast_path",
]
