"""Envoy Gateway Backend: build and parse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.config import check_dns1123_label
from rollout.gateway.constants import BACKEND
from rollout.gateway.manifests._common import Manifest, _metadata
from rollout.gateway.manifests._parse import _construct, _Node, _read_metadata, _root
from rollout.gateway.models import Backend, FQDNEndpoint, IPEndpoint

# ============================================================================================
# Backend
# ============================================================================================


def _build_endpoint(endpoint: FQDNEndpoint | IPEndpoint) -> Manifest:
    if isinstance(endpoint, FQDNEndpoint):
        return {"fqdn": {"hostname": endpoint.hostname, "port": endpoint.port}}
    return {"ip": {"address": endpoint.address, "port": endpoint.port}}


def build_backend_manifest(backend: Backend, *, default_namespace: str) -> Manifest:
    """The Envoy Gateway Backend object (gateway.envoyproxy.io/v1alpha1)."""
    namespace = backend.namespace or check_dns1123_label(default_namespace)
    return {
        "apiVersion": BACKEND.api_version(BACKEND.preferred_version),
        "kind": BACKEND.kind,
        "metadata": _metadata(backend.name, namespace, backend.labels, {}),
        "spec": {"endpoints": [_build_endpoint(e) for e in backend.endpoints]},
    }


def _parse_endpoint(node: _Node) -> FQDNEndpoint | IPEndpoint:
    present = [key for key in ("fqdn", "ip", "unix") if node.get(key) is not None]
    if len(present) != 1:
        node.fail(f"expected exactly one of fqdn, ip or unix, got {present or 'none'}")
    if present == ["unix"]:
        node.req("unix").unsupported("unix socket endpoints")
    inner = node.req(present[0])
    port = inner.req("port").integer()
    if present == ["fqdn"]:
        hostname = inner.req("hostname").string()
        fields: dict[str, object] = {"hostname": hostname, "port": port}
        return _construct(inner, FQDNEndpoint, fields, {"hostname": ".hostname", "port": ".port"})
    fields = {"address": inner.req("address").string(), "port": port}
    return _construct(inner, IPEndpoint, fields, {"address": ".address", "port": ".port"})


def parse_backend_manifest(obj: Mapping[str, Any]) -> Backend:
    root = _root(obj, BACKEND)
    meta = _read_metadata(root)
    spec = root.req("spec")
    endpoints = [_parse_endpoint(n) for n in spec.req("endpoints").items()]
    return _construct(
        root,
        Backend,
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "endpoints": endpoints,
            "labels": meta.labels,
        },
        {
            "name": "metadata.name",
            "namespace": "metadata.namespace",
            "endpoints": "spec.endpoints",
            "labels": "metadata.labels",
        },
    )
