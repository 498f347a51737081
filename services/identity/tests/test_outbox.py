"""The outbox through the real ListEvents RPC, followed by runtime.events.OutboxFollower:
50 accounts signed up and moved to another tier at once, while the follower reads, arrive
once each and in outbox order; and the follower's position is what pruning waits for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.db import Database
from runtime.events import USER_TIER_CHANGED, CursorStore, Event, OutboxFollower
from runtime.peers.identity import IdentityClient
from runtime.server import RunningServer
from services.identity.tests.support import sign_up
from tests.support.settings import INTERNAL_SECRET, service_credential
from tests.test_event_pipeline import Consumer


@pytest.fixture
async def consumer(migrated_db: str) -> AsyncIterator[Consumer]:
    schema = f"follower_{uuid.uuid4().hex[:10]}"
    database = Database.connect(migrated_db, schema, pool_size=5)
    made = Consumer(database, schema)
    async with database.engine.begin() as connection:
        await connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        await connection.run_sync(made.metadata.create_all)
    try:
        yield made
    finally:
        async with database.engine.begin() as connection:
            await connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await database.close()


async def test_fifty_concurrent_tier_changes_reach_a_follower_once_each_in_outbox_order(
    identity: identity_pb2_grpc.IdentityServiceStub,
    internal: identity_pb2_grpc.IdentityInternalServiceStub,
    identity_server: RunningServer,
    consumer: Consumer,
    admin_db: asyncpg.Connection,
) -> None:
    follower_name = f"follower-{uuid.uuid4().hex[:8]}"
    peer = PeerChannel(
        f"127.0.0.1:{identity_server.port}", ServiceTokens(INTERNAL_SECRET, follower_name)
    )
    seen: list[uuid.UUID] = []

    async def handle(session: object, event: Event) -> None:
        seen.append(event.user_id)

    follower = OutboxFollower(
        IdentityClient(peer),
        consumer.database,
        CursorStore(consumer.database, consumer.cursors),
        consumer.parked,
        {USER_TIER_CHANGED: handle},
        name=follower_name,
        batch=7,  # many pages while the writers run
    )
    try:
        accounts = await asyncio.gather(*(sign_up(identity) for _ in range(50)))
        users = {uuid.UUID(a.user_id) for a in accounts}

        async def upgrade(user_id: str) -> None:
            await internal.SetUserTier(
                identity_pb2.SetUserTierRequest(user_id=user_id, tier_code="pro"),
                metadata=service_credential("billing"),
            )

        writers = asyncio.gather(*(upgrade(a.user_id) for a in accounts))
        while not writers.done():
            await follower.follow_once()
        await writers
        await follower.follow_once()

        expected = [
            row["user_id"]
            for row in await admin_db.fetch(
                "SELECT user_id FROM identity.outbox WHERE type = 'user.tier_changed' "
                "AND user_id = ANY($1::uuid[]) ORDER BY xact_id, sequence",
                list(users),
            )
        ]
        delivered = [user for user in seen if user in users]
        assert sorted(expected) == sorted(users)
        assert delivered == expected  # none skipped, none twice, in outbox order

        # Identity knows how far this follower got: pruning waits for it.
        cursor = await CursorStore(consumer.database, consumer.cursors).load()
        await follower.follow_once()  # reports the position it reached
        recorded = await admin_db.fetchrow(
            "SELECT xact_id::text::bigint AS xact_id, sequence FROM identity.outbox_followers "
            "WHERE follower = $1",
            follower_name,
        )
        assert (recorded["xact_id"], recorded["sequence"]) >= (cursor.xact_id, cursor.sequence)
    finally:
        await follower.leadership.release()
        await admin_db.execute(
            "DELETE FROM identity.outbox_followers WHERE follower = $1", follower_name
        )
        await peer.close()
