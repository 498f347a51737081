"""runtime.tombstones on a real Postgres: a write either commits before the tombstone
(and the purge sees it) or is refused; replicas learn of a deletion on their next refresh;
purges are retried until they succeed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import sqlalchemy as sa
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc
from sqlalchemy.dialects.postgresql import UUID

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.db import Database, schema_metadata
from runtime.errors import Unauthenticated
from runtime.interceptors import AuthPolicy
from runtime.peers.identity import IdentityClient
from runtime.server import Registration, jwks_verifier, start_server
from runtime.settings import Secret
from runtime.tests.test_server_and_auth import INTERNAL, PUBLIC, DemoPublic, DemoSettings
from runtime.tombstones import Tombstones, tombstone_table
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import INTERNAL_SECRET


class Schema:
    def __init__(self, name: str) -> None:
        self.name = name
        self.metadata = schema_metadata(name)
        self.tombstones = tombstone_table(self.metadata)
        self.things = sa.Table(
            "things",
            self.metadata,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("user_id", UUID(as_uuid=True), nullable=False),
        )


@pytest.fixture
async def schema(migrated_db: str) -> AsyncIterator[tuple[Database, Schema]]:
    made = Schema(f"tombstones_{uuid.uuid4().hex[:10]}")
    database = Database.connect(migrated_db, made.name, pool_size=5)
    async with database.engine.begin() as connection:
        await connection.execute(sa.text(f'CREATE SCHEMA "{made.name}"'))
        await connection.run_sync(made.metadata.create_all)
    try:
        yield database, made
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(sa.text(f'DROP SCHEMA "{made.name}" CASCADE'))
        await database.close()


async def guarded_write(
    database: Database, tombstones: Tombstones, schema: Schema, user_id: uuid.UUID
) -> None:
    async with database.transaction() as session:
        await tombstones.guard_write(session, user_id)
        await session.execute(sa.insert(schema.things).values(user_id=user_id))


async def waiting_for_advisory_lock(database: Database) -> bool:
    async with database.read() as session:
        return bool(
            await session.scalar(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
        )


async def test_a_write_in_flight_commits_before_the_tombstone_and_a_later_one_is_refused(
    schema: tuple[Database, Schema],
) -> None:
    database, tables = schema
    tombstones = Tombstones(database, tables.tombstones)
    user = uuid.uuid4()
    release_writer = asyncio.Event()

    async def slow_writer() -> None:
        async with database.transaction() as session:
            await tombstones.guard_write(session, user)
            await session.execute(sa.insert(tables.things).values(user_id=user))
            await release_writer.wait()

    async def record() -> None:
        async with database.transaction() as session:
            await tombstones.record(session, user)

    writer = asyncio.create_task(slow_writer())
    await until(lambda: database_has_shared_lock(database))
    recorder = asyncio.create_task(record())
    await until(lambda: waiting_for_advisory_lock(database))  # the recorder waits for the writer
    assert not recorder.done()
    release_writer.set()
    await writer
    await recorder

    # The purge runs after the tombstone committed: it sees the in-flight write.
    async with database.read() as session:
        rows = await session.scalar(
            sa.select(sa.func.count())
            .select_from(tables.things)
            .where(tables.things.c.user_id == user)
        )
    assert rows == 1
    with pytest.raises(Unauthenticated, match="this account has been deleted"):
        await guarded_write(database, tombstones, tables, user)
    async with database.read() as session:
        rows = await session.scalar(
            sa.select(sa.func.count())
            .select_from(tables.things)
            .where(tables.things.c.user_id == user)
        )
    assert rows == 1  # the refused write left nothing

    # Another user's writes never wait on this one's lock.
    await guarded_write(database, tombstones, tables, uuid.uuid4())


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(1000):
        if await condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("condition not reached")


async def database_has_shared_lock(database: Database) -> bool:
    async with database.read() as session:
        return bool(
            await session.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND mode = 'ShareLock' AND granted"
                )
            )
        )


async def test_is_recorded_is_ordered_against_the_recording_like_guard_write(
    schema: tuple[Database, Schema],
) -> None:
    """`is_recorded` answers instead of refusing, with guard_write's ordering: a
    transaction that asked first keeps the lock to its end (the recording waits for it),
    and one that asks while a recording is in flight waits for it and sees it."""
    database, tables = schema
    tombstones = Tombstones(database, tables.tombstones)
    user = uuid.uuid4()
    asked, finish = asyncio.Event(), asyncio.Event()

    async def asking_writer() -> bool:
        async with database.transaction() as session:
            recorded = await tombstones.is_recorded(session, user)
            await session.execute(sa.insert(tables.things).values(user_id=user))
            asked.set()
            await finish.wait()
        return recorded

    async def record(user_id: uuid.UUID, hold: asyncio.Event | None = None) -> None:
        async with database.transaction() as session:
            await tombstones.record(session, user_id)
            if hold is not None:
                await hold.wait()

    writer = asyncio.create_task(asking_writer())
    await reached(asked, writer)
    recorder = asyncio.create_task(record(user))
    await until(lambda: waiting_for_advisory_lock(database))
    assert not recorder.done()  # the lock is held to the end of the asking transaction
    finish.set()
    assert await writer is False
    await recorder
    async with database.transaction() as session:
        assert await tombstones.is_recorded(session, user) is True
        assert await tombstones.is_recorded(session, uuid.uuid4()) is False

    other, hold = uuid.uuid4(), asyncio.Event()
    in_flight = asyncio.create_task(record(other, hold))
    await until(lambda: database_has_exclusive_lock(database))

    async def ask() -> bool:
        async with database.transaction() as session:
            return await tombstones.is_recorded(session, other)

    asking = asyncio.create_task(ask())
    await until(lambda: waiting_for_advisory_lock(database))
    assert not asking.done()
    hold.set()
    await in_flight
    assert await asking is True


async def reached(event: asyncio.Event, task: asyncio.Task[object]) -> None:
    """Waits for `event`; if `task` ends first, its exception (or a failure) is raised."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        task.result()
        pytest.fail("the task ended before it got there")


