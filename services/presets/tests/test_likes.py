"""Likes: idempotent per user, and like_count exact under concurrent calls over gRPC."""

from __future__ import annotations

import asyncio

import grpc

from services.presets.tests.helpers import PUBLIC, UNLISTED, PresetsClient, failure

CONCURRENT_USERS = 50


async def test_concurrent_likes_and_unlikes_keep_the_count_exact(
    presets: PresetsClient,
) -> None:
    owner = presets.user("pro")
    preset = await presets.create(owner, "Crowd favourite", visibility=PUBLIC)
    fans = [presets.user() for _ in range(CONCURRENT_USERS)]

    liked = await asyncio.gather(*(presets.like(fan, preset.id) for fan in fans))
    assert all(p.liked for p in liked)
    assert (await presets.get(owner, preset.id)).like_count == CONCURRENT_USERS

    # Everyone likes again, concurrently: nothing changes.
    await asyncio.gather(*(presets.like(fan, preset.id) for fan in fans))
    assert (await presets.get(owner, preset.id)).like_count == CONCURRENT_USERS

    # Twenty take it back, each twice at the same time.
    leaving = fans[:20]
    await asyncio.gather(*(presets.unlike(fan, preset.id) for fan in leaving + leaving))
    assert (await presets.get(owner, preset.id)).like_count == CONCURRENT_USERS - 20
    assert not (await presets.get(leaving[0], preset.id)).liked
    assert (await presets.get(fans[-1], preset.id)).liked


async def test_liking_twice_counts_once(presets: PresetsClient) -> None:
    owner, fan = presets.user(), presets.user()
    preset = await presets.create(owner, "Shared look", visibility=UNLISTED)
    assert (await presets.like(fan, preset.id)).like_count == 1
    again = await presets.like(fan, preset.id)
    assert again.like_count == 1
    assert again.liked
    # The owner sees the count, but it is not the owner who likes it.
    mine = await presets.get(owner, preset.id)
    assert mine.like_count == 1
    assert not mine.liked
    assert (await presets.unlike(fan, preset.id)).like_count == 0
    unliked = await presets.unlike(fan, preset.id)
    assert unliked.like_count == 0
    assert not unliked.liked


async def test_only_visible_presets_can_be_liked(presets: PresetsClient) -> None:
    owner, fan = presets.user(), presets.user()
    private = await presets.create(owner, "Hidden")
    result = await failure(presets.like(fan, private.id))
    assert result.code == grpc.StatusCode.NOT_FOUND
    missing = await failure(presets.like(fan, "0b5d4b86-7f51-4a55-9a4e-1f0bb1f1f1f1"))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    # Owners may like their own private presets; it is just a bookmark.
    assert (await presets.like(owner, private.id)).like_count == 1
