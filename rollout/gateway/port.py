"""The AIGatewayClient port: what the controller (and any other core code) may ask of the
AI Gateway, with no Kubernetes types in sight. `KubeAIGatewayClient` is its adapter.

Every operation raises the typed errors of `rollout.gateway.errors`; `namespace=None` means
the configured default namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from rollout.gateway.models import (
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


@runtime_checkable
class AIGatewayClient(Protocol):
    # -- AIGatewayRoute -------------------------------------------------------------------
    def create_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        """Create the route (and its rate-limit policy when `route.rate_limit` is set)."""
        ...

    def update_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        """Change only what the model owns; other owners' fields and annotations stay."""
        ...

    def apply_route(self, route: AIGatewayRoute) -> AIGatewayRoute:
        """Create or update (idempotent)."""
        ...

    def delete_route(self, namespace: str | None, name: str) -> None:
        """Delete and wait until it is gone; DeletionBlockedError when a finalizer (the AI
        Gateway controller's) still holds it after the configured timeout. Likewise for every
        delete_* below."""
        ...

    def get_route(self, namespace: str | None, name: str) -> AIGatewayRoute: ...

    def list_routes(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[AIGatewayRoute]:
        """Routes in `namespace` (None: every namespace) matching the label selector."""
        ...

    def get_route_status(self, namespace: str | None, name: str) -> AIGatewayRouteStatus: ...

    def get_route_snapshot(self, namespace: str | None, name: str) -> RouteSnapshot:
        """One read: weights per rule and annotations, for any route shape."""
        ...

    def list_route_snapshots(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[RouteSnapshot]:
        """Snapshots of every route (any shape) in `namespace` (None: all namespaces)."""
        ...

    def get_generated_route(self, namespace: str | None, name: str) -> GeneratedRoute:
        """The HTTPRoute the AI Gateway controller generated from the route (read-only: the
        controller owns it). NotFoundError until the controller has reconciled the route."""
        ...

    def get_route_annotations(self, namespace: str | None, name: str) -> dict[str, str]:
        """The route's annotations (manual rollout controls and controller state live there)."""
        ...

    def set_route_annotations(
        self, namespace: str | None, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Set (or, with None, remove) the given annotations only; other keys stay."""
        ...

    # -- traffic --------------------------------------------------------------------------
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
        """Set the weight of the named backendRefs, and only that, in ONE request.

        `rule`: the rule's index or name; None: the one rule holding all named backends.
        `annotations` are written in the same request (so state and weights cannot part).
        `expected_weights`: compare-and-swap; if the live weights differ, ConflictError.
        Weights may be 0..1,000,000 (the generated HTTPRoute's cap: sub-percent steps on a
        1,000,000 total). Returns the parsed route, or None when the route has a shape the
        model does not describe (several rules, a weight above 100); the write has happened
        either way. `return_route=False`: None without parsing the answer into the model (the
        controller reads the route back from its cache, which holds the answer).
        """
        ...

    # -- header rules beside the weighted rule (issue 10) ----------------------------------
    # Each writes the rule, the optional `weights` of the weighted rule and `annotations` in
    # ONE JSON Patch (a crash cannot separate them); `expected_weights` makes it a
    # compare-and-swap on the weights (ConflictError when they moved). `backends` are the
    # weighted rule's stable and canary (or `rule` names/indexes it). Returns the snapshot of
    # the patched route.
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
        """Add (before the weighted rule) or re-share the `<canary>-cohort` rule: sessions whose
        `header` ends in hex selected for `percent` go to the canary (manifests.cohorts)."""
        ...

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
        """Remove the cohort rule (promotion, rollback); no rule: only weights/annotations."""
        ...

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
        """Add or update the `<canary>-opt-in` rule: Exact `header` matches for `values`."""
        ...

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
        """Remove the opt-in rule; no rule: only weights/annotations."""
        ...

    # -- AIServiceBackend -----------------------------------------------------------------
    def create_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend: ...

    def update_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend: ...

    def apply_service_backend(self, backend: AIServiceBackend) -> AIServiceBackend: ...

    def delete_service_backend(self, namespace: str | None, name: str) -> None: ...

    def get_service_backend(self, namespace: str | None, name: str) -> AIServiceBackend: ...

    # -- Envoy Gateway Backend ------------------------------------------------------------
    def create_backend(self, backend: Backend) -> Backend: ...

    def update_backend(self, backend: Backend) -> Backend: ...

    def apply_backend(self, backend: Backend) -> Backend: ...

    def delete_backend(self, namespace: str | None, name: str) -> None: ...

    def get_backend(self, namespace: str | None, name: str) -> Backend: ...

    # -- rate limits (Envoy Gateway BackendTrafficPolicy) ----------------------------------
    def create_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy:
        """A per-tenant budget for the route; its cost key must be one the route writes."""
        ...

    def update_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy: ...

    def apply_rate_limit_policy(
        self, namespace: str | None, route_name: str, config: RateLimitConfig
    ) -> RateLimitPolicy: ...

    def delete_rate_limit_policy(self, namespace: str | None, route_name: str) -> None: ...

    def get_rate_limit_policy(self, namespace: str | None, route_name: str) -> RateLimitPolicy: ...

    # -- availability ---------------------------------------------------------------------
    def is_available(self) -> bool:
        """True only when enabled, the API answers and the AI Gateway CRDs are served."""
        ...


@runtime_checkable
class RouteCache(Protocol):
    """Routes as a watch last saw them (or as our own last write left them): what the
    controller reads instead of a GET per tick. `RouteStore` implements it."""

    def cached_snapshot(self, namespace: str, name: str) -> RouteSnapshot | None:
        """The cached snapshot; None when the cache cannot tell (not synced for that
        namespace, or its copy was proved stale): read from the API instead. NotFoundError
        when the cache is synced and the route is not there (the watch saw it deleted)."""
        ...