async def database_has_exclusive_lock(database: Database) -> bool:
    async with database.read() as session:
        return bool(
            await session.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND mode = 'ExclusiveLock' AND granted"
                )
            )
        )


async def test_every_replica_refuses_the_user_after_its_refresh(
    schema: tuple[Database, Schema],
) -> None:
    database, tables = schema
    recording, other_replica = (
        Tombstones(database, tables.tombstones),
        Tombstones(database, tables.tombstones),
    )
    user, someone_else = uuid.uuid4(), uuid.uuid4()
    async with database.transaction() as session:
        await recording.record(session, user)
    assert recording.is_deleted(user)
    assert not other_replica.is_deleted(user)
    await other_replica.load()
    assert other_replica.is_deleted(user)
    assert not other_replica.is_deleted(someone_else)


async def test_purges_run_after_the_tombstone_and_are_retried_until_done(
    schema: tuple[Database, Schema],
) -> None:
    database, tables = schema
    tombstones = Tombstones(database, tables.tombstones, purge_retry_seconds=0.0)
    user = uuid.uuid4()
    await guarded_write(database, tombstones, tables, user)
    async with database.transaction() as session:
        await tombstones.record(session, user)
    calls: list[uuid.UUID] = []

    async def failing(user_id: uuid.UUID) -> None:
        calls.append(user_id)
        raise OSError("object store down")

    async def purge(user_id: uuid.UUID) -> None:
        calls.append(user_id)
        async with database.transaction() as session:
            await session.execute(
                sa.delete(tables.things).where(tables.things.c.user_id == user_id)
            )

    assert await tombstones.purge_pending(failing) == 0
    assert await tombstones.pending_purges() == [user]  # still owed
    backing_off = Tombstones(database, tables.tombstones, purge_retry_seconds=3600.0)
    assert await backing_off.purge_pending(failing) == 0
    assert await backing_off.purge_pending(purge) == 0  # not before its back-off is over
    assert calls == [user, user]
    assert await tombstones.purge_pending(purge) == 1
    assert await tombstones.pending_purges() == []
    assert await tombstones.purge_pending(purge) == 0  # done once, not again
    assert calls == [user, user, user]
    async with database.read() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(tables.things)) == 0
        purged_at = await session.scalar(sa.select(tables.tombstones.c.purged_at))
    assert purged_at is not None


async def test_the_interceptor_refuses_a_deleted_users_valid_token_on_every_user_method() -> None:
    deleted: set[uuid.UUID] = set()
    fake = await FakeIdentity().start()
    settings = DemoSettings(internal_secret=Secret(INTERNAL_SECRET), port=0, log_json=False)
    peer = PeerChannel(fake.address, ServiceTokens(INTERNAL_SECRET, "demo"))
    identity = IdentityClient(peer)
    running = await start_server(
        settings,
        [
            Registration(
                PUBLIC, DemoPublic(), identity_pb2_grpc.add_IdentityServiceServicer_to_server
            )
        ],
        AuthPolicy(
            user_services=frozenset({PUBLIC}),
            internal_services=frozenset({INTERNAL}),
            anonymous_methods=frozenset({f"/{PUBLIC}/ListTiers"}),
            refused_user=deleted.__contains__,
        ),
        jwks_verifier(settings, identity.jwks),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            user_id, token = fake.new_user()
            auth = (("authorization", f"Bearer {token}"),)
            await stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=auth)
            deleted.add(user_id)
            for call in (
                stub.GetCurrentUser(identity_pb2.GetCurrentUserRequest(), metadata=auth),
                stub.UpdateCurrentUser(identity_pb2.UpdateCurrentUserRequest(), metadata=auth),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert refused.value.details() == "this account has been deleted"
            # Anonymous methods and other users are untouched.
            await stub.ListTiers(identity_pb2.ListTiersRequest(), metadata=auth)
            _, other = fake.new_user()
            await stub.GetCurrentUser(
                identity_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", f"Bearer {other}"),),
            )
    finally:
        await running.stop(0)
        await peer.close()
        await fake.stop()
