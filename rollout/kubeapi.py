"""One request function over the official client's HTTP layer: JSON in, JSON out.

Why not the generated `CustomObjectsApi`: our objects are plain JSON manifests (the pure
manifest functions build and parse them), and going through the client's pydantic-validated
methods adds a model layer we then throw away. Every adapter call is one `request()`.
Only adapters (gateway, localcluster, controller runtime) import this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


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
