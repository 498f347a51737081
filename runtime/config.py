"""Settings every service shares; each service subclasses `ServiceSettings`."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from runtime.settings import Secret, shared

# The embedded Postgres `make run` starts (tools/pgcluster.py) listens here.
EMBEDDED_PG_HOST = "127.0.0.1"
EMBEDDED_PG_PORT = 55432
EMBEDDED_PG_DATABASE = "pixelshop"


def runtime_role(service: str) -> str:
    """The database role a service connects as at run time (DML on its own schema only)."""
    return f"pixelshop_{service}"


def owner_role(service: str) -> str:
    """The role that owns a service's schema; migrations run as it."""
    return f"pixelshop_{service}_owner"


def embedded_database_url(role: str) -> str:
    return (
        f"postgresql+asyncpg://{role}@{EMBEDDED_PG_HOST}:{EMBEDDED_PG_PORT}/{EMBEDDED_PG_DATABASE}"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """What every service reads: where it listens, its database, its peers, token rules."""

    service_name: ClassVar[str]

    host: str = "127.0.0.1"
    # Each service redeclares this with its own default (identity 50051 ... billing 50055).
    port: int = 0
    # The runtime role's URL; defaults to the embedded cluster of `make run`.
    database_url: Secret = Secret("")
    db_pool_size: int = 10
    identity_addr: str = shared("127.0.0.1:50051")
    projects_addr: str = shared("127.0.0.1:50052")
    assets_addr: str = shared("127.0.0.1:50053")
    presets_addr: str = shared("127.0.0.1:50054")
    billing_addr: str = shared("127.0.0.1:50055")
    jwt_issuer: str = shared("pixelshop")
    jwt_audience: str = shared("pixelshop")
    # Key of the service credential internal RPCs require (shared by all services).
    internal_secret: Secret = shared()
    # Prometheus text on this port (0 = off).
    metrics_port: int = 0
    # How often identity's outbox is polled for events (account deletions, tier changes).
    event_poll_seconds: float = shared(2.0)
    log_level: str = shared("INFO")
    log_json: bool = shared(True)
    shutdown_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.database_url:
            url = embedded_database_url(runtime_role(self.service_name))
            object.__setattr__(self, "database_url", Secret(url))
        if len(self.internal_secret.reveal()) < 32:
            raise ValueError("PIXELSHOP_INTERNAL_SECRET must be at least 32 characters")
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{self.env_prefix}{name.upper()} must be 0-65535")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"{self.service_name} log level {self.log_level!r} is not a level")

    @property
    def env_prefix(self) -> str:
        return f"PIXELSHOP_{self.service_name.upper()}_"
