"""PresetInternalService: for other services only, with the service credential."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from pixelshop.presets.v1 import presets_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from services.presets.tests.helpers import (
    ADJUSTMENT,
    PUBLIC,
    UNLISTED,
    PresetsClient,
    User,
    failure,
    wait_for_lock_waits,
)

SYNTHWAVE = "00000000-0000-4000-8000-000000000001"


def _requests() -> list[tuple[str, object]]:
    return [
        (
            "ResolvePreset",
            presets_pb2.ResolvePresetRequest(preset_id=SYNTHWAVE, user_id=str(uuid.uuid4())),
        ),
        (
            "RecordPresetUse",
            presets_pb2.RecordPresetUseRequest(preset_id=SYNTHWAVE, edit_id=str(uuid.uuid4())),
        ),
        ("PurgeUser", presets_pb2.PurgeUserRequest(user_id=str(uuid.uuid4()))),
    ]


@pytest.mark.parametrize(("method", "request_message"), _requests())
async def test_refused_without_the_service_credential(
    presets: PresetsClient, method: str, request_message: object
) -> None:
    call = getattr(presets.internal, method)
    user = presets.user("pro")
    forged = ServiceTokens("another-secret-that-is-long-enough-000", "projects").token()
    for metadata in ((), user.metadata, ((SERVICE_TOKEN_METADATA, forged),)):
        result = await failure(call(request_message, metadata=metadata))
        assert result.code == grpc.StatusCode.PERMISSION_DENIED
    # And with it, the call goes through.
    await call(request_message, metadata=presets.service_metadata())


async def test_resolve_answers_what_the_user_may_use(presets: PresetsClient) -> None:
    owner, other = presets.user(), presets.user()
    own = await presets.create(owner, "Own", prompt="own prompt", category=ADJUSTMENT)
    shared = await presets.create(owner, "Shared", prompt="shared prompt", visibility=UNLISTED)

    async def resolve(preset_id: str, user_id: uuid.UUID) -> presets_pb2.ResolvePresetResponse:
        response: presets_pb2.ResolvePresetResponse = await presets.internal.ResolvePreset(
            presets_pb2.ResolvePresetRequest(preset_id=preset_id, user_id=str(user_id)),
            metadata=presets.service_metadata(),
        )
        return response

    resolved = await resolve(own.id, owner.id)
    assert (resolved.preset_id, resolved.name, resolved.prompt, resolved.category) == (
        own.id,
        "Own",
        "own prompt",
        ADJUSTMENT,
    )
    assert resolved.version == 1
    assert (await resolve(shared.id, other.id)).prompt == "shared prompt"
    assert (await resolve(SYNTHWAVE, other.id)).name == "Synthwave"
    hidden = await failure(resolve(own.id, other.id))
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    bad = await failure(
        presets.internal.ResolvePreset(
            presets_pb2.ResolvePresetRequest(preset_id=own.id, user_id="someone"),
            metadata=presets.service_metadata(),
        )
    )
    assert (bad.code, bad.field) == (grpc.StatusCode.INVALID_ARGUMENT, "user_id")


async def test_record_use_counts_each_edit_once(presets: PresetsClient) -> None:
    owner = presets.user()
    preset = await presets.create(owner, "Used a lot")
    edit_id = str(uuid.uuid4())
    for _ in range(3):
        await presets.record_use(preset.id, edit_id)
    assert (await presets.get(owner, preset.id)).use_count == 1
    await presets.record_use(preset.id)
    assert (await presets.get(owner, preset.id)).use_count == 2

    # The same edit cannot count for another preset.
    other = await presets.create(owner, "Other")
    conflict = await failure(presets.record_use(other.id, edit_id))
    assert conflict.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await presets.get(owner, other.id)).use_count == 0

    missing = await failure(presets.record_use(str(uuid.uuid4())))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    invalid = await failure(
        presets.internal.RecordPresetUse(
            presets_pb2.RecordPresetUseRequest(preset_id=preset.id, edit_id="x"),
            metadata=presets.service_metadata(),
        )
    )
    assert (invalid.code, invalid.field) == (grpc.StatusCode.INVALID_ARGUMENT, "edit_id")


async def test_purge_user_removes_presets_and_likes_exactly(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    leaving, staying = presets.user("pro"), presets.user("pro")
    theirs = await presets.create(leaving, "Going away", visibility=PUBLIC)
    deleted = await presets.create(leaving, "Already deleted")
    await presets.public.DeletePreset(
        presets_pb2.DeletePresetRequest(preset_id=deleted.id), metadata=leaving.metadata
    )
    kept = await presets.create(staying, "Staying", visibility=PUBLIC)
    await presets.like(leaving, kept.id)
    await presets.like(staying, kept.id)
    await presets.like(staying, theirs.id)
    fork = (
        await presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=theirs.id), metadata=staying.metadata
        )
    ).preset
    await presets.record_use(theirs.id)

    for _ in range(2):  # purging twice is harmless
        await presets.internal.PurgeUser(
            presets_pb2.PurgeUserRequest(user_id=str(leaving.id)),
            metadata=presets.service_metadata(),
        )

    assert (await failure(presets.get(staying, theirs.id))).code == grpc.StatusCode.NOT_FOUND
    remaining = await presets.get(staying, kept.id)
    assert remaining.like_count == 1
    assert remaining.liked
    # The fork is a copy: it keeps working, only the link to its source is gone.
    orphan = await presets.get(staying, fork.id)
    assert orphan.prompt == theirs.prompt
    assert orphan.forked_from_id == ""
    assert orphan.forked_from_name == ""
    # Nothing of theirs is left behind, soft-deleted rows included.
    async with admin_engine.connect() as connection:
        left = await connection.execute(
            text(
                "SELECT (SELECT count(*) FROM presets.presets WHERE owner_id = :user)"
                " + (SELECT count(*) FROM presets.preset_likes WHERE user_id = :user)"
            ),
            {"user": leaving.id},
        )
        assert left.scalar_one() == 0


async def test_concurrent_purges_of_users_who_liked_each_other_do_not_deadlock(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    first, second, author = presets.user(), presets.user(), presets.user()
    firsts = await presets.create(first, "First's", visibility=UNLISTED)
    seconds = await presets.create(second, "Second's", visibility=UNLISTED)
    liked_by_both = await presets.create(author, "Liked by both", visibility=UNLISTED)
    for user, preset_id in (
        (first, seconds.id),
        (second, firsts.id),
        (first, liked_by_both.id),
        (second, liked_by_both.id),
    ):
        await presets.like(user, preset_id)

    async def purge(user: User) -> None:
        await presets.internal.PurgeUser(
            presets_pb2.PurgeUserRequest(user_id=str(user.id)),
            metadata=presets.service_metadata(),
        )

    # Both purges run at once: the admin holds their likes of the third preset, so each
    # purge gets as far as it can before either finishes.
    async with admin_engine.connect() as admin:
        hold = await admin.begin()
        await admin.execute(
            text("SELECT 1 FROM presets.preset_likes WHERE preset_id = :id FOR UPDATE"),
            {"id": liked_by_both.id},
        )
        purges = asyncio.gather(purge(first), purge(second), return_exceptions=True)
        await wait_for_lock_waits(admin_engine, 2)
        await hold.commit()
    assert await purges == [None, None]

    assert (await presets.get(author, liked_by_both.id)).like_count == 0
    async with admin_engine.connect() as connection:
        left = await connection.execute(
            text(
                "SELECT (SELECT count(*) FROM presets.presets WHERE owner_id IN (:a, :b))"
                " + (SELECT count(*) FROM presets.preset_likes WHERE user_id IN (:a, :b))"
            ),
            {"a": first.id, "b": second.id},
        )
        assert left.scalar_one() == 0


async def test_purging_an_author_and_a_forker_at_once_does_not_deadlock(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    author, forker = presets.user(), presets.user()
    source = await presets.create(author, "Forked", visibility=UNLISTED)
    await presets.like(forker, source.id)
    # Purging the author sets forks' forked_from_id to NULL, so it writes the forker's
    # rows too; make sure one of them sorts before the source.
    forks = []
    while not any(uuid.UUID(fork.id) < uuid.UUID(source.id) for fork in forks):
        response = await presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=source.id), metadata=forker.metadata
        )
        forks.append(response.preset)

    async def purge(user: User) -> None:
        await presets.internal.PurgeUser(
            presets_pb2.PurgeUserRequest(user_id=str(user.id)),
            metadata=presets.service_metadata(),
        )

    # A like in progress (held by the admin) makes the author's purge wait for the
    # source; the forker's purge starts meanwhile.
    async with admin_engine.connect() as admin:
        like = await admin.begin()
        await admin.execute(
            text("SELECT 1 FROM presets.presets WHERE id = :id FOR KEY SHARE"), {"id": source.id}
        )
        purges = asyncio.gather(purge(author), return_exceptions=True)
        await wait_for_lock_waits(admin_engine, 1)
        purges = asyncio.gather(purges, purge(forker), return_exceptions=True)
        await wait_for_lock_waits(admin_engine, 2)
        await like.commit()
    assert await purges == [[None], None]

    async with admin_engine.connect() as connection:
        left = await connection.execute(
            text(
                "SELECT (SELECT count(*) FROM presets.presets WHERE owner_id IN (:a, :b))"
                " + (SELECT count(*) FROM presets.preset_likes WHERE user_id IN (:a, :b))"
            ),
            {"a": author.id, "b": forker.id},
        )
        assert left.scalar_one() == 0
