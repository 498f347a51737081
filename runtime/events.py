"""Following identity's outbox: how cross-service effects of an account reach a service.

Identity appends events (`user.deleted`, `user.tier_changed`; ids and codes only, never
personal data) to its outbox in the same transaction as the change, taking no lock. Each
row's position is (xact_id, sequence): the writing transaction's id, then the row's order
within it. Identity's `ListEvents` hands out only rows of transactions older than every
transaction still running (`pg_snapshot_xmin`), so a writer that commits late can never
appear behind a position a follower has passed (ADR 0015).

Each consuming service runs one `OutboxFollower` per replica, but only the replica holding
a session-level advisory lock (`pg_try_advisory_lock`, one key per service and source)
follows; the others stand by and take over within a poll interval when the leader's
connection goes. The leader reads a page after its cursor (only the types it handles) and
runs each handler in a SAVEPOINT of one transaction that also advances the cursor, so a
batch's effects and its position commit together. The cursor only ever moves forward (a
conditional upsert). A failing event is retried with exponential back-off; after
`max_attempts` it is parked (`parked_events`, ids only; logged; counted in
`pixelshop_events_parked_total`) and the cursor moves past it, so later events flow. Each
round the leader sets the gauge `pixelshop_events_parked{source,type}` to the rows parked
now (the one to alert on: it survives restarts and agrees across replicas). Once the cause
is fixed, an operator replays them (`replay_parked`, each service's `replay-parked`
command, runtime/parked.py): each row is claimed with `FOR UPDATE SKIP LOCKED` and its
handler runs in a savepoint of a transaction that deletes the row when it succeeds.

Handlers take the batch's session and must be idempotent (delivery is at least once) and
make no remote call (they run inside a transaction): anything remote is recorded here and
done afterwards by `after_round` (e.g. purges driven by runtime.tombstones).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    cast,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import UserDefinedType

from runtime.clock import utc_now
from runtime.db import Database
from runtime.metrics import Metrics
from runtime.periodic import every

log = logging.getLogger("pixelshop.events")

USER_DELETED = "user.deleted"
USER_TIER_CHANGED = "user.tier_changed"
# The only types identity hands to other services.
CROSS_SERVICE_TYPES = (USER_DELETED, USER_TIER_CHANGED)
# `set_by` in a `user.tier_changed` payload (with `user_id`, `from`, `to`) when identity's
# `set-tier` command made the change; otherwise it names the service that asked (billing,
# relaying Stripe). Billing records an operator's change as a manual subscription: the
# outbox is the one way that change reaches it (ADR 0021).
TIER_SET_BY_OPERATOR = "operator"
# A follower whose rounds keep failing waits at most this long between them.
MAX_ROUND_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True, order=True)
class Position:
    """A place in the outbox: every event at or before it has been handled."""

    xact_id: int = 0
    sequence: int = 0


@dataclass(frozen=True)
class Event:
    position: Position
    id: uuid.UUID
    type: str
    user_id: uuid.UUID
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    # Where to ask after next time: past the events returned and any of other types.
    next: Position


class EventSource(Protocol):
    """Identity's ListEvents, as runtime.peers.identity.IdentityClient implements it."""

    async def events(self, after: Position, limit: int, types: Sequence[str]) -> EventPage: ...


# A handler runs inside the follower's batch transaction, on its session.
Handler = Callable[[AsyncSession, Event], Awaitable[object]]


