"""System presets: seeded by migration, listed for everyone, changed by no one."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import (
    ADJUSTMENT,
    FILTER,
    PUBLIC,
    SYSTEM_SCOPE,
    PresetsClient,
    failure,
)

FILTERS = {"Synthwave", "Anime", "Lomo", "Glitch"}
ADJUSTMENTS = {"Blur Background", "Enhance Details", "Warmer Lighting", "Studio Light"}


async def test_all_eight_are_listed_with_their_prompts(presets: PresetsClient) -> None:
    user = presets.user()
    page = await presets.list(user, scope=SYSTEM_SCOPE)
    assert {p.name for p in page.presets} == FILTERS | ADJUSTMENTS
    assert not page.next_page_token
    for preset in page.presets:
        assert preset.system
        assert not preset.owner_id
        assert preset.visibility == PUBLIC
        assert len(preset.prompt) > 100  # a real instruction for the image model
        # Every prompt tells the model to keep the subject and who is in the photo.
        assert "subject" in preset.prompt
        assert "identity" in preset.prompt


@pytest.mark.parametrize(("category", "names"), [(FILTER, FILTERS), (ADJUSTMENT, ADJUSTMENTS)])
async def test_filtered_by_category(presets: PresetsClient, category: int, names: set[str]) -> None:
    name = presets_pb2.PresetCategory.Name(category)  # the enum's name works as a filter
    page = await presets.list(presets.user(), scope=SYSTEM_SCOPE, category=name)
    assert {p.name for p in page.presets} == names
    assert {p.category for p in page.presets} == {category}


async def test_they_are_part_of_the_default_listing(presets: PresetsClient) -> None:
    user = presets.user()
    page = await presets.list(user, query="synthwave")
    assert "Synthwave" in [p.name for p in page.presets]


async def test_nobody_can_change_or_delete_them(presets: PresetsClient) -> None:
    user = presets.user("pro")
    listed = await presets.list(user, scope=SYSTEM_SCOPE)
    for preset in listed.presets:
        update = await failure(
            presets.public.UpdatePreset(
                presets_pb2.UpdatePresetRequest(
                    preset_id=preset.id,
                    name="Mine now",
                    update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                ),
                metadata=user.metadata,
            )
        )
        assert update.code == grpc.StatusCode.PERMISSION_DENIED
        assert update.reason == "SYSTEM_PRESET_READ_ONLY"
        delete = await failure(
            presets.public.DeletePreset(
                presets_pb2.DeletePresetRequest(preset_id=preset.id), metadata=user.metadata
            )
        )
        assert delete.code == grpc.StatusCode.PERMISSION_DENIED
        assert delete.reason == "SYSTEM_PRESET_READ_ONLY"
    after = await presets.list(user, scope=SYSTEM_SCOPE)
    assert [(p.name, p.version) for p in after.presets] == [
        (p.name, p.version) for p in listed.presets
    ]


async def test_they_can_be_liked_forked_and_resolved(presets: PresetsClient) -> None:
    user = presets.user()
    synthwave = next(
        p for p in (await presets.list(user, scope=SYSTEM_SCOPE)).presets if p.name == "Synthwave"
    )
    liked = await presets.like(user, synthwave.id)
    assert liked.liked
    forked = await presets.public.ForkPreset(
        presets_pb2.ForkPresetRequest(preset_id=synthwave.id), metadata=user.metadata
    )
    assert forked.preset.prompt == synthwave.prompt
    assert forked.preset.forked_from_name == "Synthwave"
    await presets.unlike(user, synthwave.id)
