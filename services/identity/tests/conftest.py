"""One in-process identity server for the whole test session, on a real Postgres.

The server runs with cheap argon2 parameters, a temporary mailbox and an adjustable
clock (tests move it forward to expire tokens and windows instead of sleeping; it is
reset after every test). Tests isolate themselves by signing up their own users.
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest
from pixelshop.identity.v1 import identity_pb2_grpc

from runtime.server import RunningServer
from services.identity.server import start
from services.identity.settings import IdentitySettings
from tests.support.settings import service_settings

# Far below OWASP's minimum on purpose: a sign-up costs microseconds, not 50 ms.
CHEAP_ARGON2 = {"argon2_memory_kib": 64, "argon2_time_cost": 1, "argon2_parallelism": 1}


class AdjustableClock:
    """Real time plus an offset that tests move forward; or, frozen, one fixed instant
    (so that a test about a 5-second window does not depend on how fast the machine is)."""

    def __init__(self) -> None:
        self.offset = datetime.timedelta(0)
        self.frozen_at: datetime.datetime | None = None

    def __call__(self) -> datetime.datetime:
        base = self.frozen_at or datetime.datetime.now(datetime.UTC)
        return base + self.offset

    def freeze(self) -> None:
        self.frozen_at = datetime.datetime.now(datetime.UTC)

    def advance(self, **delta: float) -> None:
        self.offset += datetime.timedelta(**delta)

    def reset(self) -> None:
        self.offset = datetime.timedelta(0)
        self.frozen_at = None


def identity_settings_for(
    admin_url: str, mailbox: pathlib.Path, **overrides: Any
) -> IdentitySettings:
    values: dict[str, Any] = {
        **CHEAP_ARGON2,
        "mailbox_dir": str(mailbox),
        # Generous limits: only the throttling tests (with their own server) hit them.
        "login_account_max_failures": 50,
        "login_ip_max_failures": 10_000,
        "maintenance_interval_seconds": 3600.0,
        # Requests wake the worker at once; this only matters for rows written elsewhere.
        "mail_poll_seconds": 0.05,
    }
    values.update(overrides)
    return service_settings(IdentitySettings, admin_url, **values)


@asynccontextmanager
async def identity_with(
    settings: IdentitySettings, clock: AdjustableClock
) -> AsyncIterator[identity_pb2_grpc.IdentityServiceStub]:
    """A second identity server with settings of its own (e.g. stricter limits) on the
    same database, and a stub for it."""
    running = await start(settings, port=0, clock=clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield identity_pb2_grpc.IdentityServiceStub(channel)
    finally:
        await running.stop(0)


@pytest.fixture(scope="session")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("mailbox")


@pytest.fixture(scope="session")
def identity_settings(migrated_db: str, mailbox: pathlib.Path) -> IdentitySettings:
    return identity_settings_for(migrated_db, mailbox)


@pytest.fixture(scope="session")
def clock() -> AdjustableClock:
    return AdjustableClock()


@pytest.fixture(autouse=True)
def _reset_clock(clock: AdjustableClock) -> Iterator[None]:
    yield
    clock.reset()


@pytest.fixture(scope="session")
async def identity_server(
    identity_settings: IdentitySettings, clock: AdjustableClock
) -> AsyncIterator[RunningServer]:
    running = await start(identity_settings, port=0, clock=clock)
    yield running
    await running.stop(0)


@pytest.fixture(scope="session")
async def channel(identity_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{identity_server.port}") as opened:
        yield opened


@pytest.fixture(scope="session")
def identity(channel: grpc.aio.Channel) -> identity_pb2_grpc.IdentityServiceStub:
    return identity_pb2_grpc.IdentityServiceStub(channel)


@pytest.fixture(scope="session")
def internal(channel: grpc.aio.Channel) -> identity_pb2_grpc.IdentityInternalServiceStub:
    return identity_pb2_grpc.IdentityInternalServiceStub(channel)


@pytest.fixture(scope="session")
async def admin_db(migrated_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The admin connection, for looking behind the API (never used by the service)."""
    connection = await asyncpg.connect(migrated_db)
    yield connection
    await connection.close()