class Xid8(UserDefinedType[int]):
    """Postgres' 64-bit transaction id (`pg_current_xact_id()`), read and written as int."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"

    # Through text both ways: no driver-specific codec needed.
    def bind_expression(self, bindvalue: Any) -> Any:
        return cast(cast(bindvalue, String), self)

    def column_expression(self, column: Any) -> Any:
        return cast(column, String)

    def bind_processor(self, dialect: Any) -> Any:
        return lambda value: None if value is None else str(int(value))

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        return lambda value: None if value is None else int(value)


# So that reflection (Alembic's drift check) knows the type instead of warning.
postgresql_base.ischema_names.setdefault("xid8", Xid8)


def event_cursor_table(metadata: MetaData) -> Table:
    """The cursor table every consuming service adds to its own schema."""
    return Table(
        "event_cursors",
        metadata,
        Column("source", Text, primary_key=True, comment="whose outbox, e.g. identity"),
        Column(
            "sequence",
            BigInteger,
            nullable=False,
            comment="with xact_id: the last position handled",
        ),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        Column(
            "xact_id",
            BigInteger,
            nullable=False,
            server_default=text("0"),
            comment="with sequence: the last position handled (the writing transaction)",
        ),
        comment="How far this service has followed another service's outbox.",
    )


def parked_event_table(metadata: MetaData) -> Table:
    """Events whose handler kept failing: kept here (ids only, no personal data) while
    later events flow; an operator replays or drops them."""
    return Table(
        "parked_events",
        metadata,
        Column("source", Text, primary_key=True, comment="whose outbox, e.g. identity"),
        Column("xact_id", BigInteger, primary_key=True, comment="the event's position"),
        Column("sequence", BigInteger, primary_key=True, comment="the event's position"),
        Column(
            "event_id",
            UUID(as_uuid=True),
            nullable=False,
            comment="the outbox event's id (its idempotency key)",
        ),
        Column("type", Text, nullable=False, comment="the event type, e.g. user.deleted"),
        Column(
            "user_id",
            UUID(as_uuid=True),
            nullable=True,
            comment="the user the event is about, when it is about one",
        ),
        Column(
            "payload",
            JSONB,
            nullable=False,
            server_default=text("'{}'::jsonb"),
            comment="the event's payload as the outbox held it (ids only)",
        ),
        Column("attempts", Integer, nullable=False, comment="how often the handler failed"),
        Column("last_error", Text, nullable=False, comment="the last failure's exception type"),
        Column(
            "parked_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=text("now()"),
            comment="when the handler gave up and the cursor moved past it",
        ),
        comment="Events this service's handler failed on repeatedly; the cursor moved past them.",
    )


class CursorStore:
    """The follower's position, in the consuming service's own schema."""

    def __init__(self, database: Database, table: Table, source: str = "identity") -> None:
        self._database = database
        self._table = table
        self.source = source

    async def load(self) -> Position:
        async with self._database.read() as session:
            row = (
                await session.execute(
                    select(self._table.c.xact_id, self._table.c.sequence).where(
                        self._table.c.source == self.source
                    )
                )
            ).first()
        return Position(int(row.xact_id), int(row.sequence)) if row else Position()

    async def advance(self, session: AsyncSession, position: Position) -> None:
        """Moves the cursor to `position` unless it is already there or further: two
        leaders for a moment, or a replayed batch, can never move it backwards."""
        table = self._table
        statement = insert(table).values(
            source=self.source,
            xact_id=position.xact_id,
            sequence=position.sequence,
            updated_at=utc_now(),
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.source],
                set_={
                    "xact_id": statement.excluded.xact_id,
                    "sequence": statement.excluded.sequence,
                    "updated_at": statement.excluded.updated_at,
                },
                where=tuple_(table.c.xact_id, table.c.sequence)
                < tuple_(statement.excluded.xact_id, statement.excluded.sequence),
            )
        )


PARKED_GAUGE = "events_parked"
PARKED_GAUGE_HELP = "Events parked now (rows in parked_events), per source and type"


@dataclass(frozen=True)
class ParkedEvent:
    """One row of `parked_events`: an event whose handler kept failing."""

    source: str
    position: Position
    event_id: uuid.UUID
    type: str
    user_id: uuid.UUID | None
    payload: dict[str, Any]
    attempts: int
    last_error: str
    parked_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> ParkedEvent:
        return cls(
            source=row.source,
            position=Position(int(row.xact_id), int(row.sequence)),
            event_id=row.event_id,
            type=row.type,
            user_id=row.user_id,
            payload=dict(row.payload or {}),
            attempts=int(row.attempts),
            last_error=row.last_error,
            parked_at=row.parked_at,
        )

    def event(self) -> Event:
        # A parked event has the user the outbox gave it (ListEvents hands out no other);
        # a row without one fails its handler again and stays parked.
        return Event(self.position, self.event_id, self.type, self.user_id, self.payload)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ReplayReport:
    """What `replay_parked` did: events handled (their rows deleted) and still failing
    (their rows kept, `attempts` counted up). `claimed` is False when an event id was
    asked for and no parked row with it could be claimed (none, or another replay has it)."""

    replayed: int = 0
    failing: int = 0
    claimed: bool = True


async def list_parked(
    database: Database, parked: Table, *, event_id: uuid.UUID | None = None
) -> list[ParkedEvent]:
    """Every parked event (or the one with `event_id`), oldest first."""
    statement = select(parked).order_by(parked.c.source, parked.c.xact_id, parked.c.sequence)
    if event_id is not None:
        statement = statement.where(parked.c.event_id == event_id)
    async with database.read() as session:
        return [ParkedEvent.from_row(row) for row in await session.execute(statement)]


async def parked_counts(database: Database, parked: Table) -> dict[tuple[str, str], int]:
    """Rows parked now per (source, type): one COUNT over a table that is almost always
    empty."""
    async with database.read() as session:
        rows = await session.execute(
            select(parked.c.source, parked.c.type, func.count()).group_by(
                parked.c.source, parked.c.type
            )
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}


async def replay_parked(
    database: Database,
    parked: Table,
    handlers: Mapping[str, Handler],
    *,
    source: str = "identity",
    event_id: uuid.UUID | None = None,
    after_round: Callable[[], Awaitable[object]] | None = None,
) -> ReplayReport:
    """Runs the handler of every parked event of `source` again (or only of `event_id`),
    oldest first, once its cause is fixed. Each row is claimed `FOR UPDATE SKIP LOCKED` in
    its own transaction (two operators, or an operator and a replica, never replay one event
    twice at once); the handler runs in a SAVEPOINT of that transaction as the follower runs
    it, and the row is deleted in the same transaction when it succeeds. When it fails, the
    row stays with `attempts` counted up, `last_error` (the exception's type: its message
    may hold personal data) and `parked_at` (when it last gave up) updated, and the next
    row is tried. A type with no handler is passed over, as the follower does, and its row
    deleted. After the replays, with no transaction open, `after_round` (the follower's:
    e.g. the purge a replayed `user.deleted` owes) runs if anything was replayed."""
    replayed = failing = 0
    after: Position | None = None
    claimed = False
    while True:
        async with database.transaction() as session:
            statement = (
                select(parked)
                .where(parked.c.source == source)
                .order_by(parked.c.xact_id, parked.c.sequence)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if event_id is not None:
                statement = statement.where(parked.c.event_id == event_id)
            if after is not None:
                statement = statement.where(
                    tuple_(parked.c.xact_id, parked.c.sequence)
                    > tuple_(after.xact_id, after.sequence)
                )
            row = (await session.execute(statement)).first()
            if row is None:
                break
            claimed = True
            event = ParkedEvent.from_row(row)
            after = event.position
            key = (
                (parked.c.source == source)
                & (parked.c.xact_id == event.position.xact_id)
                & (parked.c.sequence == event.position.sequence)
            )
            handler = handlers.get(event.type)
            failure: Exception | None = None
            try:
                if handler is not None:
                    async with session.begin_nested():
                        await handler(session, event.event())
            except Exception as error:
                failure = error
            if failure is None:
                await session.execute(delete(parked).where(key))
                replayed += 1
            else:
                await session.execute(
                    update(parked)
                    .where(key)
                    .values(
                        attempts=parked.c.attempts + 1,
                        last_error=type(failure).__name__,
                        parked_at=func.now(),
                    )
                )
                failing += 1
        if failure is None:
            log.info(
                "parked event replayed",
                extra={"type": event.type, "event_id": str(event.event_id)},
            )
        else:
            log.error(
                "parked event failed again; kept",
                extra={
                    "type": event.type,
                    "event_id": str(event.event_id),
                    "attempts": event.attempts + 1,
                    "error": type(failure).__name__,
                },
                exc_info=failure,
            )
        if event_id is not None:
            break
    if replayed and after_round is not None:
        await after_round()
    return ReplayReport(replayed, failing, claimed or event_id is None)


def lock_key(name: str) -> int:
    digest = hashlib.sha256(f"pixelshop.follower:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Leadership:
    """A session-level advisory lock held on a dedicated connection: one leader per name
    across all replicas. It is released when the connection closes, so a dead leader's
    lock goes with its connection and a standby takes over at its next attempt."""

    def __init__(self, database: Database, name: str) -> None:
        self._database = database
        self._key = lock_key(name)
        self._connection: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None

    @property
    def key(self) -> int:
        """The advisory-lock key (for operators: `pg_locks.objid` holds its low 32 bits)."""
        return self._key

    async def acquire(self) -> bool:
        """True while this replica leads: takes the lock if free, or checks it still has
        it (a lost connection means lost leadership)."""
        if self._connection is not None:
            try:
                await self._connection.scalar(select(1))
                return True
            except Exception:
                log.warning("follower lost its lock connection; standing down", exc_info=True)
                await self.release()
                return False
        # Autocommit: the lock connection never holds a transaction open.
        connection = await self._database.engine.connect()
        try:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            got = await connection.scalar(select(func.pg_try_advisory_lock(self._key)))
        except BaseException:
            await connection.close()
            raise
        if not got:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def release(self) -> None:
        """Unlocks and discards the connection: returned to the pool, it would keep the
        session-level lock for as long as it lives."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.scalar(select(func.pg_advisory_unlock(self._key)))
        except Exception:
            log.debug("unlocking the follower lock failed", exc_info=True)
        finally:
            try:
                await connection.invalidate()
                await connection.close()
            except Exception:
                log.debug("closing the lock connection failed", exc_info=True)


