"""Errors specific to assets; each still is a runtime DomainError with a gRPC code."""

from __future__ import annotations

from runtime.errors import InvalidArgument, NotFound, Unavailable

CONTENT_FIELD = "content"


class InvalidContent(InvalidArgument):
    """The bytes are not an image we accept; `reason` says why for clients that branch."""

    def __init__(self, message: str, *, reason: str, field: str = CONTENT_FIELD) -> None:
        super().__init__(field, message, reason=reason)


class AssetNotFound(NotFound):
    """Missing, deleted, not ready, or someone else's: all look the same to a caller."""

    def __init__(self, asset_id: object) -> None:
        super().__init__("asset", str(asset_id))


class StorageUnavailable(Unavailable):
    """The object store failed; the operation can be retried."""

    def __init__(self, message: str = "object storage is unavailable, try again") -> None:
        super().__init__(message, reason="STORAGE_UNAVAILABLE")


class ObjectMissing(Exception):
    """An object the caller expected is not in the store (not an RPC error by itself)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
