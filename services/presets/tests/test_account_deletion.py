"""A deleted account is refused and leaves nothing behind in presets.

The security probe's findings (issue 7): after DELETE /v1/users/me the old token still
created presets and likes; an unlisted preset made that way stayed readable and forkable
by others; a like on a system preset survived. Here the tombstone is recorded as the
follower records it (runtime.tombstones), and the purge runs as PurgeUser does.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from pixelshop.presets.v1 import presets_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import Database
from runtime.tombstones import Tombstones
from services.presets.models import deleted_users
from services.presets.tests.helpers import (
    PUBLIC,
    UNLISTED,
    PresetsClient,
    User,
    failure,
)

# Seeded by migration 0002.
SYSTEM_PRESETS = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(1, 9)]
IN_FLIGHT = 20


async def _record_tombstone(admin_engine: AsyncEngine, user_id: uuid.UUID) -> None:
    """What the `user.deleted` handler does: waits for the user's guarded writes, then
    records the deletion."""
    database = Database(admin_engine)
    tombstones = Tombstones(database, deleted_users)
    async with database.transaction() as session:
        await tombstones.record(session, user_id)


async def _purge(presets: PresetsClient, user: User) -> None:
    await presets.internal.PurgeUser(
        presets_pb2.PurgeUserRequest(user_id=str(user.id)), metadata=presets.service_metadata()
    )


async def _leftovers(admin_engine: AsyncEngine, user_id: uuid.UUID) -> tuple[int, int]:
    """The user's preset rows (soft-deleted ones too) and like rows."""
    async with admin_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT (SELECT count(*) FROM presets.presets WHERE owner_id = :id),"
                " (SELECT count(*) FROM presets.preset_likes WHERE user_id = :id)"
            ),
            {"id": user_id},
        )
        owned, likes = rows.one()
    return int(owned), int(likes)


async def _miscounted(admin_engine: AsyncEngine, preset_ids: list[str]) -> list[str]:
    """Presets whose like_count is not the number of their like rows."""
    async with admin_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT p.id FROM presets.presets p WHERE p.id = ANY(CAST(:ids AS uuid[]))"
                " AND p.like_count <> (SELECT count(*) FROM presets.preset_likes l"
                " WHERE l.preset_id = p.id)"
            ),
            {"ids": preset_ids},
        )
        return [str(row.id) for row in rows]


async def test_user_deleted_event_purges_presets_and_likes(presets: PresetsClient) -> None:
    leaving, fan, author = presets.user("pro"), presets.user("pro"), presets.user("pro")
    theirs = await presets.create(leaving, "Leaving soon", visibility=PUBLIC)
    liked = await presets.create(author, "Liked by the leaver", visibility=PUBLIC)
    await presets.like(leaving, liked.id)
    await presets.like(fan, liked.id)

    presets.identity.add_event("user.deleted", leaving.id)
    for _ in range(400):
        if (await presets.get(author, liked.id)).like_count == 1:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the deleted user's like was not purged")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await presets.get(fan, theirs.id)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    # The still-valid token is refused on every RPC, reads included.
    for call in (
        presets.get(leaving, liked.id),
        presets.list(leaving),
        presets.unlike(leaving, liked.id),
        presets.create(leaving, "After the event"),
    ):
        refused = await failure(call)
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED


async def test_every_write_after_the_tombstone_is_refused(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    leaving, author = presets.user("pro"), presets.user("pro")
    own = await presets.create(leaving, "Mine before")
    public = await presets.create(author, "Someone's look", visibility=PUBLIC)
    await _record_tombstone(admin_engine, leaving.id)

    writes: dict[str, Any] = {
        "create": presets.create(leaving, "After deletion", visibility=UNLISTED),
        "update": presets.public.UpdatePreset(
            presets_pb2.UpdatePresetRequest(preset_id=own.id, name="Renamed"),
            metadata=leaving.metadata,
        ),
        "fork": presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=public.id), metadata=leaving.metadata
        ),
        "like system": presets.like(leaving, SYSTEM_PRESETS[0]),
        "like": presets.like(leaving, public.id),
    }
    for what, call in writes.items():
        refused = await failure(call)
        assert refused.code == grpc.StatusCode.UNAUTHENTICATED, what
        assert refused.reason == "ACCOUNT_DELETED", what
    assert (await presets.get(author, public.id)).like_count == 0


async def test_the_purge_removes_what_was_written_before_the_tombstone(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    leaving, other = presets.user("pro"), presets.user("pro")
    unlisted = await presets.create(leaving, "Shared by link", visibility=UNLISTED)
    await presets.like(leaving, SYSTEM_PRESETS[1])
    await presets.like(other, unlisted.id)
    before = (await presets.get(other, SYSTEM_PRESETS[1])).like_count

    await _record_tombstone(admin_engine, leaving.id)
    await _purge(presets, leaving)

    assert await _leftovers(admin_engine, leaving.id) == (0, 0)
    assert (await presets.get(other, SYSTEM_PRESETS[1])).like_count == before - 1
    for call in (
        presets.get(other, unlisted.id),
        presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=unlisted.id), metadata=other.metadata
        ),
    ):
        assert (await failure(call)).code == grpc.StatusCode.NOT_FOUND
    assert not await _miscounted(admin_engine, SYSTEM_PRESETS)


async def test_deleting_while_preset_writes_are_in_flight_leaves_nothing(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    leaving, author = presets.user("pro"), presets.user("pro")
    public = await presets.create(author, "Popular look", visibility=PUBLIC)
    source = await presets.create(leaving, "Forked from", visibility=UNLISTED)

    def write(n: int) -> Any:
        kind = n % 4
        if kind == 0:
            return presets.create(leaving, f"In flight {n}", visibility=UNLISTED)
        if kind == 1:
            return presets.like(leaving, SYSTEM_PRESETS[n % len(SYSTEM_PRESETS)])
        if kind == 2:
            return presets.public.ForkPreset(
                presets_pb2.ForkPresetRequest(preset_id=source.id), metadata=leaving.metadata
            )
        return presets.like(leaving, public.id)

    async def delete_account() -> None:
        await asyncio.sleep(0)  # let the first writes start
        await _record_tombstone(admin_engine, leaving.id)
        await _purge(presets, leaving)

    outcomes = await asyncio.gather(
        *(write(n) for n in range(IN_FLIGHT)), delete_account(), return_exceptions=True
    )
    for outcome in outcomes[:IN_FLIGHT]:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            assert outcome.code() == grpc.StatusCode.UNAUTHENTICATED
    assert outcomes[IN_FLIGHT] is None
    assert await _leftovers(admin_engine, leaving.id) == (0, 0)
    assert not await _miscounted(admin_engine, [*SYSTEM_PRESETS, public.id])
    assert (await presets.get(author, public.id)).like_count == 0
