"""Housekeeping deletes what nothing can use any more."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from pixelshop.identity.v1 import identity_pb2_grpc

from services.identity.server import build
from services.identity.settings import IdentitySettings
from services.identity.tests.conftest import AdjustableClock
from services.identity.tests.support import log_in, sign_up


async def test_expired_sessions_tokens_and_throttle_buckets_are_swept(
    identity: identity_pb2_grpc.IdentityServiceStub,
    identity_settings: IdentitySettings,
    clock: AdjustableClock,
    admin_db: asyncpg.Connection,
) -> None:
    account = await sign_up(identity)
    with pytest.raises(Exception, match="invalid login"):
        await log_in(identity, account.username, "wrong password")
    user_id = uuid.UUID(account.user_id)

    components = build(identity_settings, clock=clock)
    housekeeping, database = components.housekeeping, components.database
    try:
        async with database.transaction() as session:
            await housekeeping.sweep(session)
        sessions = "SELECT count(*) FROM identity.sessions WHERE user_id = $1"
        tokens = "SELECT count(*) FROM identity.one_time_tokens WHERE user_id = $1"
        assert await admin_db.fetchval(sessions, user_id) == 1
        assert await admin_db.fetchval(tokens, user_id) == 1

        clock.advance(days=identity_settings.session_idle_days + 2)
        async with database.transaction() as session:
            swept = await housekeeping.sweep(session)
    finally:
        await components.close()
    assert await admin_db.fetchval(sessions, user_id) == 0
    assert await admin_db.fetchval(tokens, user_id) == 0
    assert swept["login_failures"] >= 1
    assert (
        await admin_db.fetchval(
            "SELECT count(*) FROM identity.refresh_tokens t"
            " LEFT JOIN identity.sessions s ON s.id = t.session_id WHERE s.id IS NULL"
        )
        == 0
    )
