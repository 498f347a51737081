"""Bad input answers INVALID_ARGUMENT naming the field, and changes nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import FILTER, MINE, PresetsClient, failure

GOOD = {"name": "Fine", "prompt": "Make it warm.", "category": FILTER}


@pytest.mark.parametrize(
    ("preset", "field"),
    [
        ({**GOOD, "name": ""}, "preset.name"),
        ({**GOOD, "name": "   "}, "preset.name"),
        ({**GOOD, "name": "x" * 81}, "preset.name"),
        ({**GOOD, "name": "nul\x00byte"}, "preset.name"),
        ({**GOOD, "name": "line\nbreak"}, "preset.name"),
        ({**GOOD, "prompt": ""}, "preset.prompt"),
        ({**GOOD, "prompt": "p" * 2001}, "preset.prompt"),
        ({**GOOD, "prompt": "warm\x00"}, "preset.prompt"),
        ({**GOOD, "prompt": "bell\x07"}, "preset.prompt"),
        ({**GOOD, "description": "d" * 501}, "preset.description"),
        ({**GOOD, "description": "\x00"}, "preset.description"),
        ({**GOOD, "category": 0}, "preset.category"),
        ({**GOOD, "category": 99}, "preset.category"),
        ({**GOOD, "visibility": 99}, "preset.visibility"),
        # Display text (issue 7): a right-to-left override makes "Sepia\u202egnp.exe" read
        # "Sepiaexe.png"; zero-width characters make two names look the same.
        ({**GOOD, "name": "Sepia\u202egnp.exe"}, "preset.name"),
        ({**GOOD, "name": "Syn\u200bthwave"}, "preset.name"),
        ({**GOOD, "name": "\u2067Isolate\u2069"}, "preset.name"),
        ({**GOOD, "description": "Warm\u202e tones"}, "preset.description"),
        ({**GOOD, "description": "Zero\ufeffwidth"}, "preset.description"),
    ],
)
async def test_create_rejects(presets: PresetsClient, preset: dict[str, Any], field: str) -> None:
    user = presets.user()
    result = await failure(
        presets.public.CreatePreset(
            presets_pb2.CreatePresetRequest(preset=presets_pb2.Preset(**preset)),
            metadata=user.metadata,
        )
    )
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.field == field
    assert result.message.startswith(field)
    assert await presets.list_ids(user, scope=MINE) == []


async def test_create_accepts_the_limits(presets: PresetsClient) -> None:
    user = presets.user()
    created = await presets.create(
        user, "n" * 80, prompt="line one\nline two\t" + "p" * 1982, description="d" * 500
    )
    assert len(created.name) == 80
    assert len(created.prompt) == 2000
    missing = await failure(
        presets.public.CreatePreset(presets_pb2.CreatePresetRequest(), metadata=user.metadata)
    )
    assert missing.field == "preset"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"preset_id": "not-a-uuid", "name": "x"}, "preset_id"),
        ({"preset_id": "", "name": "x"}, "preset_id"),
        ({"name": ""}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"prompt": "\x00"}, "prompt"),
        ({"name": "Renamed\u202e"}, "name"),
        ({"description": "\u200dJoined"}, "description"),
        ({"category": 99}, "category"),
        ({"category": 0}, "category"),
        ({"visibility": 7}, "visibility"),
        ({"expected_version": -1, "name": "x"}, "expected_version"),
        ({"update_mask": field_mask_pb2.FieldMask(paths=["prompt"])}, "prompt"),
        ({"update_mask": field_mask_pb2.FieldMask(paths=["owner_id"])}, "update_mask"),
    ],
)
async def test_update_rejects(
    presets: PresetsClient, request_fields: dict[str, Any], field: str
) -> None:
    user = presets.user()
    preset = await presets.create(user, "Target")
    result = await failure(
        presets.public.UpdatePreset(
            presets_pb2.UpdatePresetRequest(**{"preset_id": preset.id, **request_fields}),
            metadata=user.metadata,
        )
    )
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.field == field
    assert (await presets.get(user, preset.id)).version == 1


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"category": "sepia"}, "category"),
        ({"category": "99"}, "category"),
        ({"scope": "everything"}, "scope"),
        ({"order_by": "random"}, "order_by"),
        ({"page_size": -1}, "page_size"),
        ({"query": "a\x00b"}, "query"),
        ({"query": "q" * 201}, "query"),
        ({"query": "!!! ???"}, "query"),
        ({"page_token": "garbage"}, "page_token"),
        ({"page_token": "x" * 3000}, "page_token"),
    ],
)
async def test_list_rejects(
    presets: PresetsClient, request_fields: dict[str, Any], field: str
) -> None:
    result = await failure(presets.list(presets.user(), **request_fields))
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert result.field == field


@pytest.mark.parametrize(
    "preset_id", ["", "nope", "{00000000-0000-4000-8000-000000000001}", "1" * 40]
)
async def test_ids_must_be_uuids(presets: PresetsClient, preset_id: str) -> None:
    user = presets.user()
    for call in (
        presets.public.GetPreset(
            presets_pb2.GetPresetRequest(preset_id=preset_id), metadata=user.metadata
        ),
        presets.public.DeletePreset(
            presets_pb2.DeletePresetRequest(preset_id=preset_id), metadata=user.metadata
        ),
        presets.public.LikePreset(
            presets_pb2.LikePresetRequest(preset_id=preset_id), metadata=user.metadata
        ),
        presets.public.UnlikePreset(
            presets_pb2.UnlikePresetRequest(preset_id=preset_id), metadata=user.metadata
        ),
        presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=preset_id), metadata=user.metadata
        ),
    ):
        result = await failure(call)
        assert result.code == grpc.StatusCode.INVALID_ARGUMENT
        assert result.field == "preset_id"


async def test_fork_name_is_validated(presets: PresetsClient) -> None:
    user = presets.user()
    result = await failure(
        presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(
                preset_id="00000000-0000-4000-8000-000000000001", name="n" * 81
            ),
            metadata=user.metadata,
        )
    )
    assert (result.code, result.field) == (grpc.StatusCode.INVALID_ARGUMENT, "name")


async def test_a_fork_name_with_a_right_to_left_override_is_refused(
    presets: PresetsClient,
) -> None:
    user = presets.user()
    result = await failure(
        presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(
                preset_id="00000000-0000-4000-8000-000000000001", name="Mine\u202egnp.exe"
            ),
            metadata=user.metadata,
        )
    )
    assert (result.code, result.field) == (grpc.StatusCode.INVALID_ARGUMENT, "name")
    assert "U+202E" in result.message
    assert await presets.list_ids(user, scope=MINE) == []
