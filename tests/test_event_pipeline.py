"""The event pipeline end to end on a real Postgres (ADR 0015): identity's outbox as
ListEvents reads it, followed by runtime.events.OutboxFollower into a consumer schema.

The source here is identity's own read path (`Outbox.page`, and `record_follower` as the
servicer does) without the gRPC hop, so writers' transactions can be held open at will;
services/identity/tests/test_internal.py covers the RPC itself.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Database, schema_metadata
from runtime.events import (
    USER_DELETED,
    USER_TIER_CHANGED,
    CursorStore,
    Event,
    EventPage,
    OutboxFollower,
    Position,
    event_cursor_table,
    parked_event_table,
)
from runtime.metrics import Metrics
from services.identity.models import SCHEMA as IDENTITY
from services.identity.models import outbox, outbox_followers
from services.identity.outbox import Outbox
from services.identity.repository import IdentityRepository, events_page


class OutboxSource:
    """What IdentityInternalApi.ListEvents does, minus gRPC."""

    def __init__(self, database: Database, follower: str) -> None:
        self._database = database
        self._follower = follower
        self._outbox = Outbox()

    async def events(self, after: Position, limit: int, types: Sequence[str]) -> EventPage:
        async with self._database.transaction() as session:
            await self._outbox.record_follower(session, self._follower, after)
        async with self._database.read() as session:
            rows, following = await self._outbox.page(session, after, limit, types)
        return EventPage(
            [
                Event(Position(r.xact_id, r.sequence), r.id, r.type, r.user_id, r.payload)
                for r in rows
                if r.user_id is not None
            ],
            following,
        )


class Consumer:
    """A consuming service's schema: cursor, parked events and what its handler did."""

    def __init__(self, database: Database, schema: str) -> None:
        self.database = database
        metadata = schema_metadata(schema)
        self.cursors = event_cursor_table(metadata)
        self.parked = parked_event_table(metadata)
        self.handled = sa.Table(
            "handled",
            metadata,
            sa.Column("event_id", UUID(as_uuid=True), primary_key=True),
            sa.Column("replica", sa.Text, nullable=False),
        )
        self.metadata = metadata
        self.schema = schema


@pytest.fixture
async def identity_db(migrated_db: str) -> AsyncIterator[Database]:
    database = Database.connect(migrated_db, IDENTITY, pool_size=30)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def consumer(migrated_db: str) -> AsyncIterator[Consumer]:
    schema = f"consumer_{uuid.uuid4().hex[:10]}"
    database = Database.connect(migrated_db, schema, pool_size=5)
    made = Consumer(database, schema)
    async with database.engine.begin() as connection:
        await connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        await connection.run_sync(made.metadata.create_all)
    try:
        yield made
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await database.close()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def append(
    session: AsyncSession, user_id: uuid.UUID, event_type: str = USER_TIER_CHANGED
) -> None:
    await IdentityRepository(session).append_event(
        event_type=event_type, user_id=user_id, payload={"user_id": str(user_id)}, now=now()
    )


async def committed_order(database: Database, users: set[uuid.UUID]) -> list[uuid.UUID]:
    async with database.read() as session:
        rows = await session.execute(
            sa.select(outbox.c.user_id)
            .where(outbox.c.user_id.in_(users))
            .order_by(outbox.c.xact_id, outbox.c.sequence)
        )
        return [row.user_id for row in rows]


def follower(
    source: OutboxSource,
    consumer: Consumer,
    seen: list[tuple[str, uuid.UUID]],
    *,
    replica: str = "a",
    database: Database | None = None,
    poison: uuid.UUID | None = None,
    metrics: Metrics | None = None,
) -> OutboxFollower:
    database = database or consumer.database

    async def handle(session: AsyncSession, event: Event) -> None:
        await session.execute(
            insert(consumer.handled)
            .values(event_id=event.id, replica=replica)
            .on_conflict_do_nothing()
        )
        if event.user_id == poison:
            raise RuntimeError("this event always fails")
        seen.append((replica, event.user_id))

    return OutboxFollower(
        source,
        database,
        CursorStore(database, consumer.cursors),
        consumer.parked,
        {USER_TIER_CHANGED: handle, USER_DELETED: handle},
        name=f"test-{consumer.schema}",
        metrics=metrics,
        poll_seconds=0.01,
        max_attempts=3,
        retry_seconds=0.001,
    )


