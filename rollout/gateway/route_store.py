"""RouteStore: an in-memory copy of AIGatewayRoutes, fed by a watch and by our own writes.

It implements the `RouteCache` port (what the controller reads instead of a GET per tick) and
gives the adapter the last known object to build a weight patch from without a GET. Pure: no
Kubernetes client, only the objects' JSON.

Rules, so that a tick never acts on less than it knows:

- Every object fed in (a LIST item, a watch event, the answer of our own write or GET) is kept
  only if its resourceVersion is not older than the one held: a watch event that arrives after
  our write's answer cannot roll the copy back, and the echo of our own write costs nothing
  (same resourceVersion: not parsed again). resourceVersions are compared as integers, which
  is what kube-apiserver on etcd hands out; one that is not an integer is always taken.
- A route the watch reports DELETED (or a re-LIST no longer shows) is dropped and remembered
  as gone at that resourceVersion: a late answer of an older write cannot bring it back, and a
  lookup says NotFound rather than "ask the API".
- Lookups answer from the copy only while the namespace's watch is synced (listed, and not
  broken since); otherwise None, and the caller reads from the API. `invalidate` drops a copy
  that a conflict proved stale.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from rollout.gateway.constants import AI_GATEWAY_ROUTE
from rollout.gateway.errors import MalformedObjectError, NotFoundError
from rollout.gateway.manifests import parse_route_snapshot
from rollout.gateway.models import RouteSnapshot

Manifest = dict[str, Any]
_Key = tuple[str, str]


@dataclass(frozen=True)
class _Entry:
    resource_version: int | None
    # metadata (without managedFields) and spec, what a patch is built from: as compact JSON
    # (see _pack), decoded only when a write needs it.
    manifest: bytes | Manifest
    snapshot: RouteSnapshot | None  # None: the object is not a route the snapshot describes
    stale: bool = False  # invalidated: lookups read from the API until a fresh copy comes
    annotations_in_snapshot: bool = False  # the manifest's annotations are the snapshot's


def resource_version_of(obj: Mapping[str, Any]) -> int | None:
    """metadata.resourceVersion as an integer, None when absent or not an integer."""
    metadata = obj.get("metadata")
    text = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    return int(text) if isinstance(text, str) and text.isdigit() else None


def _key(obj: Mapping[str, Any]) -> _Key | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None


def _slim(obj: Mapping[str, Any]) -> Manifest:
    """What is kept of an object: no managedFields (often most of it) and no status (already
    parsed into the snapshot)."""
    metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind") or AI_GATEWAY_ROUTE.kind,
        "metadata": metadata,
        "spec": obj.get("spec"),
    }


def _pack(manifest: Manifest, snapshot: RouteSnapshot | None) -> tuple[bytes | Manifest, bool]:
    """The manifest as compact JSON (~1.6 kB for a route whose dicts and lists take ~4.5 kB;
    most routes are never written), and whether its annotations were left to the snapshot:
    when it holds them as they are (same keys and values, same order), the manifest keeps a
    null in their place, since the state annotation is most of a route's JSON.

    The JSON is copied to a bytes object of its own size: orjson's answer keeps the whole
    buffer it wrote into (16 kB). What orjson cannot write is kept as it is (every object here
    came from orjson.loads, so none should be)."""
    metadata = manifest["metadata"]
    annotations = metadata.get("annotations")
    moved = (
        snapshot is not None
        and isinstance(annotations, dict)
        and list(annotations.items()) == list(snapshot.annotations.items())
    )
    written = {**manifest, "metadata": {**metadata, "annotations": None}} if moved else manifest
    try:
        return bytes(memoryview(orjson.dumps(written))), moved
    except (TypeError, orjson.JSONEncodeError):
        return manifest, False


def _unpack(entry: _Entry) -> Manifest:
    """A manifest of our own (a fresh one each call: changing it changes no copy kept)."""
    if not isinstance(entry.manifest, bytes):
        copied: Manifest = copy.deepcopy(entry.manifest)
        return copied
    manifest: Manifest = orjson.loads(entry.manifest)
    if entry.annotations_in_snapshot:
        assert entry.snapshot is not None
        manifest["metadata"]["annotations"] = dict(entry.snapshot.annotations)
    return manifest


def _newer(new: int | None, old: int | None) -> bool:
    return new is None or old is None or new > old


class RouteStore:
    """Thread-safe. `scope` is a namespace, or None for every namespace."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[_Key, _Entry] = {}
        self._gone: dict[_Key, int | None] = {}
        self._synced: set[str | None] = set()
        self.stats = {"hits": 0, "misses": 0, "gone": 0}  # lookups, for benchmarks and tests

    # --- the RouteCache port --------------------------------------------------------------

    def cached_snapshot(self, namespace: str, name: str) -> RouteSnapshot | None:
        """The route as last seen, or None when the copy cannot be trusted (the watch is not
        synced, or the copy was invalidated): read it from the API then. NotFoundError when
        the watch is synced and the route is not there (deleted, or never created)."""
        # Without the lock: every tick of every rollout asks, from several tick workers at
        # once, and each read below is one dict or set lookup (atomic under the GIL) of
        # entries that are replaced whole, never changed. A lookup racing a feed answers as
        # it would just before or just after it. The counts are for benchmarks and tests.
        synced = self._synced
        stats = self.stats
        if None not in synced and namespace not in synced:
            stats["misses"] += 1
            return None
        entry = self._entries.get((namespace, name))
        if entry is None:
            stats["gone"] += 1
            raise NotFoundError(
                "the route watch does not know this route (deleted or never created)",
                kind=AI_GATEWAY_ROUTE.kind,
                namespace=namespace,
                name=name,
            )
        if entry.snapshot is None or entry.stale:  # the API must answer (and say why)
            stats["misses"] += 1
            return None
        stats["hits"] += 1
        return entry.snapshot

    # --- what the adapter's own writes need ---------------------------------------------------

    def manifest(self, namespace: str, name: str) -> Manifest | None:
        """The last known object (to build a patch from), synced or not; None once a conflict
        proved it stale. The caller's own copy."""
        with self._lock:
            entry = self._entries.get((namespace, name))
            found = entry if entry is not None and not entry.stale else None
        return None if found is None else _unpack(found)

    # --- feeds ----------------------------------------------------------------------------

    def observe(self, obj: Mapping[str, Any]) -> None:
        """An object as the API server returned it (write answer, GET, LIST item, watch)."""
        key = _key(obj)
        if key is None:
            return
        version = resource_version_of(obj)
        with self._lock:
            if not self._takes(key, version):
                return
        entry = self._entry(obj, version)  # parsed outside the lock
        with self._lock:
            if self._takes(key, version):  # nothing newer arrived meanwhile
                self._entries[key] = entry
                self._gone.pop(key, None)

    def delete(self, obj: Mapping[str, Any]) -> None:
        """The watch's DELETED: drop the route and remember it as gone."""
        key = _key(obj)
        if key is None:
            return
        version = resource_version_of(obj)
        with self._lock:
            self._entries.pop(key, None)
            self._gone[key] = version

    def replace(self, scope: str | None, objects: Iterable[Mapping[str, Any]]) -> None:
        """A LIST of `scope`: what it does not show is gone; then the scope is synced."""
        listed: dict[_Key, Mapping[str, Any]] = {}
        for obj in objects:
            key = _key(obj)
            if key is not None:
                listed[key] = obj
        for obj in listed.values():
            self.observe(obj)
        with self._lock:
            for key in [k for k in self._entries if scope is None or k[0] == scope]:
                if key not in listed:
                    del self._entries[key]
                    self._gone[key] = None
            # Tombstones are only needed against late answers; a LIST is the new baseline.
            for key in [k for k in self._gone if (scope is None or k[0] == scope)]:
                if key in listed:
                    del self._gone[key]
            self._synced.add(scope)

    def mark_synced(self, scope: str | None) -> None:
        with self._lock:
            self._synced.add(scope)

    def mark_unsynced(self, scope: str | None) -> None:
        """The watch of `scope` broke: lookups read from the API until it is back."""
        with self._lock:
            self._synced.discard(scope)

    def invalidate(self, namespace: str, name: str) -> None:
        """Our copy proved stale (a write conflicted): read the route from the API next."""
        key = (namespace, name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = dataclasses.replace(entry, stale=True)

    def synced(self, namespace: str) -> bool:
        with self._lock:
            return None in self._synced or namespace in self._synced

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # --- internals --------------------------------------------------------------------------

    def _takes(self, key: _Key, version: int | None) -> bool:
        """Called with the lock held."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.stale and version == entry.resource_version:
                return True  # a fresh read of the same version: trusted again
            return _newer(version, entry.resource_version)
        if key in self._gone:
            return _newer(version, self._gone[key])
        return True

    @staticmethod
    def _entry(obj: Mapping[str, Any], version: int | None) -> _Entry:
        try:
            snapshot: RouteSnapshot | None = parse_route_snapshot(obj)
        except MalformedObjectError:
            snapshot = None
        manifest, moved = _pack(_slim(obj), snapshot)
        return _Entry(version, manifest, snapshot, annotations_in_snapshot=moved)


__all__ = ["RouteStore", "resource_version_of"]