class OutboxFollower:
    def __init__(
        self,
        source: EventSource,
        database: Database,
        cursor: CursorStore,
        parked: Table,
        handlers: Mapping[str, Handler],
        *,
        name: str,
        after_round: Callable[[], Awaitable[object]] | None = None,
        metrics: Metrics | None = None,
        poll_seconds: float = 2.0,
        batch: int = 100,
        max_attempts: int = 5,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 30.0,
    ) -> None:
        """`name`: the consuming service (one leader per name and source). `after_round`
        runs after every round, leader only, with no transaction open: the place for remote
        work the handlers recorded (purges)."""
        self._source = source
        self._database = database
        self._cursor = cursor
        self._parked = parked
        self._handlers = dict(handlers)
        self._types = sorted(self._handlers)
        self._after_round = after_round
        self._metrics = metrics
        self._poll = poll_seconds
        self._batch = batch
        self._max_attempts = max_attempts
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._attempts: dict[Position, int] = {}
        self.leadership = Leadership(database, f"{name}:{cursor.source}")

    async def follow_once(self) -> int:
        """Handles (or parks) every event available now; answers how many were read."""
        total = 0
        position = await self._cursor.load()
        while True:
            page = await self._source.events(position, self._batch, self._types)
            await self._apply(page.events)
            if page.next > position:
                async with self._database.transaction() as session:
                    await self._cursor.advance(session, page.next)
                position = page.next
            total += len(page.events)
            if len(page.events) < self._batch:
                return total

    async def _apply(self, events: Sequence[Event]) -> None:
        index = 0
        while index < len(events):
            handled, failure = await self._apply_batch(events[index:])
            index += handled
            if failure is None:
                continue
            event = events[index]
            attempts = self._attempts.get(event.position, 0) + 1
            self._attempts[event.position] = attempts
            if attempts < self._max_attempts:
                delay = min(self._retry * 2 ** (attempts - 1), self._max_retry)
                log.warning(
                    "event handler failed; retrying",
                    extra={"type": event.type, "event_id": str(event.id), "attempt": attempts},
                    exc_info=failure,
                )
                await asyncio.sleep(delay)
                continue
            await self._park(event, attempts, failure)
            index += 1

    async def _apply_batch(self, events: Sequence[Event]) -> tuple[int, BaseException | None]:
        """Handles events in order in one transaction, each in a savepoint, up to the first
        failure; the cursor moves past the handled ones in the same transaction."""
        handled = 0
        failure: BaseException | None = None
        async with self._database.transaction() as session:
            for event in events:
                handler = self._handlers.get(event.type)
                if handler is not None:
                    try:
                        async with session.begin_nested():
                            await handler(session, event)
                    except Exception as error:
                        failure = error
                        break
                handled += 1
                self._attempts.pop(event.position, None)
            if handled:
                await self._cursor.advance(session, events[handled - 1].position)
        return handled, failure

    async def _park(self, event: Event, attempts: int, failure: BaseException) -> None:
        async with self._database.transaction() as session:
            await session.execute(
                insert(self._parked)
                .values(
                    source=self._cursor.source,
                    xact_id=event.position.xact_id,
                    sequence=event.position.sequence,
                    event_id=event.id,
                    type=event.type,
                    user_id=event.user_id,
                    payload=event.payload,
                    attempts=attempts,
                    last_error=type(failure).__name__,
                )
                .on_conflict_do_nothing()
            )
            await self._cursor.advance(session, event.position)
        self._attempts.pop(event.position, None)
        if self._metrics is not None:
            self._metrics.increment(
                "events_parked_total",
                "Events parked after their handler kept failing",
                source=self._cursor.source,
                type=event.type,
            )
        log.error(
            "event parked after repeated failures",
            extra={
                "type": event.type,
                "event_id": str(event.id),
                "attempts": attempts,
                "error": type(failure).__name__,
            },
        )

    @property
    def source_name(self) -> str:
        return self._cursor.source

    async def parked(self, event_id: uuid.UUID | None = None) -> list[ParkedEvent]:
        """What is parked in this service's `parked_events`, oldest first."""
        return await list_parked(self._database, self._parked, event_id=event_id)

    async def replay_parked(self, event_id: uuid.UUID | None = None) -> ReplayReport:
        """`replay_parked` with this follower's handlers and `after_round`."""
        return await replay_parked(
            self._database,
            self._parked,
            self._handlers,
            source=self._cursor.source,
            event_id=event_id,
            after_round=self._after_round,
        )

    async def refresh_parked_gauge(self) -> None:
        """Sets `pixelshop_events_parked{source,type}` to the rows parked now (0 for every
        type this follower handles and none is parked)."""
        if self._metrics is None:
            return
        counts = dict.fromkeys(((self._cursor.source, t) for t in self._types), 0)
        counts.update(await parked_counts(self._database, self._parked))
        self._metrics.clear_gauge(PARKED_GAUGE)
        for (source, event_type), count in sorted(counts.items()):
            self._metrics.set_gauge(
                PARKED_GAUGE, PARKED_GAUGE_HELP, count, source=source, type=event_type
            )

    async def round(self) -> bool:
        """One round: follows, refreshes the parked gauge and runs `after_round` if this
        replica leads; answers whether it did. A standby exports no parked gauge (the
        leader's is the current one)."""
        if not await self.leadership.acquire():
            if self._metrics is not None:
                self._metrics.clear_gauge(PARKED_GAUGE)
            return False
        await self.follow_once()
        await self.refresh_parked_gauge()
        if self._after_round is not None:
            await self._after_round()
        return True

    async def run(self) -> None:
        """Follows forever (or stands by); a failed round backs off (doubling, at most
        `MAX_ROUND_BACKOFF_SECONDS`) and retries from the cursor."""
        try:
            await every(
                self._poll,
                self.round,
                name="following the outbox",
                max_backoff=MAX_ROUND_BACKOFF_SECONDS,
            )
        finally:
            await self.leadership.release()
