"""Typed errors of the AI Gateway port, and the mapping from Kubernetes API responses to them.

Callers branch on the class (NotFoundError, ConflictError, ...), never on message text. Every
error carries the object it is about (kind/namespace/name, where known) and, for errors that
came from the API server, its HTTP status, Status.reason and message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DISABLED_MESSAGE = "AI Gateway integration is disabled (AIGATEWAY_ENABLED=false)"


@dataclass(frozen=True)
class StatusCause:
    """One entry of a Kubernetes Status's details.causes: what is wrong with which field."""

    message: str
    field: str | None = None
    reason: str | None = None  # e.g. FieldValueInvalid, FieldValueRequired

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def object_ref(kind: str | None, namespace: str | None, name: str | None) -> str:
    """`Kind ns/name` for messages; parts that are unknown are left out."""
    ident = f"{namespace}/{name or '<unnamed>'}" if namespace else (name or "")
    return " ".join(part for part in (kind, ident) if part)


class AIGatewayError(Exception):
    """Base of every error the AI Gateway port raises."""

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        status_code: int | None = None,
        reason: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        self.message = message
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.status_code = status_code
        self.reason = reason
        self.retry_after_seconds = retry_after_seconds
        ref = object_ref(kind, namespace, name)
        super().__init__(f"{ref}: {message}" if ref else message)


class NotFoundError(AIGatewayError):
    """The object (or its resource type) does not exist."""


class AlreadyExistsError(AIGatewayError):
    """Create refused: an object with that name exists."""


class ConflictError(AIGatewayError):
    """The object changed since it was read (resourceVersion or a patch `test` failed)."""


class InvalidError(AIGatewayError, ValueError):
    """The request or the desired state is invalid; `causes` lists the offending fields.

    Raised both for the API server's 422/400 answers and for input this package refuses before
    sending anything (e.g. a weight outside 0..100), hence also a ValueError.
    """

    def __init__(
        self,
        message: str,
        *,
        causes: Sequence[StatusCause] = (),
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(
            message,
            kind=kind,
            namespace=namespace,
            name=name,
            status_code=status_code,
            reason=reason,
        )
        self.causes: tuple[StatusCause, ...] = tuple(causes)


class ForbiddenError(AIGatewayError):
    """Authentication or RBAC refused the request (401/403)."""


class UnavailableError(AIGatewayError):
    """The API server could not be reached or asked us to back off; retrying may help."""


class DeletionBlockedError(AIGatewayError):
    """A deletion was accepted but the object is still there: a finalizer holds it.

    The AI Gateway controller adds `aigateway.envoyproxy.io/finalizer` to our routes and
    backends and removes it when it has cleaned up; while it is not running, nothing does.
    """

    def __init__(
        self,
        message: str,
        *,
        finalizers: Sequence[str] = (),
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        self.finalizers = list(finalizers)
        super().__init__(message, kind=kind, namespace=namespace, name=name)


class DisabledError(AIGatewayError):
    """The integration is switched off by configuration."""

    def __init__(self) -> None:
        super().__init__(DISABLED_MESSAGE)


class MalformedObjectError(AIGatewayError):
    """An object read from the cluster lacks a field or has a field of the wrong type/value.

    `path` is the field path inside the object, e.g. `spec.rules[0].backendRefs[1].name`.
    """

    def __init__(
        self,
        detail: str,
        *,
        path: str,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"{path}: {detail}" if path else detail, kind=kind, namespace=namespace, name=name
        )


class UnsupportedObjectError(MalformedObjectError):
    """A valid object that uses features the models cannot represent (e.g. several rules).

    Parsing it would silently drop what it does, so it is refused instead.
    """


# --- Kubernetes Status -> typed error --------------------------------------------------------

# A failed JSON Patch `test` comes back as a generic 422 (apiserver patch.go wraps any patch
# apply error that way), but it means "the object changed under us", which is a conflict.
_PATCH_TEST_FAILURE_MARKERS = ("testing value", "test operation does not apply")


def _status_dict(
    body: str | bytes | Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any], str]:
    """The Status object (or {}) and a fallback message from a raw response body."""
    if body is None:
        return {}, ""
    if isinstance(body, Mapping):
        return body, ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}, body.strip()
    return (decoded, "") if isinstance(decoded, Mapping) else ({}, body.strip())


def _causes(status: Mapping[str, Any]) -> list[StatusCause]:
    details = status.get("details")
    raw = details.get("causes") if isinstance(details, Mapping) else None
    if not isinstance(raw, list):
        return []
    causes = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        field, reason, message = item.get("field"), item.get("reason"), item.get("message")
        causes.append(
            StatusCause(
                message=message if isinstance(message, str) else "",
                field=field if isinstance(field, str) and field else None,
                reason=reason if isinstance(reason, str) and reason else None,
            )
        )
    return causes


def _retry_after(status: Mapping[str, Any]) -> int | None:
    details = status.get("details")
    value = details.get("retryAfterSeconds") if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def error_from_status(
    status_code: int,
    body: str | bytes | Mapping[str, Any] | None,
    kind: str | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> AIGatewayError:
    """Map an API server answer (HTTP status + Status body) to the typed error.

    `status_code` 0 means no HTTP response at all (connection refused, TLS failure, timeout).
    `body` is the raw response body (JSON text or a decoded dict); anything unparsable is kept
    as the message.
    """
    status, fallback = _status_dict(body)
    reason = status.get("reason") if isinstance(status.get("reason"), str) else None
    message = status.get("message")
    if not isinstance(message, str) or not message:
        message = fallback or (
            "no response from the API server" if status_code == 0 else f"HTTP {status_code}"
        )
    common: dict[str, Any] = {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "status_code": status_code,
        "reason": reason,
    }
    causes = _causes(status)

    if status_code == 404:
        return NotFoundError(message, **common)
    if status_code == 409:
        if reason == "AlreadyExists":
            return AlreadyExistsError(message, **common)
        return ConflictError(message, **common)
    if status_code in (400, 422):
        texts = [message, *(cause.message for cause in causes)]
        if any(marker in text for text in texts for marker in _PATCH_TEST_FAILURE_MARKERS):
            detail = "; ".join(cause.message for cause in causes) or message
            return ConflictError(f"the object changed since it was read ({detail})", **common)
        return InvalidError(message, causes=causes, **common)
    if status_code in (401, 403):
        return ForbiddenError(message, **common)
    if status_code == 0 or status_code == 429 or status_code >= 500:
        return UnavailableError(message, retry_after_seconds=_retry_after(status), **common)
    return AIGatewayError(message, **common)
