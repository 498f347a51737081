from __future__ import annotations

import pytest

from runtime.errors import InvalidArgument
from runtime.pagination import PageTokens

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
