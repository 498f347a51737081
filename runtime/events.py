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
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import insert

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


def event_cursor_table(metadata: MetaData) -> Table:
    """The cursor table every consuming service adds to its own schema."""
    return Table(
        "event_cursors",
        metadata,
        Column("source", Text, primary_key=True, comment="whose outbox, e.g. identity"),
        Column("sequence", BigInteger, nullable=False, comment="last event handled"),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        comment="How far this service has followed another service's outbox.",
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
