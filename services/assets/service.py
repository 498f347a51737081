"""Business rules of assets, inside the caller's unit of work. No gRPC, no protobuf.

The service holds no session and never commits: api.py opens one transaction per plain
RPC, and the workflows (workflows.py) open one short transaction per recorded step; either
passes its `session` in. What the rules are:

- only the owner's ready, undeleted asset exists for a reader; anything else (missing,
  deleted, pending, someone else's) is the same NOT_FOUND;
- a write that makes a user's data visible (the pending row of an upload, the ready
  commit) first calls the tombstone guard, so nothing is written for a deleted account
  after its tombstone (runtime/tombstones.py);
- an idempotency key answers the asset stored under it only for the same bytes.

Reading content (the object store, outside any transaction) is here too; everything that
writes to the store or calls billing is a workflow.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from runtime.pagination import Keyset, Page, fetch_limit, page_of
from services.assets.errors import AssetNotFound, ObjectMissing
from services.assets.filenames import content_disposition, sanitize_filename
from services.assets.imaging import FORMATS_BY_MIME, Rendition, ValidatedImage
from services.assets.models import (
    ORIGINAL,
    THUMBNAIL,
    Asset,
    AssetKind,
    IdempotencyScope,
    Variant,
    object_key,
)
from services.assets.repository import AssetReads, AssetRepository
from services.assets.settings import AssetsSettings
from services.assets.storage import (
    DOWNLOAD_URL_NEEDS_S3,
    READ_CHUNK_BYTES,
    ObjectStore,
    PresignedRequest,
)

log = logging.getLogger("pixelshop.assets")

KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


class WriteGuard(Protocol):
    """Refuses a write for a deleted user (runtime.tombstones.Tombstones)."""

    async def guard_write(self, session: AsyncSession, user_id: uuid.UUID) -> None: ...


@dataclass(frozen=True)
class AssetContent:
    """Which stored object a download reads, and how to present it."""

    asset: Asset
    storage_key: str
    mime_type: str
    size_bytes: int
    filename: str


@dataclass(frozen=True)
class RetryKey:
    """A client's idempotency key and where it came from."""

    scope: IdempotencyScope
    key: str


def _variant_filename(asset: Asset, variant: Variant) -> str:
    stem = asset.filename.rpartition(".")[0] or asset.filename
    extension = FORMATS_BY_MIME[variant.mime_type].extensions[0]
    return f"{stem}-{variant.name}.{extension}"


def thumbnail_variant(asset: Asset, rendition: Rendition) -> Variant:
    return Variant(
        name=THUMBNAIL,
        storage_key=object_key(asset.owner_id, asset.id, THUMBNAIL),
        mime_type=rendition.mime_type,
        size_bytes=len(rendition.data),
        width=rendition.width,
        height=rendition.height,
    )


def same_content(asset: Asset, sha256: str) -> Asset:
    """The asset stored under a retried key, if the retry carries the same bytes.

    Other bytes under a used key are another image, and answering the first one would
    silently lose them: a public upload answers ALREADY_EXISTS (HTTP 409), StoreAsset
    keeps its documented FAILED_PRECONDITION (runtime/peers/assets.py maps it)."""
    if asset.deleted_at is not None:
        raise FailedPrecondition("the asset stored with this idempotency key was deleted")
    if asset.sha256 is not None and asset.sha256 != sha256:
        if asset.idempotency_scope is IdempotencyScope.STORE:
            raise FailedPrecondition(
                "idempotency_key was already used for different content", reason=KEY_REUSED
            )
        raise AlreadyExists(
            "this Idempotency-Key was already used for a different image; "
            "send a new key with new content",
            reason=KEY_REUSED,
        )
    return asset


