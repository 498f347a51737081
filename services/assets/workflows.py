"""The workflows of assets: every operation that writes to the object store or calls
billing, as a sequence of committed steps (ADR 0011), and the sweeper that resumes them.

Each step either records (one short transaction that commits) or acts (one object-store or
billing call, with no transaction and no pooled connection open; the adapters refuse
otherwise). A crash between two steps leaves a row that says what is unfinished, and the
sweeper drives it forward or back with the same step functions. `checkpoint(...)` names
every gap between two steps, so the tests crash a run at each one.

    upload:   validate -> [pending] -> reserve -> [reservation] -> put original, thumbnail
              -> [ready] -> commit reservation -> [settled]
    direct:   [pending] -> reserve -> [reservation] -> presign;  confirm: read incoming,
              validate -> put original, thumbnail -> [ready] -> delete incoming -> commit
              reservation -> [settled]
    delete:   [deleted, leased] -> remove objects, commit, credit -> [purged]
    abandon:  [claimed] -> remove objects, release -> [row gone]
    user:     [every row deleted or claimed] -> purge and abandon in batches -> [rows gone]
              -> remove what no row accounts for under the user's folder

Idempotency: reservations are keyed by the asset id, credits by the deleted asset, object
keys by ids; a client's retry key (`Idempotency-Key` header, StoreAsset's header key) is
unique per owner and scope, so a retry with the same bytes finds the first asset and a
concurrent duplicate waits for it, with no second reservation and no second object.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import random
import uuid
from collections.abc import AsyncIterable, Awaitable
from dataclasses import asdict, dataclass, replace

from runtime.clock import Clock, utc_now
from runtime.db import Database
from runtime.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    QuotaExceeded,
    Unauthenticated,
    Unavailable,
)
from runtime.peers.billing import Metric, Quota
from runtime.peers.identity import TierLookup
from runtime.periodic import every
from runtime.workflow import checkpoint
from services.assets.decoding import DecodeSlots
from services.assets.errors import InvalidContent, ObjectMissing
from services.assets.imaging import (
    FORMATS_BY_MIME,
    ImageLimits,
    ValidatedImage,
    check_byte_limit,
    megabytes,
    validate_image,
)
from services.assets.models import (
    INCOMING,
    OBJECTS_PREFIX,
    Asset,
    AssetKind,
    AssetState,
    asset_id_of_key,
    object_key,
    owner_prefix,
)
from services.assets.repository import AssetRepository
from services.assets.service import AssetService, RetryKey, same_content, thumbnail_variant
from services.assets.settings import AssetsSettings
from services.assets.storage import (
    DIRECT_UPLOAD_NEEDS_S3,
    ObjectStore,
    PresignedRequest,
    StoredObject,
)

log = logging.getLogger("pixelshop.assets")

# A ready row keeps its reservation id only between "ready" and the quota commit, which
# the request itself does a moment later; the sweeper retries only after this long.
SETTLE_AFTER = datetime.timedelta(minutes=5)


def reservation_key(asset_id: uuid.UUID) -> str:
    """Idempotency key of an asset's storage reservation: retries never reserve twice."""
    return f"asset:{asset_id}"


def surplus_key(asset_id: uuid.UUID) -> str:
    """Idempotency key of the credit that gives back what a caller's reservation held
    beyond the stored bytes."""
    return f"asset-surplus:{asset_id}"


def credit_key(asset_id: uuid.UUID) -> str:
    """Idempotency key of the credit a deletion gives back: a retried purge credits once."""
    return f"asset-deleted:{asset_id}"


