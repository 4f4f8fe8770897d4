"""Names shared with the cluster: API groups, versions, plurals, our label and annotation keys.

Everything here is defined once; the models, the manifest builders and the Kubernetes adapter
import it from this module instead of spelling the strings again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- ownership -------------------------------------------------------------------------------

MANAGED_BY_LABEL: Final = "managed-by"
MANAGED_BY_VALUE: Final = "model-registry"
# Label selector string for list/watch calls that should only see our objects.
MANAGED_BY_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"

# --- our annotations -------------------------------------------------------------------------

ANNOTATION_PREFIX: Final = "rollout.model-registry.io"
# On an AIGatewayRoute: JSON object {backend name: variant tag}. The CRD has no field for our
# stable/canary/shadow tags, so they live here instead of in the spec.
VARIANTS_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/variants"
# On a BackendTrafficPolicy: the AIGatewayRoute it was derived from. Needed because the policy
# name may be hashed (long route names) and a Gateway-wide policy does not name the route.
ROUTE_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/route"

# --- AI Gateway conventions ------------------------------------------------------------------

# The gateway copies the request body's `model` into this header before routing.
MODEL_HEADER: Final = "x-ai-eg-model"
# Envoy dynamic-metadata namespace the AI Gateway writes llmRequestCosts into.
AI_GATEWAY_METADATA_NAMESPACE: Final = "io.envoy.ai_gateway"

# --- API groups ------------------------------------------------------------------------------

AIGATEWAY_GROUP: Final = "aigateway.envoyproxy.io"
ENVOY_GATEWAY_GROUP: Final = "gateway.envoyproxy.io"
GATEWAY_API_GROUP: Final = "gateway.networking.k8s.io"

# Preferred first: v1beta1 is the storage version; v1alpha1 is still served but deprecated.
AIGATEWAY_VERSIONS: Final = ("v1beta1", "v1alpha1")
ENVOY_GATEWAY_VERSIONS: Final = ("v1alpha1",)


@dataclass(frozen=True)
class ResourceType:
    """One custom resource kind as the API server addresses it."""

    group: str
    versions: tuple[str, ...]  # served versions this project can speak, preferred first
    plural: str
    kind: str

    @property
    def preferred_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str) -> str:
        """`group/version` for a manifest's apiVersion; refuses versions we cannot speak."""
        if version not in self.versions:
            raise ValueError(
                f"{self.kind}: unsupported API version {version!r} "
                f"(supported: {', '.join(self.versions)})"
            )
        return f"{self.group}/{version}"


AI_GATEWAY_ROUTE: Final = ResourceType(
    AIGATEWAY_GROUP, AIGATEWAY_VERSIONS, "aigatewayroutes", "AIGatewayRoute"
)
AI_SERVICE_BACKEND: Final = ResourceType(
    AIGATEWAY_GROUP, AIGATEWAY_VERSIONS, "aiservicebackends", "AIServiceBackend"
)
BACKEND: Final = ResourceType(ENVOY_GATEWAY_GROUP, ENVOY_GATEWAY_VERSIONS, "backends", "Backend")
BACKEND_TRAFFIC_POLICY: Final = ResourceType(
    ENVOY_GATEWAY_GROUP,
    ENVOY_GATEWAY_VERSIONS,
    "backendtrafficpolicies",
    "BackendTrafficPolicy",
)
# The HTTPRoute the AI Gateway controller generates from each AIGatewayRoute (same name and
# namespace). We only ever read it: the controller overwrites it on every sync.
HTTP_ROUTE: Final = ResourceType(GATEWAY_API_GROUP, ("v1",), "httproutes", "HTTPRoute")

# --- what the AI Gateway controller does to our objects ----------------------------------------

# Added to AIGatewayRoutes and AIServiceBackends; a deletion completes only once the controller
# removes it (while it is down, a deletion waits).
AIGATEWAY_FINALIZER: Final = "aigateway.envoyproxy.io/finalizer"
# The condition types it writes (exactly one of them at a time).
ACCEPTED_CONDITION: Final = "Accepted"
NOT_ACCEPTED_CONDITION: Final = "NotAccepted"
# The catch-all rule it appends to every generated HTTPRoute.
ROUTE_NOT_FOUND_RULE: Final = "route-not-found"
