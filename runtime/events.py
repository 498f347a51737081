"""Following identity's outbox: how cross-service effects of an account reach a service.

Identity appends events (`user.deleted`, `user.tier_changed`) to its outbox in the same
transaction as the change. Each consuming service runs an `OutboxFollower`: it reads
events after its own cursor through identity's internal `ListEvents`, hands each one to
a handler, and only then moves the cursor, which it keeps in its own schema (table
`event_cursors`). Delivery is at least once, so handlers must be idempotent (purges are).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, Table, Text, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.types import UserDefinedType

from runtime.db import Database
from runtime.peers.identity import IdentityClient

log = logging.getLogger("pixelshop.events")

USER_DELETED = "user.deleted"
USER_TIER_CHANGED = "user.tier_changed"


@dataclass(frozen=True)
class Event:
    sequence: int
    type: str
    user_id: uuid.UUID
    payload: dict[str, Any]


Handler = Callable[[Event], Awaitable[object]]


class Xid8(UserDefinedType[int]):
    """Postgres' 64-bit transaction id (`pg_current_xact_id()`), read and written as int."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


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
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("type", Text, nullable=False),
        Column("user_id", UUID(as_uuid=True), nullable=True),
        Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("attempts", Integer, nullable=False, comment="how often the handler failed"),
        Column("last_error", Text, nullable=False, comment="the last failure's exception type"),
        Column("parked_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        comment="Events this service's handler failed on repeatedly; the cursor moved past them.",
    )


class CursorStore:
    """The follower's position, in the consuming service's own schema."""

    def __init__(self, database: Database, table: Table, source: str = "identity") -> None:
        self._database = database
        self._table = table
        self._source = source

    async def load(self) -> int:
        async with self._database.transaction() as session:
            value = await session.scalar(
                select(self._table.c.sequence).where(self._table.c.source == self._source)
            )
        return int(value or 0)

    async def save(self, sequence: int) -> None:
        statement = insert(self._table).values(
            source=self._source, sequence=sequence, updated_at=datetime.now(UTC)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[self._table.c.source],
            set_={
                "sequence": statement.excluded.sequence,
                "updated_at": statement.excluded.updated_at,
            },
        )
        async with self._database.transaction() as session:
            await session.execute(statement)


class OutboxFollower:
    def __init__(
        self,
        identity: IdentityClient,
        cursor: CursorStore,
        handlers: Mapping[str, Handler],
        *,
        poll_seconds: float = 2.0,
        batch: int = 100,
    ) -> None:
        self._identity = identity
        self._cursor = cursor
        self._handlers = dict(handlers)
        self._poll = poll_seconds
        self._batch = batch

    async def follow_once(self) -> int:
        """Handles every event available now; answers how many were read."""
        total = 0
        position = await self._cursor.load()
        while True:
            events = await self._identity.events(position, self._batch)
            for raw in events:
                handler = self._handlers.get(raw.type)
                if handler is not None:
                    await handler(
                        Event(
                            sequence=raw.sequence,
                            type=raw.type,
                            user_id=uuid.UUID(raw.user_id),
                            payload=json_format.MessageToDict(raw.payload),
                        )
                    )
                position = raw.sequence
                await self._cursor.save(position)
            total += len(events)
            if len(events) < self._batch:
                return total

    async def run(self) -> None:
        """Follows forever; failures back off and retry from the saved cursor."""
        delay = self._poll
        while True:
            try:
                await self.follow_once()
                delay = self._poll
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("following identity's outbox failed; retrying", exc_info=True)
                delay = min(delay * 2, 60.0)
            await asyncio.sleep(delay)
