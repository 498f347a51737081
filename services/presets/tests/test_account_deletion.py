"""A deleted account's presets and likes go: identity's `user.deleted` event reaches presets."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import PresetsClient

PUBLIC = presets_pb2.PRESET_VISIBILITY_PUBLIC


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
