"""The presets service on a real Postgres, in-process on port 0, with a fake identity.

Tests share one server and database for the session; each makes its own users (and, where
it lists, its own search word), so they never see each other's presets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from runtime.db import async_url
from runtime.server import RunningServer
from services.presets.server import start
from services.presets.settings import PresetsSettings
from services.presets.tests.helpers import PresetsClient
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import service_settings


@pytest.fixture(scope="session")
async def fake_identity() -> AsyncIterator[FakeIdentity]:
    fake = await FakeIdentity().start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
async def presets_server(
    migrated_db: str, fake_identity: FakeIdentity
) -> AsyncIterator[RunningServer]:
    settings = service_settings(
        PresetsSettings,
        migrated_db,
        identity_addr=fake_identity.address,
        # Tests change users' tiers and expect the change at once.
        tier_cache_seconds=0.0,
        # Account deletions (identity's outbox) should arrive within a test's patience.
        event_poll_seconds=0.05,
    )
    running = await start(settings)
    yield running
    await running.stop(0)


@pytest.fixture(scope="session")
async def channel(presets_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{presets_server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def presets(channel: grpc.aio.Channel, fake_identity: FakeIdentity) -> PresetsClient:
    return PresetsClient(channel, fake_identity)


@pytest.fixture(scope="session")
async def admin_engine(migrated_db: str) -> AsyncIterator[AsyncEngine]:
    """The admin role, for what tests check or seed behind the service's back."""
    engine = create_async_engine(async_url(migrated_db), poolclass=NullPool)
    yield engine
    await engine.dispose()
