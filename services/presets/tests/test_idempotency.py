"""CreatePreset with an Idempotency-Key (metadata, forwarded from the HTTP header) is safe
to retry: the same request answers the same preset, and nothing is created twice."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import MINE, PUBLIC, PresetsClient, User, failure


async def _create(
    presets: PresetsClient, user: User, key: str, name: str = "Retried", visibility: int = PUBLIC
) -> presets_pb2.Preset:
    response = await presets.public.CreatePreset(
        presets_pb2.CreatePresetRequest(
            preset=presets_pb2.Preset(
                name=name,
                prompt="Soft film grain.",
                category=presets_pb2.PRESET_CATEGORY_FILTER,
                visibility=visibility,
            )
        ),
        metadata=(*user.metadata, ("idempotency-key", key)),
    )
    return response.preset


async def test_the_same_key_and_request_answer_the_same_preset(presets: PresetsClient) -> None:
    user = presets.user("pro")
    key = str(uuid.uuid4())
    first = await _create(presets, user, key)
    second = await _create(presets, user, key)
    assert first.id == second.id
    assert await presets.list_ids(user, scope=MINE) == [first.id]


async def test_concurrent_calls_with_one_key_create_one_preset(presets: PresetsClient) -> None:
    user = presets.user("pro")
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(_create(presets, user, key) for _ in range(10)))
    ids = {answer.id for answer in answers}
    assert len(ids) == 1
    assert await presets.list_ids(user, scope=MINE) == list(ids)


async def test_a_key_reused_for_another_request_is_already_exists(presets: PresetsClient) -> None:
    user = presets.user("pro")
    key = str(uuid.uuid4())
    first = await _create(presets, user, key)
    reused = await failure(_create(presets, user, key, name="Something else"))
    assert (reused.code, reused.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await presets.list_ids(user, scope=MINE) == [first.id]


async def test_keys_belong_to_their_owner(presets: PresetsClient) -> None:
    key = str(uuid.uuid4())
    one, other = presets.user("pro"), presets.user("pro")
    mine = await _create(presets, one, key)
    theirs = await _create(presets, other, key, name="Another look")
    assert mine.id != theirs.id


async def test_a_retry_after_the_plan_lapsed_answers_the_published_preset(
    presets: PresetsClient,
) -> None:
    user = presets.user("pro")
    key = str(uuid.uuid4())
    first = await _create(presets, user, key)
    presets.set_tier(user, "free")
    again = await _create(presets, user, key)
    assert again.id == first.id
    refused = await failure(_create(presets, user, str(uuid.uuid4())))
    assert refused.reason == "PUBLIC_PRESETS_NOT_IN_TIER"


async def test_the_key_of_a_deleted_preset_is_a_failed_precondition(
    presets: PresetsClient,
) -> None:
    user = presets.user("pro")
    key = str(uuid.uuid4())
    created = await _create(presets, user, key)
    await presets.public.DeletePreset(
        presets_pb2.DeletePresetRequest(preset_id=created.id),
        metadata=user.metadata,
    )
    retried = await failure(_create(presets, user, key))
    assert (retried.code, retried.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "IDEMPOTENCY_KEY_PRESET_DELETED",
    )


async def test_a_bad_key_is_invalid_argument(presets: PresetsClient) -> None:
    user = presets.user("pro")
    bad = await failure(_create(presets, user, "k" * 256))
    assert (bad.code, bad.field) == (grpc.StatusCode.INVALID_ARGUMENT, "Idempotency-Key")
    assert await presets.list_ids(user, scope=MINE) == []


async def test_keys_are_taken_as_sent_never_trimmed(presets: PresetsClient) -> None:
    """runtime.validation's one rule for idempotency keys: a key that differs by a space
    is another key (it was trimmed into the same one, and refused as reused)."""
    user = presets.user("pro")
    key = f"create-{uuid.uuid4()}"
    first = await _create(presets, user, key, name="First")
    second = await _create(presets, user, f" {key} ", name="Second")
    assert first.id != second.id
    assert sorted(await presets.list_ids(user, scope=MINE)) == sorted([first.id, second.id])
    at_most = await _create(presets, user, "k" * 255, name="Longest key")
    assert at_most.id not in (first.id, second.id)
