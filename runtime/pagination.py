"""Keyset pagination: signed page tokens and the fetch-one-more page.

Every listing orders by a sort key and the row id (`ORDER BY key DESC, id DESC`) and
continues after the last row of the previous page (`(key, id) < (:key, :id)`), so a page
costs the same however deep it is. The pieces every service shares:

- `Keyset`: that position (a time or a count, plus the id).
- `PageTokens`: the opaque token carrying it. A token is base64url of a MAC and JSON of the
  position plus the query it belongs to (a fingerprint of everything that selects or orders
  the rows); a token from another query, a tampered or a forged one is INVALID_ARGUMENT on
  `page_token`. `keyset_after(token, query, key_type)` / `keyset_token(position, query)`
  read and write a `Keyset`; `sequence_after` / `sequence_token` the same for a listing
  ordered by a unique ascending number alone (a project's edits by `seq`); `decode` /
  `encode` are the raw JSON-list form beneath them.
- `fetch_limit(page_size)` and `page_of(rows, page_size, position)`: ask the repository for
  one row more than the page, and the extra row (never shown) says whether a next page
  exists, with no COUNT and no empty last page.

In the API layer:

    after = tokens.keyset_after(request.page_token, query, datetime.datetime)
    async with database.read() as session:
        page = await service.list(session, owner_id, after=after, page_size=page_size)
    next_token = tokens.keyset_token(page.next_after, query)

and in the service:

    rows = await Repository(session).list(owner_id, after=after, limit=fetch_limit(page_size))
    return page_of(rows, page_size, lambda row: Keyset(row.created_at, row.id))
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.errors import InvalidArgument

FIELD = "page_token"
MAX_TOKEN_CHARS = 2048

SortKey = int | datetime.datetime
T = TypeVar("T")


@dataclass(frozen=True)
class Keyset:
    """Where a page ends: the sort key and id of its last row."""

    key: SortKey
    id: uuid.UUID

    def to_json(self) -> list[Any]:
        key = self.key.isoformat() if isinstance(self.key, datetime.datetime) else self.key
        return [key, str(self.id)]

    @classmethod
    def from_json(cls, position: list[Any], key_type: type[SortKey]) -> Keyset:
        """Reads a decoded position back. Tokens are signed, so a bad one is our own bug or
        an old format; still refused as INVALID_ARGUMENT, never a 500."""
        try:
            raw_key, raw_id = position
            key: SortKey
            if key_type is datetime.datetime:
                if not isinstance(raw_key, str):
                    raise TypeError("time expected")
                key = datetime.datetime.fromisoformat(raw_key)
                if key.tzinfo is None:
                    raise ValueError("naive time")
            elif isinstance(raw_key, int) and not isinstance(raw_key, bool):
                key = raw_key
            else:
                raise TypeError("count expected")
            if not isinstance(raw_id, str):
                raise TypeError("id expected")
            return cls(key=key, id=uuid.UUID(raw_id))
        except (TypeError, ValueError) as error:
            raise InvalidArgument(FIELD, "is not a valid page token") from error


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_service(cls, service_name: str, internal_secret: str) -> PageTokens:
        """Signed with a key derived from the shared secret: the same on every replica and
        across restarts, different per service, and useless for anything else."""
        material = f"pixelshop page tokens\0{service_name}\0{internal_secret}".encode()
        return cls(hashlib.sha256(material).digest())

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, "sha256")[:12]  # one-shot, in C

    def encode(self, position: list[Any], query: str = "") -> str:
        payload = json.dumps({"p": position, "q": query}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode()

    def decode(self, token: str, query: str = "") -> list[Any] | None:
        """The position after which the next page starts; None for the first page."""
        if not token:
            return None
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidArgument(FIELD, "is too long")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError) as error:
            raise InvalidArgument(FIELD, "is not a valid page token") from error
        mac, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidArgument(FIELD, "is not a valid page token")
        data = json.loads(payload)
        if data.get("q") != query:
            raise InvalidArgument(FIELD, "belongs to a different query")
        position = data.get("p")
        if not isinstance(position, list):
            raise InvalidArgument(FIELD, "is not a valid page token")
        return position

    def keyset_token(self, position: Keyset | None, query: str = "") -> str:
        """The next page's token; "" (no more pages) when there is no position."""
        return "" if position is None else self.encode(position.to_json(), query)

    def keyset_after(
        self, token: str, query: str = "", key_type: type[SortKey] = datetime.datetime
    ) -> Keyset | None:
        """The position a token continues after; None for the first page."""
        position = self.decode(token, query)
        return None if position is None else Keyset.from_json(position, key_type)

    def sequence_token(self, after: int | None, query: str = "") -> str:
        """The next page's token for a listing by a unique number; "" when there is none."""
        return "" if after is None else self.encode([after], query)

    def sequence_after(self, token: str, query: str = "") -> int:
        """The number a token continues after; 0 (before every row) for the first page."""
        position = self.decode(token, query)
        if position is None:
            return 0
        if (
            len(position) != 1
            or not isinstance(position[0], int)
            or isinstance(position[0], bool)
            or position[0] < 0
        ):
            raise InvalidArgument(FIELD, "is not a valid page token")
        return position[0]


def query_fingerprint(*parts: object) -> str:
    """What a page token is bound to: every value that selects or orders the rows
    (the caller, filters, order, search words), unambiguously (JSON of their strings)."""
    return json.dumps(["" if part is None else str(part) for part in parts], separators=(",", ":"))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows, and where the next one starts (None on the last page)."""

    items: list[T]
    next_after: Keyset | None


def fetch_limit(page_size: int) -> int:
    """How many rows to fetch for a page: one more than asked tells whether another exists."""
    return page_size + 1


def page_of(rows: Sequence[T], page_size: int, position: Callable[[T], Keyset]) -> Page[T]:
    """Cuts rows fetched with `fetch_limit(page_size)` to the page; the extra row only says
    that a next page exists, which then starts after the page's last row."""
    items = list(rows[:page_size])
    more = len(rows) > page_size and bool(items)
    return Page(items=items, next_after=position(items[-1]) if more else None)
