"""Install CustomResourceDefinitions from folders and wait until they are served."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from rollout.kubeapi import ApiException, request
from rollout.localcluster.errors import PrerequisiteError, StartupError

# libyaml parses the ~1 MB of upstream CRDs some twenty times faster than pure Python.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

CRDS_ENV = "ROLLOUT_CRDS_DIRS"
"""Folders (os.pathsep-separated) of CRDs for `rollout cluster start` and the tests."""


def default_crd_dirs(env: Mapping[str, str] = os.environ) -> list[Path]:
    """ROLLOUT_CRDS_DIRS, else the upstream CRDs in `shared/crds` beside this checkout."""
    if env.get(CRDS_ENV):
        return [Path(p) for p in env[CRDS_ENV].split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[2]
    return [repo.parent / "shared" / "crds"]


def load_crd_documents(
    folders: Sequence[Path],
    notice: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in `folders`, exactly as found (the files are upstream's)."""
    crds: list[dict[str, Any]] = []
    for folder in folders:
        if not folder.is_dir():
            raise PrerequisiteError(
                f"CRD folder {folder} does not exist. Pass --crds DIR or set {CRDS_ENV} "
                "(the upstream Envoy AI Gateway / Envoy Gateway / Gateway API CRDs live in "
                "shared/crds beside the repository)"
            )
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        found = 0
        for path in files:
            try:
                docs = list(yaml.load_all(path.read_text(), Loader=_Loader))
            except yaml.YAMLError as exc:
                raise PrerequisiteError(f"{path}: not valid YAML: {exc}") from exc
            for doc in docs:
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    crds.append(doc)
                    found += 1
        if not found:
            raise PrerequisiteError(f"CRD folder {folder} holds no CustomResourceDefinition")
        if notice is not None:
            notice(f"{found} CRDs from {folder}")
    return crds


def _served_versions(crd: Mapping[str, Any]) -> Iterable[str]:
    return (v["name"] for v in crd["spec"]["versions"] if v.get("served", True))


def install_crds(
    api_client: k8s.ApiClient, crds: Sequence[dict[str, Any]], timeout: float = 60.0
) -> None:
    """Create (or replace) each CRD, then wait until Established and discoverable."""
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            request(api_client, "POST", _CRDS_PATH, body=crd)
        except ApiException as exc:
            if exc.status != 409:
                raise StartupError(f"installing CRD {name} failed: {exc.body}") from exc
            current = request(api_client, "GET", f"{_CRDS_PATH}/{name}")
            metadata = {
                **crd["metadata"],
                "resourceVersion": current["metadata"]["resourceVersion"],
            }
            request(api_client, "PUT", f"{_CRDS_PATH}/{name}", body={**crd, "metadata": metadata})
    deadline = time.monotonic() + timeout
    for crd in crds:
        _wait_established(api_client, crd["metadata"]["name"], deadline)
        for version in _served_versions(crd):
            _wait_discoverable(
                api_client, crd["spec"]["group"], version, crd["spec"]["names"]["plural"], deadline
            )


def _wait_established(api_client: k8s.ApiClient, name: str, deadline: float) -> None:
    while True:
        obj = request(api_client, "GET", f"{_CRDS_PATH}/{name}")
        conditions = obj.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise StartupError(f"CRD {name} was not Established in time: {conditions}")
        time.sleep(0.1)


def _wait_discoverable(
    api_client: k8s.ApiClient, group: str, version: str, plural: str, deadline: float
) -> None:
    while True:
        try:
            resources = request(api_client, "GET", f"/apis/{group}/{version}").get("resources", [])
            if any(r["name"] == plural for r in resources):
                return
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() > deadline:
            raise StartupError(f"{plural}.{group}/{version} is not discoverable in time")
        time.sleep(0.1)