def _capped(tier_limit: int, ceiling: int) -> int:
    # A tier limit of 0 means "no limit"; the service's own ceiling still holds.
    return min(tier_limit, ceiling) if tier_limit > 0 else ceiling


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _to_the_end(write: Awaitable[None]) -> None:
    """Lets an object write finish even when the caller is cancelled (the client went
    away), then passes the cancellation on. A write runs in a worker thread that nobody
    can stop: were the clean-up to run first, the object would land after it, with no
    row, until the orphan sweep."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            with contextlib.suppress(Exception):
                await task
        raise


@dataclass(frozen=True)
class HandedReservation:
    """A storage reservation the caller made for the bytes it stores (StoreAsset): assets
    commits it instead of reserving anew, so nothing can take the room in between."""

    reservation_id: str
    reserved_bytes: int


@dataclass(frozen=True)
class DirectUpload:
    asset_id: uuid.UUID
    request: PresignedRequest


@dataclass(frozen=True)
class SweepReport:
    abandoned_pending: int = 0
    purged_deleted: int = 0
    settled_reservations: int = 0
    removed_orphans: int = 0


class AssetWorkflows:
    def __init__(
        self,
        *,
        database: Database,
        service: AssetService,
        store: ObjectStore,
        quota: Quota,
        tiers: TierLookup,
        settings: AssetsSettings,
        clock: Clock = utc_now,
    ) -> None:
        self._database = database
        self._service = service
        self._store = store
        self._quota = quota
        self._tiers = tiers
        self._settings = settings
        self._clock = clock
        self._lease = datetime.timedelta(seconds=settings.sweep_lease_seconds)
        self.decode_slots = DecodeSlots(settings.decode_concurrency, settings.decode_per_user)

    async def limits(self, owner_id: uuid.UUID) -> ImageLimits:
        tier = await self._tiers.tier(owner_id)
        return ImageLimits(
            max_bytes=_capped(tier.max_upload_bytes, self._settings.max_upload_bytes),
            max_pixels=_capped(tier.max_pixels, self._settings.max_pixels),
        )

    def _lease_until(self, now: datetime.datetime | None = None) -> datetime.datetime:
        return (now or self._clock()) + self._lease

    # -- upload ---------------------------------------------------------------------------

    async def upload(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        *,
        filename: str,
        kind: AssetKind = AssetKind.UPLOAD,
        retry: RetryKey | None = None,
        handed: HandedReservation | None = None,
    ) -> Asset:
        """Validates `data` by its content and stores it as a ready asset.

        With a retry key: the same key and the same bytes answer the asset stored the
        first time (no second reservation, no second object); an upload with the key that
        is still pending (in flight, or crashed) is resumed from its recorded intent,
        since every step is idempotent; other bytes under the key are refused."""
        limits = await self.limits(owner_id)
        check_byte_limit(len(data), limits)  # cheap: before hashing or waiting for a slot
        stored = None
        if retry:
            sha256 = await asyncio.to_thread(_sha256, data)
            stored = await self._stored_under(owner_id, retry, sha256)
            if stored is not None and stored.state is AssetState.READY:
                return stored
        image = await self.decode_slots.run(owner_id, validate_image, data, limits)
        pending = stored or await self._record_upload(owner_id, image, filename, kind, retry)
        if pending.state is AssetState.READY:
            return pending
        await checkpoint("assets.upload.pending_recorded")
        pending = await self._reserve(pending, "assets.upload", handed)
        if pending.state is AssetState.READY:
            return pending
        ready = await self._complete(pending, data, image, "assets.upload")
        if ready.reservation_id:
            await self._settle(ready, "assets.upload")
        return ready

    async def upload_stream(
        self,
        owner_id: uuid.UUID,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        kind: AssetKind,
        retry: RetryKey | None = None,
        handed: HandedReservation | None = None,
    ) -> Asset:
        """Like `upload`, reading the bytes from a stream that is abandoned as soon as it
        grows past the owner's limit."""
        limits = await self.limits(owner_id)
        received = bytearray()
        async for chunk in chunks:
            received += chunk
            if len(received) > limits.max_bytes:
                raise InvalidContent(
                    f"is larger than your plan's limit of {megabytes(limits.max_bytes)} per upload",
                    reason="UPLOAD_TOO_LARGE",
                )
        return await self.upload(
            owner_id, bytes(received), filename=filename, kind=kind, retry=retry, handed=handed
        )

    async def _stored_under(
        self, owner_id: uuid.UUID, retry: RetryKey, sha256: str
    ) -> Asset | None:
        """The asset (ready or still pending) stored under the key, if it holds these
        bytes; AlreadyExists when it holds others."""
        async with self._database.transaction() as session:
            found = await self._service.stored_under(session, owner_id, retry)
        return None if found is None else same_content(found, sha256)

    async def _record_upload(
        self,
        owner_id: uuid.UUID,
        image: ValidatedImage,
        filename: str,
        kind: AssetKind,
        retry: RetryKey | None,
    ) -> Asset:
        """The pending row, or (when a concurrent upload with the same key won the
        insert) that upload's row."""
        for _ in range(3):
            async with self._database.transaction() as session:
                pending = await self._service.record_upload(
                    session, owner_id, image, filename=filename, kind=kind, retry=retry
                )
            if pending is not None:
                return pending
            assert retry is not None  # only a key can conflict
            if stored := await self._stored_under(owner_id, retry, image.sha256):
                return stored
        raise Aborted("concurrent uploads with this idempotency key failed; retry")

    async def _reserve(
        self, pending: Asset, steps: str, handed: HandedReservation | None = None
    ) -> Asset:
        """Reserves the pending row's storage with billing (or takes the caller's
        reservation when it covers the bytes) and records the reservation; undoes the row
        when that fails (over quota, billing down, abandoned meanwhile). Answers the ready
        asset instead when a concurrent retry completed it."""
        reserved_bytes: int | None = None
        try:
            if handed is not None and handed.reserved_bytes >= pending.size_bytes:
                reservation, reserved_bytes = handed.reservation_id, handed.reserved_bytes
            else:
                reservation = await self._quota.reserve(
                    pending.owner_id,
                    Metric.STORAGE_BYTES,
                    pending.size_bytes,
                    reservation_key(pending.id),
                )
        except (Exception, asyncio.CancelledError):
            await self._abandon(pending)
            raise
        pending = replace(pending, reservation_id=reservation, reserved_bytes=reserved_bytes)
        await checkpoint(f"{steps}.reserved")
        try:
            async with self._database.transaction() as session:
                recorded = await AssetRepository(session).record_reservation(
                    pending.id, reservation, reserved_bytes=reserved_bytes
                )
                if not recorded and await self._service.is_ready(session, pending.id):
                    # A concurrent retry with the same key finished it first.
                    reads = await AssetRepository(session).reads()
                    return await self._service.get(reads, pending.owner_id, pending.id)
                if not recorded:
                    # Taken over by the account's purge? Then say so (UNAUTHENTICATED).
                    await self._service.refuse_if_deleted(session, pending.owner_id)
            if not recorded:
                raise Aborted("the upload was abandoned meanwhile; try again")
        except (Exception, asyncio.CancelledError):
            await self._abandon(pending)
            raise
        await checkpoint(f"{steps}.reservation_recorded")
        return pending

    async def _complete(
        self, pending: Asset, data: bytes, image: ValidatedImage, steps: str
    ) -> Asset:
        """Writes the objects of a pending row, then makes it ready; undoes it on failure."""
        thumbnail = image.thumbnail
        try:
            await _to_the_end(self._store.put(pending.storage_key, data, image.format.mime_type))
            await checkpoint(f"{steps}.original_written")
            await _to_the_end(
                self._store.put(
                    thumbnail_variant(pending, thumbnail).storage_key,
                    thumbnail.data,
                    thumbnail.mime_type,
                )
            )
            await checkpoint(f"{steps}.objects_written")
            async with self._database.transaction() as session:
                ready = await self._service.make_ready(session, pending, image)
                if ready is None and await self._service.is_ready(session, pending.id):
                    # A concurrent confirmation of the same direct upload won.
                    reads = await AssetRepository(session).reads()
                    ready = await self._service.get(reads, pending.owner_id, pending.id)
            if ready is None:
                raise Aborted("the upload took too long and was abandoned; try again")
        except (Exception, asyncio.CancelledError):
            # Not BaseException: a dying process (SimulatedCrash in tests) leaves the
            # clean-up to the sweeper.
            await self._abandon(pending)
            raise
        await checkpoint(f"{steps}.ready")
        return ready

    async def _settle(self, asset: Asset, steps: str | None = None) -> bool:
        """Commits the storage reservation of a ready asset, then records that it did;
        a failure leaves the reservation on the row for the sweeper to retry."""
        assert asset.reservation_id is not None
        try:
            await self._quota.commit(asset.reservation_id)
            if steps:
                await checkpoint(f"{steps}.reservation_committed")
            surplus = (asset.reserved_bytes or 0) - asset.size_bytes
            if surplus > 0:
                # The caller's reservation held more than the image needed.
                await self._quota.credit(
                    asset.owner_id, Metric.STORAGE_BYTES, surplus, surplus_key(asset.id)
                )
            async with self._database.transaction() as session:
                await AssetRepository(session).clear_reservation(asset.id, asset.reservation_id)
        except Exception as error:
            log.warning(
                "storage reservation not settled; the sweeper retries",
                extra={"asset_id": str(asset.id)},
                exc_info=error,
            )
            return False
        return True

    async def _release(self, asset: Asset, *, recover: bool = False) -> bool:
        """Gives an abandoned upload's reservation back. With `recover`, a reservation
        that may have been taken without being recorded (a crash between the two) is
        looked up by its key first (reserving is idempotent on it)."""
        reservation = asset.reservation_id
        try:
            if reservation is None and recover:
                try:
                    reservation = await self._quota.reserve(
                        asset.owner_id,
                        Metric.STORAGE_BYTES,
                        asset.size_bytes,
                        reservation_key(asset.id),
                    )
                except (QuotaExceeded, Unauthenticated):
                    # Nothing can be held under the key, or the account is deleted and
                    # billing drops whatever it held with it.
                    return True
            if reservation is not None:
                await self._quota.release(reservation)
        except Unauthenticated:
            return True  # a deleted account: billing drops its reservations itself
        except Exception as error:
            # Billing expires reservations nobody commits; this one just waits for that.
            log.warning("storage reservation not released", exc_info=error)
            return False
        return True

    async def _abandon(self, pending: Asset) -> None:
        """Best-effort undo of an upload that failed: claim the row (it can then never
        become ready), remove its objects, release its reservation, delete the row.
        Whatever fails here is left to the sweeper, which finds the claimed row once the
        claim's lease has run out."""
        try:
            async with self._database.transaction() as session:
                repository = AssetRepository(session)
                claimed = await repository.claim_pending(pending.id, self._lease_until())
                if claimed is None and await repository.is_ready(pending.id):
                    return  # it became ready after all (a concurrent confirmation)
        except Exception as error:
            log.warning(
                "could not undo a failed upload; the sweeper will",
                extra={"asset_id": str(pending.id)},
                exc_info=error,
            )
            return
        await checkpoint("assets.abandon.claimed")
        current = claimed or pending
        if claimed is not None and claimed.reservation_id is None:
            current = replace(claimed, reservation_id=pending.reservation_id)
        if await self._abandon_claimed(current):
            async with self._database.transaction() as session:
                await AssetRepository(session).delete_pending([pending.id])

    async def _abandon_claimed(
        self, asset: Asset, *, recover: bool = False, billing: bool = True
    ) -> bool:
        """The act of abandoning: objects, then the reservation (unless `billing` is off,
        for a deleted account, whose usage billing purges itself). True when both went."""
        try:
            await self._remove_objects(asset)
        except Exception as error:
            log.warning(
                "objects of an abandoned upload remain; the sweeper removes them",
                extra={"asset_id": str(asset.id)},
                exc_info=error,
            )
            return False
        await checkpoint("assets.abandon.objects_removed")
        return await self._release(asset, recover=recover) if billing else True

    async def _remove_objects(self, asset: Asset) -> None:
        # Known keys plus whatever else lies under the asset's folder (a thumbnail written
        # before a failure, a direct upload's incoming object, a temporary file).
        listed = await self._store.list_objects(asset.prefix)
        for key in sorted({*asset.object_keys, *(o.key for o in listed)}):
            await self._store.delete(key)

    # -- direct upload (S3 only) --------------------------------------------------------

    async def create_upload_url(
        self, owner_id: uuid.UUID, *, filename: str, content_type: str, size_bytes: int
    ) -> DirectUpload:
        """A pending asset and a presigned PUT for exactly this type and size."""
        if not self._store.supports_presigned_urls:
            raise FailedPrecondition(DIRECT_UPLOAD_NEEDS_S3)
        if content_type not in FORMATS_BY_MIME:
            raise InvalidArgument(
                "content_type", f"must be one of {', '.join(sorted(FORMATS_BY_MIME))}"
            )
        limits = await self.limits(owner_id)
        check_byte_limit(size_bytes, limits, field="size_bytes")
        async with self._database.transaction() as session:
            pending = await self._service.record_direct_upload(
                session,
                owner_id,
                filename=filename,
                content_type=content_type,
                size_bytes=size_bytes,
            )
        await checkpoint("assets.direct.pending_recorded")
        pending = await self._reserve(pending, "assets.direct")
        try:
            request = await self._store.presigned_put(
                object_key(owner_id, pending.id, INCOMING),
                content_type=content_type,
                size_bytes=size_bytes,
                expires_in=self._settings.upload_url_expiry_seconds,
            )
        except (Exception, asyncio.CancelledError):
            await self._abandon(pending)
            raise
        return DirectUpload(pending.id, request)

    async def confirm_upload(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
        """Reads a direct upload back and validates it exactly like an upload; an object
        that fails is deleted with its row. Confirming twice answers the same asset."""
        async with self._database.transaction() as session:
            asset = await self._service.owned_direct_upload(session, owner_id, asset_id)
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
            image = await self.decode_slots.run(owner_id, validate_image, data, limits)
        except InvalidArgument:
            await self._abandon(asset)
            raise
        except ObjectMissing:
            raise FailedPrecondition("nothing has been uploaded to the upload URL yet") from None
        await checkpoint("assets.confirm.validated")
        ready = await self._complete(asset, data, image, "assets.confirm")
        try:
            await self._store.delete(incoming)
        except Exception as error:
            # Not part of the asset any more: the orphan sweep removes it later.
            log.warning("could not remove a confirmed upload's incoming object", exc_info=error)
        await checkpoint("assets.confirm.incoming_removed")
        if ready.reservation_id:
            await self._settle(ready, "assets.confirm")
        return ready

    # -- deletion -----------------------------------------------------------------------

    async def delete(self, owner_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> int:
        """Soft-deletes the owner's assets among `asset_ids` (others are ignored) and
        removes their objects right away; answers how many were deleted."""
        async with self._database.transaction() as session:
            repository = AssetRepository(session)
            deleted = await repository.soft_delete(
                owner_id, asset_ids, lease_until=self._lease_until()
            )
            batch = list((await repository.unpurged_by_id(deleted)).values()) if deleted else []
        # Committed, and leased to this request: the assets are gone for every reader.
        # Whatever fails from here on stays on record (deleted, not purged) and the sweeper
        # finishes it once the lease has run out.
        await checkpoint("assets.delete.recorded")
        await self._purge(batch)
        return len(deleted)

    async def _purge(self, batch: list[Asset], *, billing: bool = True) -> int:
        """The acts of purging claimed deleted rows, then the record: objects removed,
        the reservation committed if it never was, storage credited back (idempotent on
        the asset; not for a deleted account, whose usage billing purges itself), purged."""
        purged = []
        for asset in batch:
            try:
                await self._remove_objects(asset)
                await checkpoint("assets.purge.objects_removed")
                if billing:
                    if asset.reservation_id:
                        # Settle first, so the credit gives back bytes that were counted.
                        await self._quota.commit(asset.reservation_id)
                    await self._quota.credit(
                        asset.owner_id,
                        Metric.STORAGE_BYTES,
                        asset.size_bytes,
                        credit_key(asset.id),
                    )
                    await checkpoint("assets.purge.credited")
            except Exception as error:
                log.warning(
                    "could not purge a deleted asset; retried later",
                    extra={"asset_id": str(asset.id)},
                    exc_info=error,
                )
                continue
            purged.append(asset.id)
        if purged:
            async with self._database.transaction() as session:
                await AssetRepository(session).mark_purged(purged)
            await checkpoint("assets.purge.recorded")
        return len(purged)

    async def purge_user(self, owner_id: uuid.UUID) -> int:
        """Deletes everything the user stored: rows, objects, pending uploads, leftovers
        of crashes. Answers how many ready assets the user had; safe to repeat.

        Runs after the user's tombstone committed, so no new row appears. An upload still
        in flight finds its row claimed or gone and undoes its own objects; one that
        crashed instead leaves objects without a row, which the orphan sweep removes.
        Billing is not called: it follows the same deletion and purges the account's
        usage and reservations itself (and refuses a deleted account's calls), so a purge
        never waits on it."""
        until = self._lease_until()
        async with self._database.transaction() as session:
            deleted = await AssetRepository(session).mark_owner_deleted(owner_id, lease_until=until)
        await checkpoint("assets.purge_user.marked")
        after: uuid.UUID | None = None
        while True:
            async with self._database.transaction() as session:
                batch = await AssetRepository(session).claim_owner_rows(
                    owner_id, after_id=after, limit=self._settings.sweep_batch_size, until=until
                )
            if not batch:
                break
            after = batch[-1].id
            await self._purge([a for a in batch if a.state is AssetState.READY], billing=False)
            abandoned = [
                a.id
                for a in batch
                if a.state is AssetState.PENDING and await self._abandon_claimed(a, billing=False)
            ]
            if abandoned:
                async with self._database.transaction() as session:
                    await AssetRepository(session).delete_pending(abandoned)
        async with self._database.transaction() as session:
            repository = AssetRepository(session)
            if await repository.count_unfinished(owner_id):
                raise Unavailable("some of the user's objects could not be removed; retry")
            await repository.delete_purged_of_owner(owner_id)
        await checkpoint("assets.purge_user.rows_removed")
        await self._remove_unaccounted(owner_prefix(owner_id))
        return len(deleted)

    async def _remove_unaccounted(self, prefix: str) -> int:
        """Removes every object under `prefix` that no row accounts for. Never an object
        of a row that is still there: a ready asset keeps its bytes whatever happens."""
        removed, start_after = 0, ""
        while listed := await self._store.list_objects(prefix, start_after=start_after):
            start_after = listed[-1].key
            removed += await self._remove_orphans_among(listed)
        return removed

    async def _remove_orphans_among(self, listed: list[StoredObject]) -> int:
        asset_ids = {asset_id_of_key(o.key) for o in listed}
        async with self._database.transaction() as session:
            rows = await AssetRepository(session).unpurged_by_id(
                [asset_id for asset_id in asset_ids if asset_id is not None]
            )
        removed = 0
        for stored in listed:
            if _accounted_for(stored, rows):
                continue
            await self._store.delete(stored.key)
            removed += 1
        return removed

    # -- the sweeper's steps --------------------------------------------------------------

    async def abandon_stuck_pending(self, *, now: datetime.datetime) -> int:
        """Pending rows nobody drives any more: claimed and committed, then objects
        removed and reservations released, then the rows deleted."""
        async with self._database.transaction() as session:
            batch = await AssetRepository(session).claim_stuck_pending(
                limit=self._settings.sweep_batch_size,
                now=now,
                until=self._lease_until(now),
                created_before=now
                - datetime.timedelta(seconds=self._settings.pending_timeout_seconds),
            )
        if not batch:
            return 0
        await checkpoint("assets.sweep.pending_claimed")
        abandoned = [a.id for a in batch if await self._abandon_claimed(a, recover=True)]
        if abandoned:
            async with self._database.transaction() as session:
                await AssetRepository(session).delete_pending(abandoned)
        return len(abandoned)

    async def purge_deleted(self, *, now: datetime.datetime) -> int:
        async with self._database.transaction() as session:
            batch = await AssetRepository(session).claim_awaiting_purge(
                limit=self._settings.sweep_batch_size, now=now, until=self._lease_until(now)
            )
        if not batch:
            return 0
        await checkpoint("assets.sweep.deleted_claimed")
        return await self._purge(batch)

    async def settle_reservations(self, *, now: datetime.datetime) -> int:
        """Retries reservation commits of ready assets whose first attempt failed."""
        async with self._database.transaction() as session:
            batch = await AssetRepository(session).claim_unsettled(
                limit=self._settings.sweep_batch_size,
                now=now,
                until=self._lease_until(now),
                created_before=now - SETTLE_AFTER,
            )
        settled = 0
        for asset in batch:
            if await self._settle(asset):
                settled += 1
        return settled

    async def remove_orphans(
        self, *, start_after: str, older_than: datetime.datetime
    ) -> tuple[int, str]:
        """One batch of the orphan scan: objects no row accounts for, older than
        `older_than`; answers how many went and where the next batch starts ("" = over)."""
        limit = self._settings.sweep_batch_size
        listed = await self._store.list_objects(
            OBJECTS_PREFIX, start_after=start_after, limit=limit
        )
        # A short page means the scan reached the end: start over next time.
        cursor = listed[-1].key if len(listed) == limit else ""
        candidates = [o for o in listed if o.last_modified < older_than]
        if not candidates:
            return 0, cursor
        return await self._remove_orphans_among(candidates), cursor


class AssetSweeper:
    """Finishes or undoes what crashes and failures left behind, one pass at a time.

    A pass abandons uploads stuck pending, purges deleted assets whose objects remain,
    retries reservation commits, and removes orphaned objects (no row accounts for them)
    once they are older than a grace period, walking the store in key order one batch per
    pass. Every step claims its rows with SKIP LOCKED and commits the claim before it
    calls the store or billing, so replicas may sweep at once. The server runs it
    periodically; `python -m services.assets sweep` runs one pass.
    """

    def __init__(
        self, *, workflows: AssetWorkflows, settings: AssetsSettings, clock: Clock = utc_now
    ) -> None:
        self._workflows = workflows
        self._settings = settings
        self._clock = clock
        # Last key the orphan scan looked at; "" starts from the beginning.
        self._orphan_cursor = ""

    async def sweep_once(self) -> SweepReport:
        now = self._clock()
        abandoned = await self._workflows.abandon_stuck_pending(now=now)
        purged = await self._workflows.purge_deleted(now=now)
        settled = await self._workflows.settle_reservations(now=now)
        orphans, self._orphan_cursor = await self._workflows.remove_orphans(
            start_after=self._orphan_cursor,
            older_than=now - datetime.timedelta(seconds=self._settings.orphan_grace_seconds),
        )
        return SweepReport(abandoned, purged, settled, orphans)

    async def run_periodically(self, interval_seconds: float) -> None:
        """Sweeps every `interval_seconds` until cancelled; a failed pass is logged and
        the next one tries again."""
        # Replicas started together should not sweep in lockstep.
        await asyncio.sleep(interval_seconds * random.uniform(0.5, 1.0))
        await every(interval_seconds, self._sweep_and_log, name="assets sweep")

    async def _sweep_and_log(self) -> None:
        report = await self.sweep_once()
        if any(asdict(report).values()):
            log.info("swept", extra=asdict(report))


def _accounted_for(stored: StoredObject, rows: dict[uuid.UUID, Asset]) -> bool:
    asset_id = asset_id_of_key(stored.key)
    asset = rows.get(asset_id) if asset_id is not None else None
    if asset is None or not stored.key.startswith(asset.prefix):
        return False
    if asset.state is AssetState.PENDING:
        # Its upload may still be writing (or the stuck-pending step will take it).
        return True
    return stored.key in asset.object_keys
