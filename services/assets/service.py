"""Business rules of assets: ingest, reads, deletion and clean-up. No gRPC, no protobuf.

Reads run inside the caller's unit of work (api.py opens one per RPC and passes the
session). Ingest and deletion cannot: their correctness *is* the order of commits around
a side effect outside the database, so they open their own short transactions on the
`Database` they were given, and each commit point is named where it happens:

    upload:  reserve quota -> [commit: row pending] -> write objects -> [commit: ready]
             -> commit quota -> [commit: reservation settled]
    delete:  [commit: deleted] -> remove objects, credit quota -> [commit: purged]

A crash between two commits leaves a row that says what is unfinished (pending, deleted
but not purged, ready with an unsettled reservation), and the sweeper finishes or undoes
it. Objects are always written after their row exists and removed after it is gone, so
an object without a row is an orphan the sweeper may delete once it is old enough.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Database
from runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from runtime.peers.billing import STORAGE_BYTES, Quota
from runtime.peers.identity import TierInfo
from services.assets.errors import AssetNotFound, InvalidContent, ObjectMissing
from services.assets.filenames import content_disposition, sanitize_filename
from services.assets.imaging import (
    FORMATS_BY_MIME,
    ImageLimits,
    Rendition,
    ValidatedImage,
    check_byte_limit,
    megabytes,
    validate_image,
)
from services.assets.models import (
    INCOMING,
    ORIGINAL,
    THUMBNAIL,
    Asset,
    AssetKind,
    AssetState,
    Variant,
    object_key,
    owner_prefix,
)
from services.assets.repository import AssetRepository, ListPosition
from services.assets.settings import AssetsSettings
from services.assets.storage import (
    DIRECT_UPLOAD_NEEDS_S3,
    DOWNLOAD_URL_NEEDS_S3,
    READ_CHUNK_BYTES,
    ObjectStore,
    PresignedRequest,
)

log = logging.getLogger("pixelshop.assets")


class TierLookup(Protocol):
    """Where a user's plan limits come from (identity)."""

    async def user_tier(self, user_id: uuid.UUID) -> TierInfo: ...


@dataclass(frozen=True)
class AssetPage:
    assets: list[Asset]
    # Where the next page starts; None on the last page.
    next_position: ListPosition | None


@dataclass(frozen=True)
class AssetContent:
    """Which stored object a download reads, and how to present it."""

    asset: Asset
    storage_key: str
    mime_type: str
    size_bytes: int
    filename: str


@dataclass(frozen=True)
class DirectUpload:
    asset_id: uuid.UUID
    request: PresignedRequest


def reservation_key(asset_id: uuid.UUID) -> str:
    """Idempotency key of an asset's storage reservation: retries never reserve twice."""
    return f"asset:{asset_id}"


def credit_key(asset_id: uuid.UUID) -> str:
    """Idempotency key of the credit a deletion gives back: a retried purge credits once."""
    return f"asset-deleted:{asset_id}"


def _capped(tier_limit: int, ceiling: int) -> int:
    # A tier limit of 0 means "no limit"; the service's own ceiling still holds.
    return min(tier_limit, ceiling) if tier_limit > 0 else ceiling


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _variant_filename(asset: Asset, variant: Variant) -> str:
    stem = asset.filename.rpartition(".")[0] or asset.filename
    extension = FORMATS_BY_MIME[variant.mime_type].extensions[0]
    return f"{stem}-{variant.name}.{extension}"


