"""Identity's outbox as other services read it, its pruning, and refusing deleted users.

Writers append with `IdentityRepository.append_event` in their own transaction and take
no lock; `ListEvents` reads through `Outbox.page` (ADR 0015). Only the cross-service types
(`user.deleted`, `user.tier_changed`) are ever handed out, and each follower asks only for
the types it handles. Every read reports the caller's position, remembered per service in
`outbox_followers`; `prune` deletes events every follower has passed once they are older
than the retention (default 7 days), so the outbox does not keep what it no longer needs.

`deleted_users` is the set of accounts deleted recently, which every identity replica
refreshes each second: the interceptor refuses their still-valid access tokens on every
RPC (`AuthPolicy.refused_user`), as the other services do from their tombstones.

The statements themselves live in repository.py (`events_page`, `prune_outbox`,
`recently_deleted_users`), like every other SQL of identity; this module holds the rules.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import Clock, utc_now
from runtime.db import Database
from runtime.errors import InvalidArgument
from runtime.events import CROSS_SERVICE_TYPES, Position
from runtime.tombstones import RecentlyDeleted
from services.identity.models import OutboxEvent
from services.identity.repository import IdentityRepository, recently_deleted_users

DEFAULT_RETENTION = datetime.timedelta(days=7)
PRUNE_BATCH = 1000


def event_types(requested: Sequence[str]) -> tuple[str, ...]:
    """The types a follower asked for; empty means every cross-service type."""
    if not requested:
        return CROSS_SERVICE_TYPES
    unknown = sorted(set(requested) - set(CROSS_SERVICE_TYPES))
    if unknown:
        raise InvalidArgument(
            "types", f"unknown event type {unknown[0]!r}; one of {', '.join(CROSS_SERVICE_TYPES)}"
        )
    return tuple(sorted(set(requested)))


class Outbox:
    def __init__(
        self, *, retention: datetime.timedelta = DEFAULT_RETENTION, clock: Clock = utc_now
    ) -> None:
        self._retention = retention
        self._clock = clock

    async def record_follower(
        self, session: AsyncSession, follower: str, position: Position
    ) -> None:
        await IdentityRepository(session).record_follower(follower, position, self._clock())

    async def page(
        self, session: AsyncSession, after: Position, limit: int, types: Sequence[str]
    ) -> tuple[list[OutboxEvent], Position]:
        return await IdentityRepository(session).events_page(after, limit, event_types(types))

    async def prune(self, session: AsyncSession, limit: int = PRUNE_BATCH) -> int:
        """Deletes up to `limit` events every follower has passed and older than the
        retention; answers how many."""
        cutoff = self._clock() - self._retention
        return await IdentityRepository(session).prune_outbox(cutoff, limit)


def deleted_users(database: Database, *, refresh_seconds: float = 1.0) -> RecentlyDeleted:
    return RecentlyDeleted(database, recently_deleted_users, refresh_seconds=refresh_seconds)


def position_of(xact_id: int, sequence: int) -> Position:
    if sequence < 0:
        raise InvalidArgument("after_sequence", "must not be negative")
    return Position(int(xact_id), int(sequence))
