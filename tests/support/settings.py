"""Settings for services under test: real Postgres roles, ports chosen by the OS."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.engine import make_url

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.config import ServiceSettings, runtime_role
from runtime.settings import Secret

INTERNAL_SECRET = "test-internal-secret-0123456789abcdef"

S = TypeVar("S", bound=ServiceSettings)


def runtime_url(admin_url: str, service: str) -> str:
    """The service's runtime role on the test database (trust auth, no password)."""
    url = make_url(admin_url).set(username=runtime_role(service), password=None)
    return url.render_as_string(hide_password=False)


def service_settings(cls: type[S], admin_url: str, **overrides: Any) -> S:
    values: dict[str, Any] = {
        "database_url": Secret(runtime_url(admin_url, cls.service_name)),
        "internal_secret": Secret(INTERNAL_SECRET),
        "port": 0,
        "log_json": False,
        "db_pool_size": 5,
    }
    values.update(overrides)
    return cls(**values)


def service_credential(caller: str) -> tuple[tuple[str, str], ...]:
    """The metadata `caller` sends to an internal RPC, made fresh at each call: a service
    token lives 5 minutes, less than the suite (one made at import expires before the
    last tests run)."""
    return ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, caller).token()),)
