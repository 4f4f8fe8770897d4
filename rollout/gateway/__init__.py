"""The AI Gateway port, its models, errors and the Kubernetes adapter.

`AIGatewayClient` (a Protocol) is what the core depends on; `KubeAIGatewayClient` is its
adapter over the Kubernetes API. Models are pydantic and validated at construction; the pure
functions in `manifests` and `ownership` translate them to and from Kubernetes objects.
"""

from rollout.gateway.errors import (
    AIGatewayError,
    AlreadyExistsError,
    ConflictError,
    DisabledError,
    ForbiddenError,
    InvalidError,
    MalformedObjectError,
    NotFoundError,
    UnavailableError,
    UnsupportedObjectError,
)
from rollout.gateway.kube import KubeAIGatewayClient
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
    "DisabledError",
    "FQDNEndpoint",
    "ForbiddenError",
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
