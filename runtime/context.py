"""Per-call context: the request id and the authenticated caller, as context variables.

The interceptor sets them before a handler runs; logs, outgoing calls and the API
modules read them. Nothing else is global.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass

from runtime.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Principal:
    """A user acting through an access token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    tier: str
    token_id: str
    expires_at: int


@dataclass(frozen=True)
class ServiceCaller:
    """Another Pixelshop service, authenticated by its service credential."""

    name: str


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)
service_caller_var: contextvars.ContextVar[ServiceCaller | None] = contextvars.ContextVar(
    "service_caller", default=None
)
client_var: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "client", default=("", "")
)


def current_request_id() -> str:
    return request_id_var.get()


def current_principal() -> Principal:
    """The authenticated user of this call; UNAUTHENTICATED when there is none."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("a valid access token is required")
    return principal


def current_service_caller() -> ServiceCaller:
    caller = service_caller_var.get()
    if caller is None:
        raise PermissionDenied("this method is for Pixelshop services only")
    return caller


def current_client() -> tuple[str, str]:
    """(client address, user agent) of the end user, as the gateway forwarded them."""
    return client_var.get()