async def test_a_late_commit_is_delivered_not_skipped(
    identity_db: Database, consumer: Consumer
) -> None:
    """The finding: with a sequence cursor and no lock, a reader passes an earlier
    sequence whose transaction has not committed yet, and never sees it."""
    early, late = uuid.uuid4(), uuid.uuid4()
    seen: list[tuple[str, uuid.UUID]] = []
    reader = follower(OutboxSource(identity_db, consumer.schema), consumer, seen)
    async with identity_db.transaction() as first:
        await append(first, early)  # lower sequence, commits last
        async with identity_db.transaction() as second:
            await append(second, late)
        await reader.follow_once()
        # A reader ordering by sequence alone sees `late` now and would pass `early`.
        async with identity_db.read() as session:
            naive = await session.scalars(
                sa.select(outbox.c.user_id)
                .where(outbox.c.user_id.in_([early, late]))
                .order_by(outbox.c.sequence)
            )
            assert list(naive) == [late]
        assert [user for _, user in seen if user in (early, late)] == []
    await reader.follow_once()
    assert [user for _, user in seen if user in (early, late)] == [early, late]


async def test_concurrent_writers_with_late_commits_are_followed_in_order_exactly_once(
    identity_db: Database, consumer: Consumer
) -> None:
    users = [uuid.uuid4() for _ in range(50)]
    seen: list[tuple[str, uuid.UUID]] = []
    reader = follower(OutboxSource(identity_db, consumer.schema), consumer, seen)
    rng = random.Random(7)
    delays = [0.6 if i % 10 == 3 else rng.uniform(0, 0.15) for i in range(len(users))]

    async def write(user: uuid.UUID, delay: float) -> None:
        async with identity_db.transaction() as session:
            await append(session, user)
            await asyncio.sleep(delay)  # commits late, after later writers

    writers = asyncio.gather(*(write(u, d) for u, d in zip(users, delays, strict=True)))
    while not writers.done():
        await reader.follow_once()
        await asyncio.sleep(0.005)
    await writers
    await reader.follow_once()

    expected = await committed_order(identity_db, set(users))
    delivered = [user for _, user in seen if user in set(users)]
    assert sorted(expected) == sorted(users)
    assert delivered == expected  # none skipped, none twice, in outbox order


async def test_two_replicas_handle_each_event_once_and_the_standby_takes_over(
    migrated_db: str, identity_db: Database, consumer: Consumer
) -> None:
    seen: list[tuple[str, uuid.UUID]] = []
    source = OutboxSource(identity_db, consumer.schema)
    second_db = Database.connect(migrated_db, consumer.schema, pool_size=5)
    replicas = {
        "a": follower(source, consumer, seen, replica="a"),
        "b": follower(source, consumer, seen, replica="b", database=second_db),
    }
    tasks = {name: asyncio.create_task(f.run()) for name, f in replicas.items()}
    try:
        users = [uuid.uuid4() for _ in range(30)]

        async def write(user: uuid.UUID) -> None:
            async with identity_db.transaction() as session:
                await append(session, user)

        await asyncio.gather(*(write(u) for u in users))
        await wait_for(lambda: {u for _, u in seen} >= set(users))
        leaders = {name for name, f in replicas.items() if f.leadership.held}
        assert len(leaders) == 1
        (leader,) = leaders
        mine = [(r, u) for r, u in seen if u in set(users)]
        assert len(mine) == len(users) == len({u for _, u in mine})
        assert {r for r, _ in mine} == {leader}

        # The leader dies: its lock goes with its connection, the standby follows on.
        tasks[leader].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[leader]
        later = [uuid.uuid4() for _ in range(10)]
        await asyncio.gather(*(write(u) for u in later))
        await wait_for(lambda: {u for _, u in seen} >= set(later))
        standby = ({"a", "b"} - {leader}).pop()
        after = [(r, u) for r, u in seen if u in set(later)]
        assert len(after) == len(later) == len({u for _, u in after})
        assert {r for r, _ in after} == {standby}
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        await second_db.close()


async def test_a_standby_takes_over_when_the_leaders_connection_dies(
    migrated_db: str, identity_db: Database, consumer: Consumer
) -> None:
    """As when the leader's pod is killed: Postgres ends its session and frees the lock."""
    seen: list[tuple[str, uuid.UUID]] = []
    source = OutboxSource(identity_db, consumer.schema)
    second_db = Database.connect(migrated_db, consumer.schema, pool_size=5)
    leader = follower(source, consumer, seen, replica="a")
    standby = follower(source, consumer, seen, replica="b", database=second_db)
    try:
        assert await leader.round()
        assert not await standby.round()
        async with consumer.database.read() as session:
            killed = await session.scalar(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
                    "AND objid = (CAST(:key AS bigint) & 4294967295)::oid"
                ),
                {"key": leader.leadership.key},
            )
        assert killed
        user = uuid.uuid4()
        async with identity_db.transaction() as session:
            await append(session, user)
        for _ in range(100):  # the standby gets the lock as soon as Postgres freed it
            if await standby.round():
                break
            await asyncio.sleep(0.02)
        assert standby.leadership.held
        assert not await leader.round()  # the old leader notices and stands down
        assert not leader.leadership.held
        assert [r for r, u in seen if u == user] == ["b"]
    finally:
        await leader.leadership.release()
        await standby.leadership.release()
        await second_db.close()


