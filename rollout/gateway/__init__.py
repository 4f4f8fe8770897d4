"""The AI Gateway port, its models, errors and the Kubernetes adapter.

`AIGatewayClient` (a Protocol) is what the core depends on; `KubeAIGatewayClient` is its
adapter over the Kubernetes API. Models are pydantic and validated at construction; the pure
functions in `manifests` and `ownership` translate them to and from Kubernetes objects.

Only the adapter needs the Kubernetes client, so `KubeAIGatewayClient` is imported on first
use: code that needs just the models, the port or the errors (policies, the state machine, the
CLI's validate) does not load the client.
"""

from typing import TYPE_CHECKING, Any

from rollout.gateway.errors import (
    AIGatewayError,
    AlreadyExistsError,
    ConflictError,
    DeletionBlockedError,
    DisabledError,
    ForbiddenError,
    InvalidError,
    MalformedObjectError,
    NotFoundError,
    UnavailableError,
    UnsupportedObjectError,
)
from rollout.gateway.models import (
    AIGatewayRoute,
    AIGatewayRouteStatus,
    AIServiceBackend,
    APISchema,
    APISchemaName,
    Backend,
    BackendRef,
    BudgetPeriod,
    Condition,
    FQDNEndpoint,
    GeneratedBackendRef,
    GeneratedRoute,
    GeneratedRouteRule,
    IPEndpoint,
    LLMRequestCost,
    LLMRequestCostType,
    RateLimitConfig,
    RateLimitPolicy,
    RateLimitTarget,
    RouteSnapshot,
    RuleWeights,
    VariantTag,
    WeightedBackend,
)
from rollout.gateway.port import AIGatewayClient

if TYPE_CHECKING:
    from rollout.gateway.kube import KubeAIGatewayClient


def __getattr__(name: str) -> Any:
    if name == "KubeAIGatewayClient":
        from rollout.gateway.kube import KubeAIGatewayClient

        return KubeAIGatewayClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AIGatewayClient",
    "AIGatewayError",
    "AIGatewayRoute",
    "AIGatewayRouteStatus",
    "AIServiceBackend",
    "APISchema",
    "APISchemaName",
    "AlreadyExistsError",
    "Backend",
    "BackendRef",
    "BudgetPeriod",
    "Condition",
    "ConflictError",
    "DeletionBlockedError",
    "DisabledError",
    "FQDNEndpoint",
    "ForbiddenError",
    "GeneratedBackendRef",
    "GeneratedRoute",
    "GeneratedRouteRule",
    "IPEndpoint",
    "InvalidError",
    "KubeAIGatewayClient",
    "LLMRequestCost",
    "LLMRequestCostType",
    "MalformedObjectError",
    "NotFoundError",
    "RateLimitConfig",
    "RateLimitPolicy",
    "RateLimitTarget",
    "RouteSnapshot",
    "RuleWeights",
    "UnavailableError",
    "UnsupportedObjectError",
    "VariantTag",
    "WeightedBackend",
]
