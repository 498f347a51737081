"""Tombstones: every service remembers which users were deleted, refuses them, and purges.

When a service follows `user.deleted` (runtime/events.py), its handler records a tombstone
(`deleted_users`, in the service's own schema) in the follower's batch transaction; once
that has committed, the service's purge removes what the user had written. From then on:
- every RPC carrying the user's still-valid access token is refused (`is_deleted`, an
  in-memory set every replica refreshes each `refresh_seconds`, checked by the server
  interceptor through `AuthPolicy.refused_user`);
- every write that makes user data visible calls `guard_write` inside its transaction
  (or `is_recorded`, when a deleted user's write must do something else than fail:
  billing's webhook cancels the subscription of an account deleted first).

Why `guard_write` leaves nothing orphaned: `record` takes the user's advisory lock
EXCLUSIVELY, `guard_write` takes the same lock SHARED and then (in a later statement, so
with a snapshot taken after the lock was granted) looks for the tombstone. Both are
transaction-scoped, so a writer holds its shared lock until it commits. A write therefore
either commits before `record` obtains the lock, and the purge (which starts after the
tombstone commits) sees and removes it, or it asks for the lock after `record` and sees
the tombstone, and is refused. Writers of different users never wait on each other, and
writers of one user only on the (short) recording transaction.

The purge is a workflow step (ADR 0011): it may call the object store or billing, so it
runs outside any transaction, driven by `purge_pending`; `purged_at` is its recovery
point: a tombstone not yet purged is purged again on the next round, so purges must be
idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import Column, DateTime, MetaData, Select, Table, func, select, text, update
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import utc_now
from runtime.db import Database
from runtime.errors import Unauthenticated
from runtime.events import USER_DELETED, CursorStore, Event, EventSource, OutboxFollower
from runtime.metrics import Metrics
from runtime.periodic import every

log = logging.getLogger("pixelshop.tombstones")

DELETED_MESSAGE = "this account has been deleted"
MAX_PURGE_RETRY_SECONDS = 300.0


def tombstone_table(metadata: MetaData) -> Table:
    """The tombstone table every service following `user.deleted` adds to its own schema."""
    return Table(
        "deleted_users",
        metadata,
        Column("user_id", UUID(as_uuid=True), primary_key=True, comment="the deleted account"),
        Column(
            "deleted_at",
            DateTime(timezone=True),
            nullable=False,
            server_default=text("now()"),
            comment="when this service recorded the deletion (and began refusing the user)",
        ),
        Column(
            "purged_at",
            DateTime(timezone=True),
            nullable=True,
            comment="when the purge of the user's data finished; NULL while it is owed",
        ),
        comment="Accounts deleted in identity: refused from recording on, their data purged.",
    )


def user_lock_key(user_id: uuid.UUID) -> int:
    """The advisory-lock key of one user: 64 bits of a namespaced digest (a collision only
    makes two users' writers share a lock)."""
    digest = hashlib.sha256(b"pixelshop.deleted_users:" + user_id.bytes).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RecentlyDeleted:
    """An in-memory set of recently deleted users, refreshed every `refresh_seconds` from
    `query(since)` (a SELECT of user ids deleted after `since`). The server interceptor
    asks `is_deleted` on every call (`AuthPolicy.refused_user`); identity builds one over
    `users.deleted_at`, every other service gets one from its `Tombstones`.

    `remember_seconds` only has to outlast an access token (15 minutes): a token issued
    before the deletion has expired by then, and identity issues none after it."""

    def __init__(
        self,
        database: Database,
        query: Callable[[datetime], Select[tuple[uuid.UUID]]],
        *,
        refresh_seconds: float = 1.0,
        remember_seconds: float = 86_400.0,
    ) -> None:
        self._database = database
        self._query = query
        self._refresh = refresh_seconds
        self._remember = timedelta(seconds=remember_seconds)
        self._deleted: frozenset[uuid.UUID] = frozenset()
        self._added: set[uuid.UUID] = set()

    def is_deleted(self, user_id: uuid.UUID) -> bool:
        return user_id in self._deleted or user_id in self._added

    def add(self, user_id: uuid.UUID) -> None:
        """Refuses the user in this replica at once (the next refresh confirms it)."""
        self._added.add(user_id)

    async def load(self) -> None:
        since = utc_now() - self._remember
        async with self._database.read() as session:
            self._deleted = frozenset(await session.scalars(self._query(since)))
        self._added -= self._deleted

    async def run(self) -> None:
        """The refresh loop; a failed refresh keeps the last set and is retried."""
        await every(self._refresh, self.load, name="refreshing deleted users")


class MalformedEvent(ValueError):
    """An event without what its type must carry (its handler fails; the event is parked)."""


class Tombstones:
    def __init__(
        self,
        database: Database,
        table: Table,
        *,
        refresh_seconds: float = 1.0,
        remember_seconds: float = 86_400.0,
        purge_retry_seconds: float = 1.0,
    ) -> None:
        self._database = database
        self._table = table
        self._purge_retry = purge_retry_seconds
        self._purge_failures: dict[uuid.UUID, tuple[int, float]] = {}
        self._recent = RecentlyDeleted(
            database,
            lambda since: select(table.c.user_id).where(table.c.deleted_at > since),
            refresh_seconds=refresh_seconds,
            remember_seconds=remember_seconds,
        )

    @property
    def table(self) -> Table:
        return self._table

    async def record(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Records the deletion; waits for the user's in-flight guarded writes to commit."""
        await session.execute(select(func.pg_advisory_xact_lock(user_lock_key(user_id))))
        await session.execute(insert(self._table).values(user_id=user_id).on_conflict_do_nothing())
        self._recent.add(user_id)

    async def on_user_deleted(self, session: AsyncSession, event: Event) -> None:
        """The `user.deleted` handler for runtime.events.OutboxFollower: records the
        tombstone in the follower's batch transaction; `purge_pending` (the follower's
        `after_round`) purges once it has committed."""
        if event.user_id is None:  # a malformed event: parked, never a tombstone of nobody
            raise MalformedEvent(f"user.deleted event {event.id} names no user")
        await self.record(session, event.user_id)

    async def is_recorded(self, session: AsyncSession, user_id: uuid.UUID) -> bool:
        """Whether the user's tombstone is recorded, ordered against `record`: takes the
        user's lock SHARED in the caller's transaction (held until it ends), then looks.

        False means the caller's writes in this transaction commit before any tombstone
        of the user is recorded, so the purge that follows it sees them; True means the
        tombstone committed first (a `record` in flight is waited for). Call it inside
        `database.transaction()`, never in an autocommit `read()`: there the lock ends
        with the statement and orders nothing. `is_deleted` (memory) is no substitute in a
        write path: that set lags the tombstone by up to `refresh_seconds`."""
        await session.execute(select(func.pg_advisory_xact_lock_shared(user_lock_key(user_id))))
        # A separate statement: its snapshot is taken after the lock was granted.
        found = await session.scalar(
            select(self._table.c.user_id).where(self._table.c.user_id == user_id)
        )
        return found is not None

    async def guard_write(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        """Call inside the transaction that makes the user's write visible, before commit:
        `is_recorded`, refusing a deleted user UNAUTHENTICATED (ACCOUNT_DELETED)."""
        if await self.is_recorded(session, user_id):
            raise Unauthenticated(DELETED_MESSAGE, reason="ACCOUNT_DELETED")

    def is_deleted(self, user_id: uuid.UUID) -> bool:
        """From memory: every replica knows of a deletion within `refresh_seconds`. For
        refusing tokens (`AuthPolicy.refused_user`) and fast refusals only; a write path
        decides with `is_recorded` or `guard_write` in its transaction."""
        return self._recent.is_deleted(user_id)

    async def load(self) -> None:
        await self._recent.load()

    async def run(self) -> None:
        """The refresh loop (a background task in every replica)."""
        await self._recent.run()

    async def pending_purges(self, limit: int = 100) -> list[uuid.UUID]:
        async with self._database.read() as session:
            rows = await session.scalars(
                select(self._table.c.user_id)
                .where(self._table.c.purged_at.is_(None))
                .order_by(self._table.c.deleted_at)
                .limit(limit)
            )
            return list(rows)

    async def purge_pending(self, purge: Callable[[uuid.UUID], Awaitable[object]]) -> int:
        """Runs `purge` (outside any transaction) for every tombstone not yet purged, then
        marks it purged; a failing purge is logged and retried with back-off (from
        `purge_retry_seconds`, doubling, at most five minutes) on later calls."""
        done = 0
        for user_id in await self.pending_purges():
            attempts, not_before = self._purge_failures.get(user_id, (0, 0.0))
            if time.monotonic() < not_before:
                continue
            try:
                await purge(user_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                attempts += 1
                delay = min(self._purge_retry * 2 ** (attempts - 1), MAX_PURGE_RETRY_SECONDS)
                self._purge_failures[user_id] = (attempts, time.monotonic() + delay)
                log.warning(
                    "purging a deleted user failed; will retry",
                    extra={"user_id": str(user_id), "attempt": attempts, "retry_in": delay},
                    exc_info=True,
                )
                continue
            self._purge_failures.pop(user_id, None)
            async with self._database.transaction() as session:
                await session.execute(
                    update(self._table)
                    .where(self._table.c.user_id == user_id, self._table.c.purged_at.is_(None))
                    .values(purged_at=func.now())
                )
            done += 1
        return done


def deletion_follower(
    source: EventSource,
    database: Database,
    tombstones: Tombstones,
    purge_user: Callable[[uuid.UUID], Awaitable[object]],
    *,
    cursors: Table,
    parked: Table,
    name: str,
    poll_seconds: float,
    metrics: Metrics | None = None,
) -> OutboxFollower:
    """The follower of a service whose only event is `user.deleted`: one leader among the
    replicas records the tombstone (refusing the user's tokens and writes from then on),
    then `purge_user` runs outside any transaction (ADR 0015). The service's `parked` and
    `replay-parked` commands build the same one, so a replay runs the same purge."""
    return OutboxFollower(
        source,
        database,
        CursorStore(database, cursors),
        parked,
        {USER_DELETED: tombstones.on_user_deleted},
        name=name,
        after_round=lambda: tombstones.purge_pending(purge_user),
        metrics=metrics,
        poll_seconds=poll_seconds,
    )
