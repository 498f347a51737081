from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest

from runtime.errors import InvalidArgument
from runtime.pagination import (
    Keyset,
    Page,
    PageTokens,
    SortKey,
    fetch_limit,
    page_of,
    query_fingerprint,
)

TOKENS = PageTokens(b"k" * 32)


def test_round_trip() -> None:
    token = TOKENS.encode(["2026-01-01T00:00:00+00:00", "abc"], query="mine")
    assert TOKENS.decode(token, query="mine") == ["2026-01-01T00:00:00+00:00", "abc"]
    assert TOKENS.decode("", query="mine") is None


@pytest.mark.parametrize("token", ["garbage", "!!!", "a" * 3000, "eyJwIjpbXX0"])
def test_garbage_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        TOKENS.decode(token)
    assert error.value.field == "page_token"


def test_tampered_or_foreign_tokens_are_refused() -> None:
    token = TOKENS.encode([1, "x"], query="a")
    with pytest.raises(InvalidArgument, match="different query"):
        TOKENS.decode(token, query="b")
    with pytest.raises(InvalidArgument):
        PageTokens(b"other-key" * 4).decode(token, query="a")
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidArgument):
        TOKENS.decode(flipped, query="a")


def test_keyset_tokens_round_trip_times_and_counts() -> None:
    row_id = uuid.uuid4()
    at = datetime.datetime(2026, 1, 1, 12, 30, tzinfo=datetime.UTC)
    token = TOKENS.keyset_token(Keyset(at, row_id), "q")
    assert TOKENS.keyset_after(token, "q", datetime.datetime) == Keyset(at, row_id)
    token = TOKENS.keyset_token(Keyset(41, row_id), "q")
    assert TOKENS.keyset_after(token, "q", int) == Keyset(41, row_id)
    assert TOKENS.keyset_token(None, "q") == ""
    assert TOKENS.keyset_after("", "q", int) is None


@pytest.mark.parametrize(
    ("position", "key_type"),
    [
        (["2026-01-01T00:00:00", str(uuid.uuid4())], datetime.datetime),  # naive time
        ([5, str(uuid.uuid4())], datetime.datetime),
        (["5", str(uuid.uuid4())], int),
        ([True, str(uuid.uuid4())], int),
        ([5, "not-a-uuid"], int),
        ([5, 7], int),
        ([5], int),
    ],
)
def test_a_signed_position_of_the_wrong_shape_is_invalid_argument(
    position: list[Any], key_type: type[SortKey]
) -> None:
    token = TOKENS.encode(position, "q")
    with pytest.raises(InvalidArgument) as error:
        TOKENS.keyset_after(token, "q", key_type)
    assert error.value.field == "page_token"


def test_sequence_tokens_round_trip_and_start_before_every_row() -> None:
    token = TOKENS.sequence_token(100, "edits")
    assert TOKENS.sequence_after(token, "edits") == 100
    assert TOKENS.sequence_after("", "edits") == 0
    assert TOKENS.sequence_token(None, "edits") == ""
    with pytest.raises(InvalidArgument, match="different query"):
        TOKENS.sequence_after(token, "other edits")


@pytest.mark.parametrize("position", [[], [1, 2], ["7"], [True], [-1], [1.5], [None]])
def test_a_signed_sequence_of_the_wrong_shape_is_invalid_argument(position: list[Any]) -> None:
    token = TOKENS.encode(position, "q")
    with pytest.raises(InvalidArgument) as error:
        TOKENS.sequence_after(token, "q")
    assert error.value.field == "page_token"


def test_fingerprints_are_unambiguous() -> None:
    assert query_fingerprint("a|b", "c") != query_fingerprint("a", "b|c")
    assert query_fingerprint("a", None) == query_fingerprint("a", "")


def test_fetch_one_more_pages() -> None:
    rows = [(n, uuid.UUID(int=n)) for n in range(5)]

    def position(row: tuple[int, uuid.UUID]) -> Keyset:
        return Keyset(row[0], row[1])

    assert fetch_limit(2) == 3
    page = page_of(rows[:3], 2, position)
    assert page.items == rows[:2]
    assert page.next_after == Keyset(1, uuid.UUID(int=1))
    last = page_of(rows[3:], 2, position)  # exactly a page: no next one
    assert last.items == rows[3:]
    assert last.next_after is None
    assert page_of([], 2, position) == Page(items=[], next_after=None)
