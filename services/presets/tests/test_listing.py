"""Ordering and keyset pagination: every row exactly once, in order, across pages."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from pixelshop.presets.v1 import presets_pb2

from services.presets.tests.helpers import (
    ADJUSTMENT,
    COMMUNITY,
    FILTER,
    MINE,
    NEWEST,
    POPULAR,
    PUBLIC,
    USED,
    PresetsClient,
    User,
    failure,
    unique_word,
)

# (likes, uses) per preset: ties on purpose, so the id decides between equals.
COUNTS = [(3, 0), (0, 5), (3, 2), (1, 1), (5, 5), (0, 0), (1, 9), (3, 2)]


async def _community(presets: PresetsClient) -> tuple[User, str, list[presets_pb2.Preset]]:
    """Public presets of one author, found by a unique word, with likes and uses."""
    author = presets.user("pro")
    word = unique_word()
    created = []
    for number, (_likes, _uses) in enumerate(COUNTS):
        category = FILTER if number % 2 else ADJUSTMENT
        created.append(
            await presets.create(author, f"{word} {number}", visibility=PUBLIC, category=category)
        )
    fans = [presets.user() for _ in range(max(likes for likes, _ in COUNTS))]
    await asyncio.gather(
        *(
            presets.like(fans[i], preset.id)
            for preset, (likes, _) in zip(created, COUNTS, strict=True)
            for i in range(likes)
        )
    )
    await asyncio.gather(
        *(
            presets.record_use(preset.id)
            for preset, (_, uses) in zip(created, COUNTS, strict=True)
            for _ in range(uses)
        )
    )
    return author, word, [await presets.get(author, p.id) for p in created]


def _expected(order: int, listed: list[presets_pb2.Preset]) -> list[str]:
    def key(preset: presets_pb2.Preset) -> tuple[object, uuid.UUID]:
        value: object
        if order == POPULAR:
            value = preset.like_count
        elif order == USED:
            value = preset.use_count
        else:
            value = preset.create_time.ToDatetime()
        return value, uuid.UUID(preset.id)

    return [p.id for p in sorted(listed, key=key, reverse=True)]


@pytest.mark.parametrize("order", [NEWEST, POPULAR, USED])
@pytest.mark.parametrize("page_size", [1, 3, 8, 100])
async def test_community_pages_cover_every_preset_once_in_order(
    presets: PresetsClient, order: int, page_size: int
) -> None:
    _, word, created = await _community(presets)
    viewer = presets.user()
    ids = await presets.list_ids(
        viewer, scope=COMMUNITY, query=word, order_by=order, page_size=page_size
    )
    assert ids == _expected(order, created)


async def test_mine_and_category_filters_page_too(presets: PresetsClient) -> None:
    author, word, created = await _community(presets)
    mine = await presets.list_ids(author, scope=MINE, query=word, order_by=POPULAR, page_size=2)
    assert mine == _expected(POPULAR, created)
    filters = await presets.list_ids(
        author, query=word, category="filter", order_by=USED, page_size=3
    )
    assert filters == _expected(USED, [p for p in created if p.category == FILTER])


async def test_default_scope_merges_public_and_own_hidden_presets(presets: PresetsClient) -> None:
    author, word, created = await _community(presets)
    hidden = await presets.create(author, f"{word} hidden")
    ids = await presets.list_ids(author, query=word, page_size=3)
    assert ids == _expected(NEWEST, [*created, hidden])
    stranger = presets.user()
    assert await presets.list_ids(stranger, query=word, page_size=3) == _expected(NEWEST, created)


async def test_a_page_token_only_continues_its_own_query(presets: PresetsClient) -> None:
    author, word, _ = await _community(presets)
    first = await presets.list(author, scope=MINE, query=word, page_size=2, order_by=POPULAR)
    token = first.next_page_token
    assert token
    for changed in (
        {"scope": COMMUNITY, "order_by": POPULAR},
        {"scope": MINE, "order_by": USED},
        {"scope": MINE, "order_by": POPULAR, "category": "filter"},
        {"scope": MINE, "order_by": POPULAR, "query": f"{word} other"},
    ):
        fields = {"query": word, **changed}
        result = await failure(presets.list(author, page_token=token, **fields))
        assert (result.code, result.field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    # Another user cannot continue it either.
    result = await failure(
        presets.list(presets.user(), scope=MINE, query=word, order_by=POPULAR, page_token=token)
    )
    assert result.field == "page_token"
    # A tampered token is refused.
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    result = await failure(
        presets.list(author, scope=MINE, query=word, order_by=POPULAR, page_token=tampered)
    )
    assert result.field == "page_token"
    # A different page size may continue it.
    rest = await presets.list(
        author, scope=MINE, query=word, order_by=POPULAR, page_token=token, page_size=50
    )
    assert len(rest.presets) == len(COUNTS) - 2
    assert not rest.next_page_token
