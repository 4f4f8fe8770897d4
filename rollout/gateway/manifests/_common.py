"""Shared by the manifest builders: the JSON shapes and the metadata we stamp on objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollout.config import check_dns1123_label, check_dns1123_subdomain
from rollout.gateway.constants import GATEWAY_API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE

Manifest = dict[str, Any]
JSONPatch = list[dict[str, Any]]


# ============================================================================================
# Shared helpers
# ============================================================================================


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    return {**labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def _metadata(
    name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": namespace, "labels": _labels(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether a raw object carries our ownership label (never raises on odd shapes)."""
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    return isinstance(labels, Mapping) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _gateway_parent_ref(gateway_name: str, gateway_namespace: str) -> Manifest:
    return {
        "group": GATEWAY_API_GROUP,
        "kind": "Gateway",
        "name": check_dns1123_subdomain(gateway_name),
        "namespace": check_dns1123_label(gateway_namespace),
    }
