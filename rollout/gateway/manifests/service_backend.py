"""AIServiceBackend: build and parse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.config import check_dns1123_label
from rollout.gateway.constants import AI_SERVICE_BACKEND
from rollout.gateway.manifests._common import Manifest, _metadata
from rollout.gateway.manifests._parse import _construct, _read_metadata, _root
from rollout.gateway.models import AIServiceBackend, APISchema, BackendRef

# ============================================================================================
# AIServiceBackend
# ============================================================================================


def build_service_backend_manifest(
    backend: AIServiceBackend, *, api_version: str, default_namespace: str
) -> Manifest:
    """The AIServiceBackend object; `api_version` as for build_route_manifest."""
    schema: Manifest = {"name": backend.api_schema.name.value}
    if backend.api_schema.version is not None:
        schema["version"] = backend.api_schema.version
    if backend.api_schema.prefix is not None:
        schema["prefix"] = backend.api_schema.prefix
    ref = backend.backend_ref
    backend_ref: Manifest = {"name": ref.name}
    if ref.namespace is not None:
        backend_ref["namespace"] = ref.namespace
    backend_ref |= {"group": ref.group, "kind": ref.kind}  # CEL demands both, explicitly
    namespace = backend.namespace or check_dns1123_label(default_namespace)
    return {
        "apiVersion": AI_SERVICE_BACKEND.api_version(api_version),
        "kind": AI_SERVICE_BACKEND.kind,
        "metadata": _metadata(backend.name, namespace, backend.labels, {}),
        "spec": {"schema": schema, "backendRef": backend_ref},
    }


def parse_service_backend_manifest(obj: Mapping[str, Any]) -> AIServiceBackend:
    root = _root(obj, AI_SERVICE_BACKEND)
    meta = _read_metadata(root)
    spec = root.req("spec")
    schema_node = spec.req("schema")
    schema = _construct(
        schema_node,
        APISchema,
        {
            "name": schema_node.req("name").string(),
            "version": schema_node.opt_string("version"),
            "prefix": schema_node.opt_string("prefix"),
        },
        {"name": ".name", "version": ".version", "prefix": ".prefix"},
    )
    ref_node = spec.req("backendRef")
    ref_fields = {
        "name": ref_node.req("name").string(),
        "namespace": ref_node.opt_string("namespace"),
        # Absent means the CRD defaults ('' and Service), which its CEL rule refuses anyway.
        "group": ref_node.opt_string("group") or "",
        "kind": ref_node.opt_string("kind") or "Service",
    }
    ref_paths = {"name": ".name", "namespace": ".namespace", "group": ".group", "kind": ".kind"}
    backend_ref = _construct(ref_node, BackendRef, ref_fields, ref_paths)
    return _construct(
        root,
        AIServiceBackend,
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "api_schema": schema,
            "backend_ref": backend_ref,
            "labels": meta.labels,
        },
        {"name": "metadata.name", "namespace": "metadata.namespace", "labels": "metadata.labels"},
    )
