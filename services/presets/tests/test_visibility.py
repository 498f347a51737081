"""Who sees what: private for the owner only, unlisted by id only, public for everyone."""

from __future__ import annotations

import grpc
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import (
    COMMUNITY,
    MINE,
    PRIVATE,
    PUBLIC,
    UNLISTED,
    PresetsClient,
    failure,
    unique_word,
)


async def test_a_private_preset_does_not_exist_for_others(presets: PresetsClient) -> None:
    owner, other = presets.user("pro"), presets.user("pro")
    word = unique_word()
    secret = await presets.create(owner, f"Secret {word}", description="my own look")

    assert (await presets.get(owner, secret.id)).name == f"Secret {word}"
    for call in (
        presets.public.GetPreset(
            presets_pb2.GetPresetRequest(preset_id=secret.id), metadata=other.metadata
        ),
        presets.public.LikePreset(
            presets_pb2.LikePresetRequest(preset_id=secret.id), metadata=other.metadata
        ),
        presets.public.UnlikePreset(
            presets_pb2.UnlikePresetRequest(preset_id=secret.id), metadata=other.metadata
        ),
        presets.public.ForkPreset(
            presets_pb2.ForkPresetRequest(preset_id=secret.id), metadata=other.metadata
        ),
        presets.public.UpdatePreset(
            presets_pb2.UpdatePresetRequest(preset_id=secret.id, name="x"), metadata=other.metadata
        ),
        presets.public.DeletePreset(
            presets_pb2.DeletePresetRequest(preset_id=secret.id), metadata=other.metadata
        ),
    ):
        result = await failure(call)
        assert result.code == grpc.StatusCode.NOT_FOUND
        assert result.message == f"preset {secret.id} not found"

    for scope in ("", COMMUNITY, MINE):
        assert await presets.list_ids(other, scope=scope, query=word) == []
    assert await presets.list_ids(owner, query=word) == [secret.id]
    assert await presets.list_ids(owner, scope=MINE, query=word) == [secret.id]
    assert await presets.list_ids(owner, scope=COMMUNITY, query=word) == []


async def test_an_unlisted_preset_is_reachable_by_id_only(presets: PresetsClient) -> None:
    owner, other = presets.user(), presets.user()
    word = unique_word()
    shared = await presets.create(owner, f"Shared {word}", visibility=UNLISTED)

    seen = await presets.get(other, shared.id)
    assert seen.name == f"Shared {word}"
    assert seen.visibility == UNLISTED
    assert (await presets.like(other, shared.id)).like_count == 1
    for scope in ("", COMMUNITY, MINE):
        assert await presets.list_ids(other, scope=scope, query=word) == []
    # Its owner still finds it among their own.
    assert await presets.list_ids(owner, scope=MINE, query=word) == [shared.id]
    assert await presets.list_ids(owner, scope=COMMUNITY, query=word) == []


async def test_a_public_preset_is_in_community_browse_and_search(presets: PresetsClient) -> None:
    owner, other = presets.user("pro"), presets.user()
    word = unique_word()
    published = await presets.create(
        owner, "Teal and orange", description=f"cinematic {word} grading", visibility=PUBLIC
    )
    assert await presets.list_ids(other, scope=COMMUNITY, query=word) == [published.id]
    assert await presets.list_ids(other, query=word) == [published.id]
    # Search matches words by prefix, in the name as well as the description.
    assert await presets.list_ids(other, scope=COMMUNITY, query=word[:6]) != []
    assert published.id in await presets.list_ids(other, scope=COMMUNITY, query=f"teal {word}")
    assert await presets.list_ids(other, scope=COMMUNITY, query=f"teal {word} nothingelse") == []
    # The owner's own public presets are "mine", not "community", for the owner.
    assert await presets.list_ids(owner, scope=COMMUNITY, query=word) == []
    assert await presets.list_ids(owner, scope=MINE, query=word) == [published.id]