class AssetService:
    def __init__(self, *, store: ObjectStore, settings: AssetsSettings, guard: WriteGuard) -> None:
        self._store = store
        self._settings = settings
        self._guard = guard

    @property
    def store(self) -> ObjectStore:
        return self._store

    # -- reads --------------------------------------------------------------------------

    async def get(self, reads: AssetReads, owner_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
        asset = await reads.get_listed(owner_id, asset_id)
        if asset is None:
            raise AssetNotFound(asset_id)
        return asset

    async def list_assets(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        *,
        kind: AssetKind | None,
        after: Keyset | None,
        page_size: int,
    ) -> Page[Asset]:
        """One page of the owner's ready assets, newest first."""
        found = await AssetRepository(session).list_listed(
            owner_id, kind=kind, after=after, limit=fetch_limit(page_size)
        )
        return page_of(found, page_size, lambda asset: Keyset(asset.created_at, asset.id))

    async def locate(
        self, reads: AssetReads, owner_id: uuid.UUID, asset_id: uuid.UUID, variant: str
    ) -> AssetContent:
        """The object behind the asset ("" = the original) or one of its variants."""
        asset = await self.get(reads, owner_id, asset_id)
        if not variant:
            assert asset.mime_type is not None  # ready rows always have one (CHECK)
            return AssetContent(
                asset, asset.storage_key, asset.mime_type, asset.size_bytes, asset.filename
            )
        found = asset.variant(variant)
        if found is None:
            raise NotFound("variant", variant)
        return AssetContent(
            asset,
            found.storage_key,
            found.mime_type,
            found.size_bytes,
            _variant_filename(asset, found),
        )

    async def owned_direct_upload(
        self, session: AsyncSession, owner_id: uuid.UUID, asset_id: uuid.UUID
    ) -> Asset:
        """The owner's direct upload, pending or ready (ConfirmUpload reads it first)."""
        asset = await AssetRepository(session).get(asset_id)
        if (
            asset is None
            or asset.owner_id != owner_id
            or asset.deleted_at is not None
            or not asset.direct_upload
        ):
            raise AssetNotFound(asset_id)
        return asset

    async def stored_under(
        self, session: AsyncSession, owner_id: uuid.UUID, retry: RetryKey
    ) -> Asset | None:
        return await AssetRepository(session).find_by_idempotency_key(
            owner_id, retry.scope, retry.key
        )

    # -- content, outside any transaction -------------------------------------------------

    async def read(self, content: AssetContent) -> bytes:
        try:
            return await self._store.get(content.storage_key)
        except ObjectMissing:
            raise self._lost(content) from None

    async def stream(
        self, content: AssetContent, chunk_size: int = READ_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._store.stream(content.storage_key, chunk_size):
                yield chunk
        except ObjectMissing:
            raise self._lost(content) from None

    @staticmethod
    def _lost(content: AssetContent) -> AssetNotFound:
        # A ready row always has its object; if not, something outside this service
        # removed it. Say so loudly in the log, and answer as for a missing asset.
        log.error(
            "object of a ready asset is missing",
            extra={"asset_id": str(content.asset.id), "key": content.storage_key},
        )
        return AssetNotFound(content.asset.id)

    async def download_url(self, content: AssetContent) -> PresignedRequest:
        if not self._store.supports_presigned_urls:
            raise FailedPrecondition(DOWNLOAD_URL_NEEDS_S3)
        return await self._store.presigned_get(
            content.storage_key,
            expires_in=self._settings.download_url_expiry_seconds,
            content_type=content.mime_type,
            content_disposition=content_disposition(content.filename),
        )

    # -- recorded steps of the workflows ------------------------------------------------

    async def record_upload(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        image: ValidatedImage,
        *,
        filename: str,
        kind: AssetKind,
        retry: RetryKey | None,
    ) -> Asset | None:
        """The pending row of a validated upload; None when `retry` is already taken."""
        await self._guard.guard_write(session, owner_id)
        asset_id = uuid.uuid4()
        return await AssetRepository(session).insert_pending(
            asset_id=asset_id,
            owner_id=owner_id,
            kind=kind,
            storage_key=object_key(owner_id, asset_id, ORIGINAL),
            filename=sanitize_filename(filename, image.format.extensions),
            size_bytes=image.size_bytes,
            mime_type=image.format.mime_type,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            idempotency_key=retry.key if retry else None,
            idempotency_scope=retry.scope if retry else None,
        )

    async def record_direct_upload(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        *,
        filename: str,
        content_type: str,
        size_bytes: int,
    ) -> Asset:
        await self._guard.guard_write(session, owner_id)
        asset_id = uuid.uuid4()
        pending = await AssetRepository(session).insert_pending(
            asset_id=asset_id,
            owner_id=owner_id,
            kind=AssetKind.UPLOAD,
            storage_key=object_key(owner_id, asset_id, ORIGINAL),
            filename=sanitize_filename(filename, FORMATS_BY_MIME[content_type].extensions),
            size_bytes=size_bytes,
            direct_upload=True,
        )
        assert pending is not None  # no idempotency key, so no conflict
        return pending

    async def make_ready(
        self, session: AsyncSession, pending: Asset, image: ValidatedImage
    ) -> Asset | None:
        """The pending row made ready with its thumbnail; None when it can no longer be
        (abandoned, deleted, purged). Refused for a deleted user."""
        await self._guard.guard_write(session, pending.owner_id)
        repository = AssetRepository(session)
        made_ready = await repository.mark_ready(
            pending.id,
            mime_type=image.format.mime_type,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            filename=sanitize_filename(pending.filename, image.format.extensions),
            variants=[thumbnail_variant(pending, image.thumbnail)],
        )
        return await repository.get(pending.id) if made_ready else None

    async def refuse_if_deleted(self, session: AsyncSession, owner_id: uuid.UUID) -> None:
        """UNAUTHENTICATED when the owner's account was deleted (the tombstone guard)."""
        await self._guard.guard_write(session, owner_id)

    async def is_ready(self, session: AsyncSession, asset_id: uuid.UUID) -> bool:
        return await AssetRepository(session).is_ready(asset_id)
