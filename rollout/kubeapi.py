"""One request function over the official client's HTTP layer: JSON in, JSON out.

Why not the generated `CustomObjectsApi`: our objects are plain JSON manifests (the pure
manifest functions build and parse them), and going through the client's pydantic-validated
methods adds a model layer we then throw away. Every adapter call is one `request()`.
Only adapters (gateway, localcluster, controller runtime) import this module.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class Limiter(Protocol):
    def acquire(self) -> float: ...


# Client-side rate limits per client (client-go keeps its limiter in the REST client); the
# long-running watch requests do not go through `request` and are not paced, as in client-go.
_limiters: weakref.WeakKeyDictionary[k8s.ApiClient, Limiter] = weakref.WeakKeyDictionary()


def set_rate_limiter(api_client: k8s.ApiClient, limiter: Limiter | None) -> None:
    """Pace every `request` made with `api_client` by `limiter` (None: no pacing)."""
    if limiter is None:
        _limiters.pop(api_client, None)
    else:
        _limiters[api_client] = limiter


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
) -> Any:
    """Send one request; return the decoded JSON body, or raise `ApiException` on non-2xx."""
    limiter = _limiters.get(api_client)
    if limiter is not None:
        limiter.acquire()
    header_params = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        header_params["Content-Type"] = content_type or "application/json"
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
    return json.loads(data) if data else None


__all__ = ["JSON_PATCH", "MERGE_PATCH", "ApiException", "request"]
