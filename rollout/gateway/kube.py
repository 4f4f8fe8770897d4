"""KubeAIGatewayClient: the AIGatewayClient port over the Kubernetes API.

Thin by design: the pure functions of `manifests` and `ownership` decide what to send, this
module sends it, one `rollout.kubeapi.request` per API call, and turns API answers into the
typed errors. Writes ask for strict field validation (a field the installed CRD does not know
fails loudly instead of being pruned) and are compare-and-swap (resourceVersion or a JSON Patch
`test`), retried on conflict from a fresh read.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import structlog
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.gateway import manifests, ownership
from rollout.gateway.constants import (
    AI_GATEWAY_ROUTE,
    AI_SERVICE_BACKEND,
    AIGATEWAY_FINALIZER,
    AIGATEWAY_GROUP,
    BACKEND,
    BACKEND_TRAFFIC_POLICY,
    HTTP_ROUTE,
    MANAGED_BY_SELECTOR,
    ResourceType,
)
from rollout.gateway.errors import (
    AIGatewayError,
    AlreadyExistsError,
    ConflictError,
    DeletionBlockedError,
    DisabledError,
    InvalidError,
    MalformedObjectError,
    NotFoundError,
    UnavailableError,
    UnsupportedObjectError,
    error_from_status,
)
from rollout.gateway.httproute import parse_generated_route
from rollout.gateway.manifests.cohorts import (
    cohort_rule_operations,
    remove_cohort_rule_operations,
)
from rollout.gateway.manifests.opt_in import opt_in_rule_operations, remove_opt_in_rule_operations
from rollout.gateway.manifests.weights import annotation_patch_operations
from rollout.gateway.models import (
    MAX_WEIGHT,
    AIGatewayRoute,
    AIGatewayRouteStatus,
    AIServiceBackend,
    Backend,
    GeneratedRoute,
    RateLimitConfig,
    RateLimitPolicy,
    RouteSnapshot,
    WeightedBackend,
)
from rollout.gateway.route_store import RouteStore

log = structlog.get_logger("rollout.gateway")

FIELD_MANAGER = "model-registry"
_WRITE_QUERY = {"fieldValidation": "Strict", "fieldManager": FIELD_MANAGER}
_T = TypeVar("_T")
Manifest = dict[str, Any]


class KubeAIGatewayClient:
    """The AI Gateway adapter. Thread-safe: one instance serves the whole controller."""

    def __init__(
        self,
        api_client: k8s.ApiClient | None,
        config: AIGatewayConfig,
        *,
        max_conflict_retries: int = 8,
        route_store: RouteStore | None = None,
    ) -> None:
        self._api_client = api_client
        self.config = config
        self._max_conflict_retries = max_conflict_retries
        self._aigateway_version: str | None = None
        self._lock = threading.Lock()
        # The last route object seen per (namespace, name): lets update_traffic_weights build
        # its JSON Patch without a GET first (one request in the common case). Shared with a
        # route watch when one feeds it (the controller's RouteCache), so every answer of our
        # reads and writes lands there too.
        self.route_store = route_store if route_store is not None else RouteStore()

    @classmethod
    def from_config(
        cls, config: AIGatewayConfig | None = None, *, route_store: RouteStore | None = None
    ) -> KubeAIGatewayClient:
        config = config or AIGatewayConfig()
        if not config.enabled:
            return cls(None, config, route_store=route_store)
        configuration = k8s.Configuration()
        try:
            if config.in_cluster:
                k8s_config.load_incluster_config(client_configuration=configuration)
            else:
                k8s_config.load_kube_config(
                    config_file=config.kubeconfig_path(), client_configuration=configuration
                )
        except (k8s_config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            # A broken kubeconfig (not YAML, wrong shapes) surfaces from the client as
            # yaml/Type/Key errors: all mean "cannot load", with the path in the message.
            source = (
                "in-cluster service account"
                if config.in_cluster
                else (f"kubeconfig {config.kubeconfig_path()}")
            )
            raise UnavailableError(f"cannot load the {source}: {exc}") from exc
        return cls(k8s.ApiClient(configuration), config, route_store=route_store)

    # ==== plumbing ==========================================================================
    def _api(self) -> k8s.ApiClient:
        if self._api_client is None:
            raise DisabledError()
        return self._api_client

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.config.default_namespace

    def _request(
        self,
        method: str,
        path: str,
        *,
        kind: str | None,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            return kubeapi.request(self._api(), method, path, **kwargs)
        except kubeapi.ApiException as exc:
            raise error_from_status(exc.status or 0, exc.body, kind, namespace, name) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise UnavailableError(
                f"the API server did not answer: {exc}", kind=kind, namespace=namespace, name=name
            ) from exc

    def _version(self, rtype: ResourceType) -> str:
        if rtype.group != AIGATEWAY_GROUP:
            return rtype.preferred_version
        with self._lock:
            if self._aigateway_version is None:
                self._aigateway_version = self._discover_aigateway_version()
            return self._aigateway_version

    def _discover_aigateway_version(self) -> str:
        group = self._request("GET", f"/apis/{AIGATEWAY_GROUP}", kind=None)
        served = {v["groupVersion"].split("/")[1] for v in group.get("versions", [])}
        for version in AI_GATEWAY_ROUTE.versions:
            if version in served:
                return version
        raise UnavailableError(
            f"{AIGATEWAY_GROUP} serves {sorted(served)}, none of {AI_GATEWAY_ROUTE.versions}"
        )

    def _path(self, rtype: ResourceType, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{rtype.group}/{self._version(rtype)}"
        base += f"/namespaces/{namespace}" if namespace else ""
        return f"{base}/{rtype.plural}" + (f"/{name}" if name else "")

    def _get(self, rtype: ResourceType, namespace: str, name: str) -> Manifest:
        obj: Manifest = self._request(
            "GET",
            self._path(rtype, namespace, name),
            kind=rtype.kind,
            namespace=namespace,
            name=name,
        )
        return obj

    def _create(self, rtype: ResourceType, obj: Manifest, *, dry_run: bool = False) -> Manifest:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        query = {**_WRITE_QUERY, **({"dryRun": "All"} if dry_run else {})}
        created: Manifest = self._request(
            "POST",
            self._path(rtype, namespace),
            kind=rtype.kind,
            namespace=namespace,
            name=name,
            body=obj,
            query=query,
        )
        return created

    def _replace_owned(
        self,
        rtype: ResourceType,
        desired: Manifest,
        merge: Callable[[Manifest, Manifest], Manifest],
    ) -> Manifest:
        """GET, merge our fields into what is there, PUT with its resourceVersion; retry on
        conflict so that a concurrent writer's change is never lost."""
        namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
        for _ in range(self._max_conflict_retries):
            existing = self._get(rtype, namespace, name)
            try:
                replaced: Manifest = self._request(
                    "PUT",
                    self._path(rtype, namespace, name),
                    kind=rtype.kind,
                    namespace=namespace,
                    name=name,
                    body=merge(existing, desired),
                    query=_WRITE_QUERY,
                )
                return replaced
            except ConflictError:
                continue
        raise ConflictError(
            f"gave up after {self._max_conflict_retries} conflicting concurrent writes",
            kind=rtype.kind,
            namespace=namespace,
            name=name,
        )

    def _apply(
        self,
        create: Callable[[], _T],
        update: Callable[[], _T],
    ) -> _T:
        """Create, or update if it exists; safe against a concurrent creator."""
        try:
            return create()
        except AlreadyExistsError:
            return update()

    def _delete(self, rtype: ResourceType, namespace: str, name: str) -> None:
        """Delete and wait until the object is gone: a finalizer (the AI Gateway controller's
        on routes and backends) keeps it until its owner lets go. Bounded by
        `config.delete_timeout_seconds`; then DeletionBlockedError names the finalizers."""
        self._request(
            "DELETE",
            self._path(rtype, namespace, name),
            kind=rtype.kind,
            namespace=namespace,
            name=name,
        )
        deadline = time.monotonic() + self.config.delete_timeout_seconds
        pause = 0.02
        while True:
            try:
                obj = self._get(rtype, namespace, name)
            except NotFoundError:
                return
            finalizers = list((obj.get("metadata") or {}).get("finalizers") or [])
            if time.monotonic() >= deadline:
                raise DeletionBlockedError(
                    _deletion_blocked_message(finalizers, self.config.delete_timeout_seconds),
                    finalizers=finalizers,
                    kind=rtype.kind,
                    namespace=namespace,
                    name=name,
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    # ==== availability ======================================================================
    def is_available(self) -> bool:
        if self._api_client is None:
            return False
        try:
            version = self._version(AI_GATEWAY_ROUTE)
            resources = self._request("GET", f"/apis/{AIGATEWAY_GROUP}/{version}", kind=None)
        except AIGatewayError:
            with self._lock:
                self._aigateway_version = None  # rediscover next time
            return False
        served = {r.get("name") for r in resources.get("resources", [])}
        return {AI_GATEWAY_ROUTE.plural, AI_SERVICE_BACKEND.plural} <= served

    # ==== AIGatewayRoute ====================================================================
    def _route_manifest(self, route: AIGatewayRoute) -> Manifest:
        return manifests.build_route_manifest(
            route,
            api_version=self._version(AI_GATEWAY_ROUTE),
            gateway_name=self.config.gateway_name,
            gateway_namespace=self.config.gateway_namespace,
            default_namespace=self.config.default_namespace,
        )

    def _remember(self, obj: Manifest) -> Manifest:
        obj.setdefault("apiVersion", f"{AI_GATEWAY_ROUTE.group}/{self._version(AI_GATEWAY_ROUTE)}")
        obj.setdefault("kind", AI_GATEWAY_ROUTE.kind)
        self.route_store.observe(obj)
        return obj

    def _forget(self, namespace: str, name: str) -> None:
        self.route_store.invalidate(namespace, name)

    def _cached_route(self, namespace: str, name: str) -> Manifest | None:
        return self.route_store.manifest(namespace, name)

    def _policy_manifest(self, route: AIGatewayRoute, namespace: str) -> Manifest | None:
        if route.rate_limit is None:
            return None
        return manifests.build_rate_limit_policy_manifest(
            route.name,
            namespace,
            route.rate_limit,
            route_llm_request_costs=route.llm_request_costs,
            gateway_name=self.config.gateway_name,
        )

    def _parsed_route(self, obj: Manifest, fallback: AIGatewayRoute) -> AIGatewayRoute:
        """The route as written; a route with several rules (other owners') is not a shape the
        model describes, so the caller gets its own, now applied, model back."""
        try:
            return manifests.parse_route_manifest(obj, rate_limit=fallback.rate_limit)
        except UnsupportedObjectError:
            return fallback.model_copy(update={"namespace": obj["metadata"]["namespace"]})

    def create_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        obj = self._route_manifest(route)
        namespace = obj["metadata"]["namespace"]
        policy = self._policy_manifest(route, namespace)
        if policy is not None:
            # Validate the policy on the server before the route exists: no half-applied pair.
            self._create(BACKEND_TRAFFIC_POLICY, policy, dry_run=True)
        created = self._remember(self._create(AI_GATEWAY_ROUTE, obj))
        if policy is not None:
            try:
                self._create(BACKEND_TRAFFIC_POLICY, policy)
            except AIGatewayError as exc:
                # No half-applied pair: the route goes again (waiting out the AI Gateway
                # controller's finalizer, which it has usually added by now).
                self._forget(namespace, route.name)
                try:
                    self._delete(AI_GATEWAY_ROUTE, namespace, route.name)
                except AIGatewayError as cleanup:
                    exc.add_note(f"removing the route again did not complete: {cleanup}")
                raise
        return self._parsed_route(created, route)

    def update_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        desired = self._route_manifest(route)
        namespace = desired["metadata"]["namespace"]
        policy = self._policy_manifest(route, namespace)
        if policy is not None:
            self._create_or_dry_run_policy(policy)
        updated = self._remember(
            self._replace_owned(AI_GATEWAY_ROUTE, desired, ownership.merge_owned_route)
        )
        if policy is not None:
            self._apply_policy_manifest(policy)
        else:
            self._delete_policy_if_ours(namespace, route.name)
        return self._parsed_route(updated, route)

    def apply_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        return self._apply(lambda: self.create_route(route), lambda: self.update_route(route))

    def delete_route(self, namespace: str | None, name: str) -> None:
        ns = self._ns(namespace)
        self._delete(AI_GATEWAY_ROUTE, ns, name)
        self._forget(ns, name)
        self._delete_policy_if_ours(ns, name)

    def _read_route(self, namespace: str | None, name: str) -> Manifest:
        return self._remember(self._get(AI_GATEWAY_ROUTE, self._ns(namespace), name))

    def get_route(self, namespace: str | None, name: str) -> AIGatewayRoute:
        obj = self._read_route(namespace, name)
        try:
            policy: RateLimitPolicy | None = self.get_rate_limit_policy(namespace, name)
        except NotFoundError:
            policy = None
        return manifests.parse_route_manifest(
            obj, rate_limit=policy.config if policy is not None else None
        )

    def get_route_manifest(self, namespace: str | None, name: str) -> Manifest:
        """The raw object, for callers that need annotations or fields the model omits."""
        return self._read_route(namespace, name)

    def _list(
        self, rtype: ResourceType, namespace: str | None, label_selector: str | None = None
    ) -> list[Manifest]:
        """The items of a LIST, each with the apiVersion and kind a LIST leaves out."""
        query = {"labelSelector": label_selector} if label_selector else None
        listed = self._request(
            "GET",
            self._path(rtype, namespace),
            kind=rtype.kind,
            namespace=namespace,
            query=query,
        )
        items: list[Manifest] = listed.get("items", [])
        for item in items:
            item.setdefault("apiVersion", listed.get("apiVersion"))
            item.setdefault("kind", rtype.kind)
        return items

    def _parsed_routes(
        self,
        namespace: str | None,
        label_selector: str | None,
        parse: Callable[[Manifest], _T],
    ) -> list[_T]:
        parsed = []
        for item in self._list(AI_GATEWAY_ROUTE, namespace, label_selector):
            try:
                parsed.append(parse(self._remember(item)))
            except MalformedObjectError as exc:
                # One route the model cannot describe (several rules, a foreign shape) must
                # not hide all the others: it is logged with its path, not returned.
                log.warning("route_not_listed", error=str(exc), path=exc.path)
        return parsed

    def list_routes(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[AIGatewayRoute]:
        policies = self._list_policies(namespace)

        def parse(item: Manifest) -> AIGatewayRoute:
            meta = item.get("metadata", {})
            policy = policies.get((meta.get("namespace"), meta.get("name")))
            return manifests.parse_route_manifest(
                item, rate_limit=policy.config if policy else None
            )

        return self._parsed_routes(namespace, label_selector, parse)

    def get_route_status(self, namespace: str | None, name: str) -> AIGatewayRouteStatus:
        return manifests.parse_route_status(self._read_route(namespace, name))

    def get_route_snapshot(self, namespace: str | None, name: str) -> RouteSnapshot:
        return manifests.parse_route_snapshot(self._read_route(namespace, name))

    def list_route_snapshots(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[RouteSnapshot]:
        return self._parsed_routes(namespace, label_selector, manifests.parse_route_snapshot)

    def get_generated_route(self, namespace: str | None, name: str) -> GeneratedRoute:
        ns = self._ns(namespace)
        obj = self._get(HTTP_ROUTE, ns, name)
        return parse_generated_route(obj)

    @property
    def api_client(self) -> k8s.ApiClient:
        """The client other adapters (events, leases, watch) share with this one."""
        return self._api()

    def get_route_annotations(self, namespace: str | None, name: str) -> dict[str, str]:
        annotations = self._read_route(namespace, name)["metadata"].get("annotations") or {}
        return dict(annotations)

    def set_route_annotations(
        self, namespace: str | None, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        # A merge patch on metadata.annotations touches only the given keys (null deletes).
        ns = self._ns(namespace)
        patched = self._request(
            "PATCH",
            self._path(AI_GATEWAY_ROUTE, ns, name),
            kind=AI_GATEWAY_ROUTE.kind,
            namespace=ns,
            name=name,
            body={"metadata": {"annotations": dict(annotations)}},
            content_type=kubeapi.MERGE_PATCH,
            query=_WRITE_QUERY,
        )
        self._remember(patched)

    # ==== traffic ===========================================================================
    def update_traffic_weights(
        self,
        namespace: str | None,
        route_name: str,
        backends: Sequence[WeightedBackend] | Mapping[str, int],
        *,
        annotations: Mapping[str, str] | None = None,
        expected_weights: Mapping[str, int] | None = None,
        allow_all_zero: bool = False,
        rule: int | str | None = None,
        return_route: bool = True,
    ) -> AIGatewayRoute | None:
        ns = self._ns(namespace)
        weights = (
            dict(backends)
            if isinstance(backends, Mapping)
            else {b.name: b.weight for b in backends}
        )
        patched = self._patch_route(
            ns,
            route_name,
            lambda obj: manifests.weight_patch_operations(
                obj,
                weights,
                allow_all_zero=allow_all_zero,
                annotations=annotations,
                expected_weights=expected_weights,
                rule=rule,
            ),
            expected_weights=expected_weights,
        )
        if not return_route:
            return None
        if any(w > MAX_WEIGHT for w in _live_weights(patched).values()):
            return None  # sub-percent weights (a 1,000,000 total): not the model's 0..100
        try:
            return manifests.parse_route_manifest(patched)
        except UnsupportedObjectError:
            return None

    def _patch_route(
        self,
        ns: str,
        route_name: str,
        build_ops: Callable[[Manifest], manifests.JSONPatch],
        *,
        expected_weights: Mapping[str, int] | None,
        skip_empty: bool = False,
    ) -> Manifest:
        """The route after the JSON Patch `build_ops` makes from our copy of it (the cached
        one, else a fresh read), retried from a fresh read when the copy proves stale: a
        failed `test`, a conflict, or a route recreated meanwhile. `expected_weights` makes
        the write a compare-and-swap on the weights (ConflictError when someone else changed
        them). `skip_empty`: an empty patch is not sent, and the copy is returned."""
        obj = self._cached_route(ns, route_name)
        for _ in range(self._max_conflict_retries):
            if obj is None:
                obj = self._read_route(ns, route_name)
            if expected_weights is not None and _weights_differ(obj, expected_weights):
                # Our copy may be stale: only a fresh read can tell a real change apart.
                obj = self._read_route(ns, route_name)
                _check_expected_weights(obj, expected_weights)
            ops = build_ops(obj)
            if not ops and skip_empty:
                return obj
            try:
                patched = self._request(
                    "PATCH",
                    self._path(AI_GATEWAY_ROUTE, ns, route_name),
                    kind=AI_GATEWAY_ROUTE.kind,
                    namespace=ns,
                    name=route_name,
                    body=ops,
                    content_type=kubeapi.JSON_PATCH,
                    query=_WRITE_QUERY,
                )
            except (ConflictError, NotFoundError):
                # Our copy was stale (or the route was recreated): read it fresh and retry.
                self._forget(ns, route_name)
                obj = None
                continue
            except InvalidError as exc:
                # kube-apiserver answers a failed JSON Patch `test` with a bare 422 that has no
                # field causes; our operations are built from the object, so that only means
                # the object changed. Validation failures (CRD schema, CEL) carry causes and
                # are raised.
                if exc.causes:
                    raise
                self._forget(ns, route_name)
                obj = None
                continue
            return self._remember(patched)
        raise ConflictError(
            f"gave up after {self._max_conflict_retries} conflicting concurrent writes",
            kind=AI_GATEWAY_ROUTE.kind,
            namespace=ns,
            name=route_name,
        )

    # ==== header rules (cohort, opt-in) =====================================================
    def _patch_with_rule(
        self,
        namespace: str | None,
        route_name: str,
        rule_ops: Callable[[Manifest], manifests.JSONPatch],
        *,
        weights: Mapping[str, int] | None,
        expected_weights: Mapping[str, int] | None,
        annotations: Mapping[str, str] | None,
        rule: int | str | None,
    ) -> RouteSnapshot:
        """Weights (first: their indexes are read before a rule moves), the rule and the
        annotations in ONE JSON Patch; retried from a fresh read when a `test` fails."""

        def build_ops(obj: Manifest) -> manifests.JSONPatch:
            if weights:
                ops = manifests.weight_patch_operations(
                    obj,
                    weights,
                    annotations=annotations,
                    expected_weights=expected_weights,
                    rule=rule,
                )
            else:
                ops = annotation_patch_operations(obj, annotations or {})
            return ops + rule_ops(obj)

        patched = self._patch_route(
            self._ns(namespace),
            route_name,
            build_ops,
            expected_weights=expected_weights,
            skip_empty=True,
        )
        return manifests.parse_route_snapshot(patched)

    def set_cohort_rule(
        self,
        namespace: str | None,
        route_name: str,
        *,
        backends: Sequence[str],
        header: str,
        canary_backend: str,
        percent: float,
        weights: Mapping[str, int] | None = None,
        expected_weights: Mapping[str, int] | None = None,
        annotations: Mapping[str, str] | None = None,
        rule: int | str | None = None,
    ) -> RouteSnapshot:
        return self._patch_with_rule(
            namespace,
            route_name,
            lambda obj: cohort_rule_operations(
                obj,
                backends=backends,
                header=header,
                canary_backend=canary_backend,
                percent=percent,
                rule=rule,
            ),
            weights=weights,
            expected_weights=expected_weights,
            annotations=annotations,
            rule=rule,
        )

    def remove_cohort_rule(
        self,
        namespace: str | None,
        route_name: str,
        *,
        canary_backend: str,
        weights: Mapping[str, int] | None = None,
        expected_weights: Mapping[str, int] | None = None,
        annotations: Mapping[str, str] | None = None,
        rule: int | str | None = None,
    ) -> RouteSnapshot:
        return self._patch_with_rule(
            namespace,
            route_name,
            lambda obj: remove_cohort_rule_operations(obj, canary_backend=canary_backend),
            weights=weights,
            expected_weights=expected_weights,
            annotations=annotations,
            rule=rule,
        )

    def set_opt_in_rule(
        self,
        namespace: str | None,
        route_name: str,
        *,
        backends: Sequence[str],
        header: str,
        values: Sequence[str],
        canary_backend: str,
        weights: Mapping[str, int] | None = None,
        expected_weights: Mapping[str, int] | None = None,
        annotations: Mapping[str, str] | None = None,
        rule: int | str | None = None,
    ) -> RouteSnapshot:
        return self._patch_with_rule(
            namespace,
            route_name,
            lambda obj: opt_in_rule_operations(
                obj,
                backends=backends,
                header=header,
                values=values,
                canary_backend=canary_backend,
                rule=rule,
            ),
            weights=weights,
            expected_weights=expected_weights,
            annotations=annotations,
            rule=rule,
        )

    def remove_opt_in_rule(
        self,
        namespace: str | None,
        route_name: str,
        *,
        canary_backend: str,
        weights: Mapping[str, int] | None = None,
        expected_weights: Mapping[str, int] | None = None,
        annotations: Mapping[str, str] | None = None,
        rule: int | str | None = None,
    ) -> RouteSnapshot:
        return self._patch_with_rule(
            namespace,
            route_name,
            lambda obj: remove_opt_in_rule_operations(obj, canary_backend=canary_backend),
            weights=weights,
            expected_weights=expected_weights,
            annotations=annotations,
            rule=rule,
        )

    # ==== AIServiceBackend ==================================================================
    def _service_backend_manifest(self, backend: AIServiceBackend) -> Manifest:
        return manifests.build_service_backend_manifest(
            backend,
            api_version=self._version(AI_SERVICE_BACKEND),
            default_namespace=self.config.default_namespace,
        )

    def create_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend:
        created = self._create(AI_SERVICE_BACKEND, self._service_backend_manifest(backend))
        return manifests.parse_service_backend_manifest(created)

    def update_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend:
        updated = self._replace_owned(
            AI_SERVICE_BACKEND, self._service_backend_manifest(backend), _merge_service_backend
        )
        return manifests.parse_service_backend_manifest(updated)

    def apply_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend:
        return self._apply(
            lambda: self.create_service_backend(backend),
            lambda: self.update_service_backend(backend),
        )

    def delete_service_backend(self, namespace: str | None, name: str) -> None:
        self._delete(AI_SERVICE_BACKEND, self._ns(namespace), name)

    def get_service_backend(self, namespace: str | None, name: str) -> AIServiceBackend:
        obj = self._get(AI_SERVICE_BACKEND, self._ns(namespace), name)
        return manifests.parse_service_backend_manifest(obj)

    # ==== Envoy Gateway Backend =============================================================
    def _backend_manifest(self, backend: Backend) -> Manifest:
        return manifests.build_backend_manifest(
            backend, default_namespace=self.config.default_namespace
        )

    def create_backend(self, backend: Backend) -> Backend:
        created = self._create(BACKEND, self._backend_manifest(backend))
        return manifests.parse_backend_manifest(created)

    def update_backend(self, backend: Backend) -> Backend:
        updated = self._replace_owned(BACKEND, self._backend_manifest(backend), _merge_backend)
        return manifests.parse_backend_manifest(updated)

    def apply_backend(self, backend: Backend) -> Backend:
        return self._apply(
            lambda: self.create_backend(backend), lambda: self.update_backend(backend)
        )

    def delete_backend(self, namespace: str | None, name: str) -> None:
        self._delete(BACKEND, self._ns(namespace), name)

    def get_backend(self, namespace: str | None, name: str) -> Backend:
        return manifests.parse_backend_manifest(self._get(BACKEND, self._ns(namespace), name))

    # ==== rate limits =======================================================================
    def _rate_limit_manifest(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> Manifest:
        ns = self._ns(namespace)
        # The cost key must be one the route's llmRequestCosts write: read them from the route.
        route = self._read_route(ns, route_name)
        costs = manifests.parse_route_manifest(route).llm_request_costs
        return manifests.build_rate_limit_policy_manifest(
            route_name,
            ns,
            config,
            route_llm_request_costs=costs,
            gateway_name=self.config.gateway_name,
        )

    def create_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy:
        created = self._create(
            BACKEND_TRAFFIC_POLICY, self._rate_limit_manifest(namespace, route_name, config)
        )
        return manifests.parse_rate_limit_policy_manifest(created)

    def update_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy:
        desired = self._rate_limit_manifest(namespace, route_name, config)
        updated = self._replace_owned(BACKEND_TRAFFIC_POLICY, desired, _merge_rate_limit)
        return manifests.parse_rate_limit_policy_manifest(updated)

    def apply_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy:
        desired = self._rate_limit_manifest(namespace, route_name, config)
        return manifests.parse_rate_limit_policy_manifest(self._apply_policy_manifest(desired))

    def delete_rate_limit_policy(self, namespace: str | None, route_name: str) -> None:
        self._delete(
            BACKEND_TRAFFIC_POLICY,
            self._ns(namespace),
            manifests.rate_limit_policy_name(route_name),
        )

    def get_rate_limit_policy(self, namespace: str | None, route_name: str) -> RateLimitPolicy:
        obj = self._get(
            BACKEND_TRAFFIC_POLICY,
            self._ns(namespace),
            manifests.rate_limit_policy_name(route_name),
        )
        return manifests.parse_rate_limit_policy_manifest(obj)

    def _apply_policy_manifest(self, policy: Manifest) -> Manifest:
        return self._apply(
            lambda: self._create(BACKEND_TRAFFIC_POLICY, policy),
            lambda: self._replace_owned(BACKEND_TRAFFIC_POLICY, policy, _merge_rate_limit),
        )

    def _create_or_dry_run_policy(self, policy: Manifest) -> None:
        """Server-side validation of a policy before the route changes (dry run)."""
        try:
            self._create(BACKEND_TRAFFIC_POLICY, policy, dry_run=True)
        except AlreadyExistsError:
            meta = policy["metadata"]
            existing = self._get(BACKEND_TRAFFIC_POLICY, meta["namespace"], meta["name"])
            self._request(
                "PUT",
                self._path(BACKEND_TRAFFIC_POLICY, meta["namespace"], meta["name"]),
                kind=BACKEND_TRAFFIC_POLICY.kind,
                namespace=meta["namespace"],
                name=meta["name"],
                body=_merge_rate_limit(existing, policy),
                query={**_WRITE_QUERY, "dryRun": "All"},
            )

    def _delete_policy_if_ours(self, namespace: str, route_name: str) -> None:
        name = manifests.rate_limit_policy_name(route_name)
        try:
            obj = self._get(BACKEND_TRAFFIC_POLICY, namespace, name)
        except NotFoundError:
            return
        if manifests.is_managed(obj):
            with contextlib.suppress(NotFoundError):
                self._delete(BACKEND_TRAFFIC_POLICY, namespace, name)

    def _list_policies(self, namespace: str | None) -> dict[tuple[str, str], RateLimitPolicy]:
        policies = {}
        for item in self._list(BACKEND_TRAFFIC_POLICY, namespace, MANAGED_BY_SELECTOR):
            policy = manifests.parse_rate_limit_policy_manifest(item)
            policies[(policy.namespace, policy.route_name)] = policy
        return policies


def _deletion_blocked_message(finalizers: Sequence[str], timeout: float) -> str:
    if AIGATEWAY_FINALIZER in finalizers:
        return (
            f"deletion requested, but the object is still there after {timeout:g}s: the AI "
            f"Gateway controller is not finishing the deletion (finalizer {AIGATEWAY_FINALIZER} "
            "is still set). Is the AI Gateway controller running? The object goes as soon as "
            "it removes its finalizer."
        )
    if finalizers:
        return (
            f"deletion requested, but the object is still there after {timeout:g}s: "
            f"finalizer(s) {', '.join(finalizers)} still set; their owner must remove them"
        )
    return f"deletion requested, but the object is still there after {timeout:g}s"


def _merge_service_backend(existing: Manifest, desired: Manifest) -> Manifest:
    return ownership.merge_owned(existing, desired, ownership.SERVICE_BACKEND_OWNED_SPEC)


def _merge_backend(existing: Manifest, desired: Manifest) -> Manifest:
    return ownership.merge_owned(existing, desired, ownership.BACKEND_OWNED_SPEC)


def _merge_rate_limit(existing: Manifest, desired: Manifest) -> Manifest:
    return ownership.merge_owned(
        existing, desired, ownership.RATE_LIMIT_OWNED_SPEC, ownership.RATE_LIMIT_OWNED_ANNOTATIONS
    )


def _live_weights(obj: Manifest) -> dict[str, int]:
    """Every backendRef's weight by name (a missing weight is the CRD default, 1)."""
    weights: dict[str, int] = {}
    for rule in obj.get("spec", {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            weights[ref.get("name")] = ref.get("weight", 1)
    return weights


def _weights_differ(obj: Manifest, expected: Mapping[str, int]) -> dict[str, int | None]:
    live = _live_weights(obj)
    return {n: live.get(n) for n, w in expected.items() if live.get(n) != w}


def _check_expected_weights(obj: Manifest, expected: Mapping[str, int]) -> None:
    differing = _weights_differ(obj, expected)
    if differing:
        meta = obj.get("metadata", {})
        raise ConflictError(
            f"weights changed outside this writer: expected {dict(expected)}, found {differing}",
            kind=AI_GATEWAY_ROUTE.kind,
            namespace=meta.get("namespace"),
            name=meta.get("name"),
        )


__all__ = ["FIELD_MANAGER", "InvalidError", "KubeAIGatewayClient"]
