"""Updates change only what is asked, bump the version, and refuse stale versions."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import ADJUSTMENT, FILTER, PresetsClient, User, failure


async def _update(presets: PresetsClient, user: User, **fields: object) -> presets_pb2.Preset:
    response = await presets.public.UpdatePreset(
        presets_pb2.UpdatePresetRequest(**fields), metadata=user.metadata
    )
    return response.preset


async def test_update_changes_present_fields_and_bumps_the_version(
    presets: PresetsClient,
) -> None:
    owner = presets.user()
    created = await presets.create(owner, "Before", prompt="old prompt", description="old")
    assert created.version == 1

    renamed = await _update(presets, owner, preset_id=created.id, name="After")
    assert (renamed.name, renamed.prompt, renamed.description) == ("After", "old prompt", "old")
    assert renamed.version == 2
    assert renamed.update_time.ToDatetime() >= created.update_time.ToDatetime()

    # With a mask, exactly the named fields change: an empty description clears it, and
    # fields set but not named stay.
    masked = await _update(
        presets,
        owner,
        preset_id=created.id,
        prompt="new prompt",
        name="Ignored",
        category=ADJUSTMENT,
        update_mask=field_mask_pb2.FieldMask(paths=["prompt", "description", "category"]),
    )
    assert (masked.name, masked.prompt, masked.description, masked.category) == (
        "After",
        "new prompt",
        "",
        ADJUSTMENT,
    )
    assert masked.version == 3
    assert (await presets.get(owner, created.id)).version == 3


async def test_a_stale_expected_version_is_aborted(presets: PresetsClient) -> None:
    owner = presets.user()
    created = await presets.create(owner, "Contested", category=FILTER)
    first = await _update(presets, owner, preset_id=created.id, name="First", expected_version=1)
    assert first.version == 2

    stale = await failure(
        _update(presets, owner, preset_id=created.id, name="Second", expected_version=1)
    )
    assert stale.code == grpc.StatusCode.ABORTED
    assert stale.reason == "PRESET_VERSION_CHANGED"
    assert (await presets.get(owner, created.id)).name == "First"

    current = await _update(presets, owner, preset_id=created.id, name="Second", expected_version=2)
    assert (current.name, current.version) == ("Second", 3)


async def test_an_update_that_changes_nothing_is_refused(presets: PresetsClient) -> None:
    owner = presets.user()
    created = await presets.create(owner, "Unchanged")
    result = await failure(_update(presets, owner, preset_id=created.id))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.field == "update_mask"
    result = await failure(
        _update(
            presets,
            owner,
            preset_id=created.id,
            update_mask=field_mask_pb2.FieldMask(paths=["like_count"]),
        )
    )
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.field == "update_mask"
    assert (await presets.get(owner, created.id)).version == 1


async def test_an_update_that_changes_no_value_keeps_the_version(presets: PresetsClient) -> None:
    owner = presets.user()
    created = await presets.create(owner, "Same", prompt="same prompt", description="same")
    same = await _update(
        presets,
        owner,
        preset_id=created.id,
        name="Same",
        prompt="same prompt",
        description="  same  ",  # trimmed to the current value
        category=created.category,
        visibility=created.visibility,
        expected_version=1,
    )
    assert same.version == 1
    assert same.update_time == created.update_time
    # One changed field among unchanged ones is a change: one bump.
    changed = await _update(presets, owner, preset_id=created.id, name="Same", prompt="new prompt")
    assert (changed.prompt, changed.version) == ("new prompt", 2)
