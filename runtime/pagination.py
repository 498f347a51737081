"""Opaque, validated page tokens for keyset pagination.

A token is base64url JSON of the last row's sort key plus a fingerprint of the query's
filters; a token from another query, or one that was tampered with, is INVALID_ARGUMENT.
Tokens are signed, so a client cannot forge positions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from runtime.errors import InvalidArgument

FIELD = "page_token"


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
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:12]

    def encode(self, position: list[Any], query: str = "") -> str:
        payload = json.dumps({"p": position, "q": query}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).rstrip(b"=").decode()

    def decode(self, token: str, query: str = "") -> list[Any] | None:
        """The position after which the next page starts; None for the first page."""
        if not token:
            return None
        if len(token) > 2048:
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