async def test_only_a_plan_with_public_presets_may_publish(presets: PresetsClient) -> None:
    free, pro = presets.user("free"), presets.user("pro")

    refused = await failure(presets.create(free, "Loud", visibility=PUBLIC))
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    assert refused.reason == "PUBLIC_PRESETS_NOT_IN_TIER"
    assert "unlisted" in refused.message

    own = await presets.create(free, "Quiet", visibility=PRIVATE)
    refused = await failure(
        presets.public.UpdatePreset(
            presets_pb2.UpdatePresetRequest(preset_id=own.id, visibility=PUBLIC),
            metadata=free.metadata,
        )
    )
    assert refused.reason == "PUBLIC_PRESETS_NOT_IN_TIER"
    assert (await presets.get(free, own.id)).visibility == PRIVATE
    unlisted = await presets.public.UpdatePreset(
        presets_pb2.UpdatePresetRequest(preset_id=own.id, visibility=UNLISTED),
        metadata=free.metadata,
    )
    assert unlisted.preset.visibility == UNLISTED

    published = await presets.create(pro, "Loud", visibility=PUBLIC)
    assert published.visibility == PUBLIC
    # A plan that lapsed later does not lock the owner out of what they published.
    presets.set_tier(pro, "free")
    renamed = await presets.public.UpdatePreset(
        presets_pb2.UpdatePresetRequest(preset_id=published.id, name="Louder"),
        metadata=pro.metadata,
    )
    assert renamed.preset.name == "Louder"
    assert renamed.preset.visibility == PUBLIC


async def test_others_cannot_change_what_they_can_see(presets: PresetsClient) -> None:
    owner, other = presets.user("pro"), presets.user("pro")
    published = await presets.create(owner, "Mine to change", visibility=PUBLIC)
    for call in (
        presets.public.UpdatePreset(
            presets_pb2.UpdatePresetRequest(preset_id=published.id, name="Hijacked"),
            metadata=other.metadata,
        ),
        presets.public.DeletePreset(
            presets_pb2.DeletePresetRequest(preset_id=published.id), metadata=other.metadata
        ),
    ):
        result = await failure(call)
        assert result.code == grpc.StatusCode.PERMISSION_DENIED
        assert result.reason == "NOT_PRESET_OWNER"
    assert (await presets.get(other, published.id)).name == "Mine to change"


async def test_a_deleted_preset_is_gone_for_everyone(presets: PresetsClient) -> None:
    owner, other = presets.user("pro"), presets.user()
    word = unique_word()
    doomed = await presets.create(owner, f"Doomed {word}", visibility=PUBLIC)
    await presets.public.DeletePreset(
        presets_pb2.DeletePresetRequest(preset_id=doomed.id), metadata=owner.metadata
    )
    for user in (owner, other):
        result = await failure(presets.get(user, doomed.id))
        assert result.code == grpc.StatusCode.NOT_FOUND
        assert await presets.list_ids(user, query=word) == []
    again = await failure(
        presets.public.DeletePreset(
            presets_pb2.DeletePresetRequest(preset_id=doomed.id), metadata=owner.metadata
        )
    )
    assert again.code == grpc.StatusCode.NOT_FOUND


async def test_every_method_needs_a_user_token(presets: PresetsClient) -> None:
    result = await failure(presets.public.ListPresets(presets_pb2.ListPresetsRequest()))
    assert result.code == grpc.StatusCode.UNAUTHENTICATED
    result = await failure(
        presets.public.GetPreset(
            presets_pb2.GetPresetRequest(preset_id="00000000-0000-4000-8000-000000000001"),
            metadata=(("authorization", "Bearer not-a-token"),),
        )
    )
    assert result.code == grpc.StatusCode.UNAUTHENTICATED


async def test_search_takes_any_language(presets: PresetsClient) -> None:
    owner = presets.user("pro")
    word = unique_word()
    creme = await presets.create(owner, f"Café Crème {word}", visibility=PUBLIC)
    assert await presets.list_ids(owner, query=f"CAFÉ crè {word}") == [creme.id]
    # Words the text search cannot use, or operators, are harmless.
    for query in ("日本語 ²", "a & b | !c", "'quoted':* <-> x", "-- ; DROP TABLE presets"):
        await presets.list(owner, query=query)
