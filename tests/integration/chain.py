"""The objects a route needs for the AI Gateway controller to accept it: for each backend
name, an Envoy Gateway Backend and an AIServiceBackend pointing at it."""

from __future__ import annotations

from collections.abc import Iterable

from rollout.gateway import (
    AIServiceBackend,
    APISchema,
    Backend,
    BackendRef,
    FQDNEndpoint,
    KubeAIGatewayClient,
)


def create_chain(gateway: KubeAIGatewayClient, names: Iterable[str]) -> None:
    for name in names:
        gateway.apply_backend(
            Backend(name=name, endpoints=[FQDNEndpoint(hostname=f"{name}.models.svc", port=80)])
        )
        gateway.apply_service_backend(
            AIServiceBackend(
                name=name,
                api_schema=APISchema(name="OpenAI", version="v1"),
                backend_ref=BackendRef(name=name),
            )
        )