async def test_a_poisoned_event_is_parked_and_the_next_one_handled(
    identity_db: Database, consumer: Consumer
) -> None:
    before, poisoned, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for user in (before, poisoned, after):
        async with identity_db.transaction() as session:
            await append(session, user, USER_DELETED)
    seen: list[tuple[str, uuid.UUID]] = []
    metrics = Metrics("test")
    reader = follower(
        OutboxSource(identity_db, consumer.schema), consumer, seen, poison=poisoned, metrics=metrics
    )
    await reader.follow_once()

    delivered = [user for _, user in seen if user in (before, poisoned, after)]
    assert delivered == [before, after]
    async with consumer.database.read() as session:
        parked = (await session.execute(sa.select(consumer.parked))).all()
        handled = set(await session.scalars(sa.select(consumer.handled.c.event_id)))
    assert [(p.user_id, p.type, p.attempts, p.last_error) for p in parked] == [
        (poisoned, USER_DELETED, 3, "RuntimeError")
    ]
    assert parked[0].event_id not in handled  # its failed attempts were rolled back
    assert 'pixelshop_events_parked_total{source="identity",type="user.deleted"} 1' in (
        metrics.render()
    )
    # Nothing is retried again: the cursor is past it.
    await reader.follow_once()
    assert [user for _, user in seen if user == poisoned] == []


async def test_the_cursor_never_moves_backwards(consumer: Consumer) -> None:
    store = CursorStore(consumer.database, consumer.cursors)
    async with consumer.database.transaction() as session:
        await store.advance(session, Position(50, 7))
    for stale in (Position(49, 900), Position(50, 6), Position(0, 0)):
        async with consumer.database.transaction() as session:
            await store.advance(session, stale)
    assert await store.load() == Position(50, 7)

    # Two batches committing in the opposite order still end at the furthest one.
    async def advance_to(position: Position, hold: float) -> None:
        async with consumer.database.transaction() as session:
            await store.advance(session, position)
            await asyncio.sleep(hold)

    await asyncio.gather(advance_to(Position(60, 1), 0.1), advance_to(Position(55, 1), 0.0))
    assert await store.load() == Position(60, 1)


class _Rollback(Exception):
    pass


async def test_pruning_waits_for_the_slowest_follower_and_the_retention(
    identity_db: Database,
) -> None:
    clock_now = now()
    old, recent = clock_now - datetime.timedelta(days=10), clock_now - datetime.timedelta(days=1)
    outbox_rules = Outbox(retention=datetime.timedelta(days=7), clock=lambda: clock_now)
    with pytest.raises(_Rollback):  # noqa: PT012 -- one transaction, rolled back: isolated
        async with identity_db.transaction() as session:
            repository = IdentityRepository(session)
            await session.execute(sa.delete(outbox_followers))
            made = []
            for created in (old, old, old, recent):
                made.append(
                    await repository.append_event(
                        event_type=USER_DELETED, user_id=uuid.uuid4(), payload={}, now=created
                    )
                )
            ids = [event.id for event in made]
            position = [Position(e.xact_id, e.sequence) for e in made]

            # No follower has reported: nothing is pruned, however old.
            await outbox_rules.prune(session)
            assert await surviving(session, ids) == ids

            await repository.record_follower("fast", position[3], clock_now)
            await repository.record_follower("slow", position[1], clock_now)
            # Reporting an earlier position never moves a follower back.
            await repository.record_follower("fast", position[0], clock_now)
            await outbox_rules.prune(session)
            # Old and passed by both: gone. Old but not passed by "slow", or recent: kept.
            assert await surviving(session, ids) == ids[2:]

            await repository.record_follower("slow", position[3], clock_now)
            await outbox_rules.prune(session)
            assert await surviving(session, ids) == ids[3:]  # recent: kept for the retention
            raise _Rollback


async def surviving(session: AsyncSession, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    found = set(await session.scalars(sa.select(outbox.c.id).where(outbox.c.id.in_(ids))))
    return [i for i in ids if i in found]


def test_the_outbox_read_is_one_statement_below_the_snapshot_xmin() -> None:
    """The page and its end must come from one snapshot, and only below its xmin."""
    sql = str(events_page(Position(1, 2), 10, [USER_DELETED]).compile())
    assert sql.count("pg_snapshot_xmin(pg_current_snapshot())") == 2
    assert "UNION ALL" in sql


async def wait_for(condition: Callable[[], bool], attempts: int = 400) -> None:
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail("condition not reached")