class AssetService:
    def __init__(
        self,
        *,
        database: Database,
        store: ObjectStore,
        quota: Quota,
        tiers: TierLookup,
        settings: AssetsSettings,
    ) -> None:
        self._database = database
        self._store = store
        self._quota = quota
        self._tiers = tiers
        self._settings = settings
        # Each decode may hold a full bitmap: bound how many run at once.
        self._decode_slots = asyncio.Semaphore(settings.decode_concurrency)

    @property
    def store(self) -> ObjectStore:
        return self._store

    async def limits(self, owner_id: uuid.UUID) -> ImageLimits:
        tier = await self._tiers.user_tier(owner_id)
        return ImageLimits(
            max_bytes=_capped(tier.max_upload_bytes, self._settings.max_upload_bytes),
            max_pixels=_capped(tier.max_pixels, self._settings.max_pixels),
        )

    # -- reads: inside the caller's unit of work ----------------------------------------

    async def get(self, session: AsyncSession, owner_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
        """The owner's ready asset; anything else (missing, deleted, pending, someone
        else's) is the same NOT_FOUND."""
        asset = await AssetRepository(session).get_listed(owner_id, asset_id)
        if asset is None:
            raise AssetNotFound(asset_id)
        return asset

    async def list_assets(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        *,
        kind: AssetKind | None,
        after: ListPosition | None,
        page_size: int,
    ) -> AssetPage:
        found = await AssetRepository(session).list_listed(
            owner_id, kind=kind, after=after, limit=page_size + 1
        )
        page = found[:page_size]
        more = len(found) > page_size
        return AssetPage(page, (page[-1].created_at, page[-1].id) if more else None)

    async def locate(
        self, session: AsyncSession, owner_id: uuid.UUID, asset_id: uuid.UUID, variant: str
    ) -> AssetContent:
        """The object behind the asset ("" = the original) or one of its variants."""
        asset = await self.get(session, owner_id, asset_id)
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

    # -- ingest: its own commits ----------------------------------------------------------

    async def upload(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        *,
        filename: str,
        kind: AssetKind = AssetKind.UPLOAD,
    ) -> Asset:
        """Validates `data` by its content and stores it as a ready asset."""
        limits = await self.limits(owner_id)
        image = await self._validate(data, limits)
        return await self._ingest(owner_id, data, image, filename, kind, None)

    async def upload_stream(
        self,
        owner_id: uuid.UUID,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        kind: AssetKind,
        idempotency_key: str | None = None,
    ) -> Asset:
        """Like `upload`, reading the bytes from a stream that is abandoned as soon as it
        grows past the owner's limit; a retry with a known key and the same bytes answers
        the asset stored the first time."""
        limits = await self.limits(owner_id)
        received = bytearray()
        async for chunk in chunks:
            received += chunk
            if len(received) > limits.max_bytes:
                raise InvalidContent(
                    f"is larger than your plan's limit of {megabytes(limits.max_bytes)} per upload",
                    reason="UPLOAD_TOO_LARGE",
                )
        data = bytes(received)
        if idempotency_key and (existing := await self._existing(owner_id, idempotency_key, data)):
            return existing
        image = await self._validate(data, limits)
        return await self._ingest(owner_id, data, image, filename, kind, idempotency_key)

    async def _existing(
        self, owner_id: uuid.UUID, idempotency_key: str, data: bytes
    ) -> Asset | None:
        """The asset already stored under the key, if `data` is what it holds."""
        async with self._database.transaction() as session:
            asset = await AssetRepository(session).find_by_idempotency_key(
                owner_id, idempotency_key
            )
        if asset is None:
            return None
        if asset.deleted_at is not None:
            raise FailedPrecondition("the asset stored with this idempotency_key was deleted")
        if asset.state is AssetState.PENDING:
            raise Aborted("an upload with this idempotency_key is in progress; retry shortly")
        if await asyncio.to_thread(_sha256, data) != asset.sha256:
            raise FailedPrecondition(
                "idempotency_key was already used for different content",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return asset

    async def _validate(self, data: bytes, limits: ImageLimits) -> ValidatedImage:
        check_byte_limit(len(data), limits)  # cheap: before waiting for a decode slot
        await self._decode_slots.acquire()
        # The slot belongs to the worker thread, not to this call: a cancelled call (the
        # client went away) cannot stop the thread, so the slot is freed when it ends.
        decoding = asyncio.ensure_future(asyncio.to_thread(validate_image, data, limits))
        decoding.add_done_callback(self._decode_done)
        return await asyncio.shield(decoding)

    def _decode_done(self, decoding: asyncio.Future[ValidatedImage]) -> None:
        self._decode_slots.release()
        if not decoding.cancelled():
            decoding.exception()  # an abandoned decode's error is not worth a warning

    async def _ingest(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        image: ValidatedImage,
        filename: str,
        kind: AssetKind,
        idempotency_key: str | None,
    ) -> Asset:
        asset_id = uuid.uuid4()
        reservation = await self._quota.reserve(
            owner_id, STORAGE_BYTES, image.size_bytes, reservation_key(asset_id)
        )
        try:
            # Commit point: the intent is on record before any object exists, so whatever
            # happens from here on leaves a row the sweeper can find.
            async with self._database.transaction() as session:
                pending = await AssetRepository(session).insert_pending(
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
                    idempotency_key=idempotency_key,
                    reservation_id=reservation,
                )
        except BaseException:
            await self._release(reservation)
            raise
        if pending is None:  # a concurrent call with the same idempotency key won
            await self._release(reservation)
            assert idempotency_key is not None
            existing = await self._existing(owner_id, idempotency_key, data)
            if existing is None:
                raise Aborted("a concurrent upload with this idempotency_key failed; retry")
            return existing
        return await self._complete(pending, data, image)

    async def _complete(self, pending: Asset, data: bytes, image: ValidatedImage) -> Asset:
        """Writes the objects of a pending row, then makes it ready; undoes it on failure."""
        thumbnail = self._thumbnail_variant(pending, image.thumbnail)
        try:
            await self._store.put(pending.storage_key, data, image.format.mime_type)
            await self._store.put(thumbnail.storage_key, image.thumbnail.data, thumbnail.mime_type)
            # Commit point: ready only now that every object is stored.
            async with self._database.transaction() as session:
                repository = AssetRepository(session)
                made_ready = await repository.mark_ready(
                    pending.id,
                    mime_type=image.format.mime_type,
                    size_bytes=image.size_bytes,
                    width=image.width,
                    height=image.height,
                    sha256=image.sha256,
                    filename=sanitize_filename(pending.filename, image.format.extensions),
                    variants=[thumbnail],
                )
                if not made_ready:
                    raise Aborted("the upload took too long and was abandoned; try again")
                ready = await repository.get(pending.id)
        except (Exception, asyncio.CancelledError):
            # Not BaseException: SystemExit and the like mean the process is going away,
            # and then the sweeper, not this handler, cleans up.
            await self._abandon(pending)
            raise
        assert ready is not None
        if ready.reservation_id:
            await self._settle(ready.id, ready.reservation_id)
        return ready

    @staticmethod
    def _thumbnail_variant(asset: Asset, rendition: Rendition) -> Variant:
        return Variant(
            name=THUMBNAIL,
            storage_key=object_key(asset.owner_id, asset.id, THUMBNAIL),
            mime_type=rendition.mime_type,
            size_bytes=len(rendition.data),
            width=rendition.width,
            height=rendition.height,
        )

    async def _settle(self, asset_id: uuid.UUID, reservation_id: str) -> bool:
        """Commits the storage reservation of a ready asset, then records that it did;
        a failure leaves the reservation on the row for the sweeper to retry."""
        try:
            await self._quota.commit(reservation_id)
            async with self._database.transaction() as session:
                await AssetRepository(session).clear_reservation(asset_id, reservation_id)
        except Exception as error:
            log.warning(
                "storage reservation not settled; the sweeper retries",
                extra={"asset_id": str(asset_id)},
                exc_info=error,
            )
            return False
        return True

    async def _release(self, reservation_id: str | None) -> None:
        if not reservation_id:
            return
        try:
            await self._quota.release(reservation_id)
        except Exception as error:
            # Billing expires reservations nobody commits; this one just waits for that.
            log.warning("storage reservation not released", exc_info=error)

    async def _abandon(self, pending: Asset) -> None:
        """Best-effort undo of an ingest that failed: the row first (only if still
        pending), then its objects and reservation. Whatever fails here is left to the
        sweeper, which finds the pending row or the orphaned objects later."""
        try:
            async with self._database.transaction() as session:
                repository = AssetRepository(session)
                current = await repository.get(pending.id, for_update=True)
                if current is not None and current.state is AssetState.READY:
                    return  # it became ready after all (e.g. the commit's answer was lost)
                if current is not None:
                    await repository.delete_pending(pending.id)
        except Exception as error:
            log.warning(
                "could not undo a failed upload; the sweeper will",
                extra={"asset_id": str(pending.id)},
                exc_info=error,
            )
            return
        try:
            await self._remove_objects(pending)
        except Exception as error:
            log.warning(
                "objects of a failed upload remain; the sweeper removes them", exc_info=error
            )
        await self._release(pending.reservation_id)

    async def _remove_objects(self, asset: Asset) -> None:
        # Known keys plus whatever else lies under the asset's folder (a thumbnail written
        # before a failure, a temporary file of the directory backend).
        listed = await self._store.list_objects(asset.prefix)
        for key in sorted({*asset.object_keys, *(o.key for o in listed)}):
            await self._store.delete(key)

    # -- direct upload (S3 only) ---------------------------------------------------------

    async def create_upload_url(
        self, owner_id: uuid.UUID, *, filename: str, content_type: str, size_bytes: int
    ) -> DirectUpload:
        """A pending asset and a presigned PUT for exactly this type and size."""
        if not self._store.supports_presigned_urls:
            raise FailedPrecondition(DIRECT_UPLOAD_NEEDS_S3)
        announced = FORMATS_BY_MIME.get(content_type)
        if announced is None:
            raise InvalidArgument(
                "content_type", f"must be one of {', '.join(sorted(FORMATS_BY_MIME))}"
            )
        limits = await self.limits(owner_id)
        check_byte_limit(size_bytes, limits, field="size_bytes")
        asset_id = uuid.uuid4()
        reservation = await self._quota.reserve(
            owner_id, STORAGE_BYTES, size_bytes, reservation_key(asset_id)
        )
        try:
            # Commit point: the row exists before the client can write the object.
            async with self._database.transaction() as session:
                pending = await AssetRepository(session).insert_pending(
                    asset_id=asset_id,
                    owner_id=owner_id,
                    kind=AssetKind.UPLOAD,
                    storage_key=object_key(owner_id, asset_id, ORIGINAL),
                    filename=sanitize_filename(filename, announced.extensions),
                    size_bytes=size_bytes,
                    reservation_id=reservation,
                    direct_upload=True,
                )
        except BaseException:
            await self._release(reservation)
            raise
        assert pending is not None  # no idempotency key, so no conflict
        try:
            request = await self._store.presigned_put(
                object_key(owner_id, asset_id, INCOMING),
                content_type=content_type,
                size_bytes=size_bytes,
                expires_in=self._settings.upload_url_expiry_seconds,
            )
        except (Exception, asyncio.CancelledError):
            await self._abandon(pending)
            raise
        return DirectUpload(asset_id, request)

    async def confirm_upload(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
        """Reads a direct upload back and validates it exactly like an upload; an object
        that fails is deleted with its row. Confirming twice answers the same asset."""
        async with self._database.transaction() as session:
            asset = await AssetRepository(session).get(asset_id)
        if (
            asset is None
            or asset.owner_id != owner_id
            or asset.deleted_at is not None
            or not asset.direct_upload
        ):
            raise AssetNotFound(asset_id)
        if asset.state is AssetState.READY:
            return asset
        incoming = object_key(asset.owner_id, asset.id, INCOMING)
        stored = await self._store.head(incoming)
        if stored is None:
            raise FailedPrecondition("nothing has been uploaded to the upload URL yet")
        try:
            if stored.size_bytes != asset.size_bytes:
                raise InvalidContent(
                    f"is {stored.size_bytes} bytes, not the {asset.size_bytes} announced",
                    reason="SIZE_MISMATCH",
                )
            limits = await self.limits(owner_id)
            check_byte_limit(stored.size_bytes, limits)  # before reading it
            data = await self._store.get(incoming)
            image = await self._validate(data, limits)
        except InvalidArgument:
            await self._abandon(asset)
            raise
        except ObjectMissing:
            raise FailedPrecondition("nothing has been uploaded to the upload URL yet") from None
        ready = await self._complete(asset, data, image)
        try:
            await self._store.delete(incoming)
        except Exception as error:
            # Not part of the asset any more: the orphan sweep removes it later.
            log.warning("could not remove a confirmed upload's incoming object", exc_info=error)
        return ready

    # -- deletion: its own commits --------------------------------------------------------

    async def delete(self, owner_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> int:
        """Soft-deletes the owner's assets among `asset_ids` (others are ignored) and
        removes their objects right away; answers how many were deleted."""
        async with self._database.transaction() as session:
            deleted = await AssetRepository(session).soft_delete(owner_id, asset_ids)
        # Committed: the assets are gone for every reader. Whatever fails from here on
        # stays on record (deleted, not purged) and the sweeper finishes it.
        if deleted:
            try:
                await self.purge_deleted(asset_ids=deleted, limit=len(deleted))
            except Exception as error:
                log.warning("purge after delete failed; the sweeper retries", exc_info=error)
        return len(deleted)

    async def purge_deleted(
        self,
        *,
        limit: int,
        asset_ids: list[uuid.UUID] | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> int:
        """Removes the objects of deleted assets and credits their storage back.

        Rows are locked with SKIP LOCKED, so the request that deleted them and any number
        of sweepers never work on the same asset twice at once; the credit is idempotent
        on the asset, so a purge retried after a crash credits once."""
        async with self._database.transaction() as session:
            repository = AssetRepository(session)
            batch = await repository.lock_awaiting_purge(
                limit=limit, asset_ids=asset_ids, owner_id=owner_id
            )
            purged = []
            for asset in batch:
                try:
                    await self._remove_objects(asset)
                    await self._quota.credit(
                        asset.owner_id, STORAGE_BYTES, asset.size_bytes, credit_key(asset.id)
                    )
                except Exception as error:
                    log.warning(
                        "could not purge a deleted asset; retried later",
                        extra={"asset_id": str(asset.id)},
                        exc_info=error,
                    )
                    continue
                purged.append(asset.id)
            if purged:
                await repository.mark_purged(purged)
        return len(purged)

    async def abandon_stuck_pending(
        self,
        *,
        limit: int,
        created_before: datetime.datetime | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> int:
        """Deletes pending rows (older than `created_before`) with their objects and
        releases their reservations: uploads that crashed or were never confirmed."""
        async with self._database.transaction() as session:
            repository = AssetRepository(session)
            batch = await repository.lock_stuck_pending(
                limit=limit, created_before=created_before, owner_id=owner_id
            )
            removed = []
            for asset in batch:
                try:
                    await self._remove_objects(asset)
                except Exception as error:
                    log.warning("could not remove a stuck upload's objects", exc_info=error)
                    continue
                removed.append(asset)
            if removed:
                await repository.delete_rows([asset.id for asset in removed])
        for asset in removed:
            await self._release(asset.reservation_id)
        return len(removed)

    async def settle_reservations(self, *, limit: int, created_before: datetime.datetime) -> int:
        """Retries reservation commits of ready assets whose first attempt failed."""
        async with self._database.transaction() as session:
            batch = await AssetRepository(session).unsettled(
                created_before=created_before, limit=limit
            )
        settled = 0
        for asset in batch:
            if asset.reservation_id and await self._settle(asset.id, asset.reservation_id):
                settled += 1
        return settled

    async def purge_user(self, owner_id: uuid.UUID) -> int:
        """Deletes everything the user stored: rows, objects, even leftovers of uploads
        that crashed. Answers how many assets the user had; safe to repeat."""
        batch = self._settings.sweep_batch_size
        async with self._database.transaction() as session:
            deleted = await AssetRepository(session).soft_delete(owner_id)
        while await self.abandon_stuck_pending(limit=batch, owner_id=owner_id) == batch:
            pass
        while await self.purge_deleted(limit=batch, owner_id=owner_id) == batch:
            pass
        async with self._database.transaction() as session:
            repository = AssetRepository(session)
            if await repository.count_awaiting_purge(owner_id):
                raise Unavailable("some of the user's objects could not be removed; retry")
            await repository.delete_purged_of_owner(owner_id)
        # Anything still under the user's folder has no row: remove it now rather than
        # wait for the orphan sweep.
        prefix, start_after = owner_prefix(owner_id), ""
        while leftovers := await self._store.list_objects(prefix, start_after=start_after):
            for stored in leftovers:
                await self._store.delete(stored.key)
            start_after = leftovers[-1].key
        return len(deleted)
