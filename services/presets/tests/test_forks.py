"""Forks are private copies that remember their source."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf import field_mask_pb2
from pixelshop.presets.v1 import presets_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.presets.tests.helpers import (
    ADJUSTMENT,
    PRIVATE,
    PUBLIC,
    UNLISTED,
    PresetsClient,
    User,
    failure,
    wait_for_lock_waits,
)


async def _fork(
    presets: PresetsClient, user: User, preset_id: str, name: str = ""
) -> presets_pb2.Preset:
    response = await presets.public.ForkPreset(
        presets_pb2.ForkPresetRequest(preset_id=preset_id, name=name), metadata=user.metadata
    )
    return response.preset


async def test_a_fork_copies_the_prompt_and_records_its_source(presets: PresetsClient) -> None:
    author, forker = presets.user("pro"), presets.user()
    source = await presets.create(
        author,
        "Dusty film",
        prompt="Add fine film grain and lift the blacks slightly.",
        description="for street photos",
        category=ADJUSTMENT,
        visibility=PUBLIC,
    )
    fork = await _fork(presets, forker, source.id)
    assert fork.id != source.id
    assert fork.owner_id == str(forker.id)
    assert (fork.name, fork.prompt, fork.description, fork.category) == (
        "Dusty film",
        source.prompt,
        "for street photos",
        ADJUSTMENT,
    )
    assert fork.visibility == PRIVATE
    assert fork.forked_from_id == source.id
    assert fork.forked_from_name == "Dusty film"
    assert (fork.like_count, fork.use_count, fork.version) == (0, 0, 1)

    # The source changes later; the fork does not.
    await presets.public.UpdatePreset(
        presets_pb2.UpdatePresetRequest(
            preset_id=source.id,
            name="Dusty film v2",
            prompt="Something else entirely.",
            update_mask=field_mask_pb2.FieldMask(paths=["name", "prompt"]),
        ),
        metadata=author.metadata,
    )
    again = await presets.get(forker, fork.id)
    assert again.prompt == "Add fine film grain and lift the blacks slightly."
    assert again.name == "Dusty film"
    assert again.forked_from_name == "Dusty film v2"  # attribution follows the source's name

    # Once the source is no longer visible, only its id remains.
    await presets.public.UpdatePreset(
        presets_pb2.UpdatePresetRequest(preset_id=source.id, visibility=PRIVATE),
        metadata=author.metadata,
    )
    hidden = await presets.get(forker, fork.id)
    assert hidden.forked_from_id == source.id
    assert hidden.forked_from_name == ""
    assert hidden.prompt == again.prompt


async def test_forks_of_unlisted_and_own_presets_with_a_new_name(presets: PresetsClient) -> None:
    author, forker = presets.user(), presets.user()
    unlisted = await presets.create(author, "Link only", visibility=UNLISTED)
    fork = await _fork(presets, forker, unlisted.id, name="  My take  ")
    assert fork.name == "My take"
    assert fork.forked_from_id == unlisted.id
    own = await _fork(presets, forker, fork.id)
    assert own.forked_from_id == fork.id
    assert own.forked_from_name == "My take"


async def test_a_fork_racing_the_purge_of_its_source_is_not_found(
    presets: PresetsClient, admin_engine: AsyncEngine
) -> None:
    author, forker = presets.user(), presets.user()
    source = await presets.create(author, "About to go", visibility=UNLISTED)
    # The source's row is hard-deleted, as PurgeUser of its author does, and the fork
    # starts before that deletion commits.
    async with admin_engine.connect() as admin:
        purge = await admin.begin()
        await admin.execute(text("DELETE FROM presets.presets WHERE id = :id"), {"id": source.id})
        fork = asyncio.ensure_future(failure(_fork(presets, forker, source.id)))
        await wait_for_lock_waits(admin_engine, 1)
        await purge.commit()
    result = await fork
    assert result.code == grpc.StatusCode.NOT_FOUND
    assert result.message == f"preset {source.id} not found"
