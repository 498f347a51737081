"""Every SQL statement of the assets service. Nothing here commits.

The `claim_*` methods are the first step of every sweep (ADR 0011): they lock a batch with
FOR UPDATE SKIP LOCKED, set `next_attempt_at` (a lease) and return it; the caller commits
that at once, before any object-store or billing call, so no row lock and no pooled
connection is held across one. A lease that runs out (a sweeper died) is claimed again.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    RowMapping,
    Select,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Query, Reader, reader
from runtime.pagination import Keyset
from services.assets.models import (
    AWAITING_PURGE,
    LISTED,
    PENDING,
    UNSETTLED,
    Asset,
    AssetKind,
    AssetState,
    IdempotencyScope,
    Variant,
    asset_variants,
    assets,
)


def _variant(row: RowMapping) -> Variant:
    return Variant(
        name=row["name"],
        storage_key=row["storage_key"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
    )


def _asset(row: RowMapping, variants: Sequence[Variant] = ()) -> Asset:
    return Asset(
        id=row["id"],
        owner_id=row["owner_id"],
        kind=AssetKind(row["kind"]),
        state=AssetState(row["state"]),
        storage_key=row["storage_key"],
        mime_type=row["mime_type"],
        size_bytes=row["size_bytes"],
        width=row["width"],
        height=row["height"],
        sha256=row["sha256"],
        filename=row["filename"],
        idempotency_key=row["idempotency_key"],
        idempotency_scope=(
            IdempotencyScope(row["idempotency_scope"]) if row["idempotency_scope"] else None
        ),
        reservation_id=row["reservation_id"],
        reserved_bytes=row["reserved_bytes"],
        direct_upload=row["direct_upload"],
        created_at=row["created_at"],
        deleted_at=row["deleted_at"],
        purged_at=row["purged_at"],
        next_attempt_at=row["next_attempt_at"],
        variants=tuple(variants),
    )


# The owner's ready asset with its variants, one row per variant (a row of NULLs when it
# has none): compiled once and run on the driver connection (runtime.db.Query, ADR 0020).
_GET_LISTED = Query.of(
    select(assets, *(column.label(f"variant_{column.name}") for column in asset_variants.c))
    .select_from(assets.outerjoin(asset_variants, asset_variants.c.asset_id == assets.c.id))
    .where(
        assets.c.id == bindparam("asset_id"),
        assets.c.owner_id == bindparam("owner_id"),
        text(f"assets.{LISTED}"),
    )
    .order_by(asset_variants.c.name)
)


class AssetReads:
    """The one-asset read every download and every edit makes, on a Reader: the bare
    driver connection of `Database.reader()`, or a transaction's own."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def get_listed(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> Asset | None:
        """The owner's ready, undeleted asset; None for anything else."""
        rows = await self._reader.fetch(_GET_LISTED, asset_id=asset_id, owner_id=owner_id)
        if not rows:
            return None
        variants = [
            Variant(
                name=row["variant_name"],
                storage_key=row["variant_storage_key"],
                mime_type=row["variant_mime_type"],
                size_bytes=row["variant_size_bytes"],
                width=row["variant_width"],
                height=row["variant_height"],
            )
            for row in rows
            if row["variant_name"] is not None
        ]
        return _asset(rows[0], variants)


class AssetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def reads(self) -> AssetReads:
        """The reads, on this session's connection and in its transaction."""
        return AssetReads(await reader(self._session))

    async def _load(self, statement: Select[Any]) -> list[Asset]:
        """Rows of `assets` with their variants (one extra query for the whole batch)."""
        rows = (await self._session.execute(statement)).mappings().all()
        if not rows:
            return []
        found = await self._session.execute(
            select(asset_variants)
            .where(asset_variants.c.asset_id.in_([row["id"] for row in rows]))
            .order_by(asset_variants.c.name)
        )
        by_asset: dict[uuid.UUID, list[Variant]] = {}
        for variant in found.mappings():
            by_asset.setdefault(variant["asset_id"], []).append(_variant(variant))
        return [_asset(row, by_asset.get(row["id"], ())) for row in rows]

    async def insert_pending(
        self,
        *,
        asset_id: uuid.UUID,
        owner_id: uuid.UUID,
        kind: AssetKind,
        storage_key: str,
        filename: str,
        size_bytes: int,
        mime_type: str | None = None,
        width: int | None = None,
        height: int | None = None,
        sha256: str | None = None,
        idempotency_key: str | None = None,
        idempotency_scope: IdempotencyScope | None = None,
        direct_upload: bool = False,
    ) -> Asset | None:
        """The new pending row; None when the owner already used `idempotency_key` in
        that scope."""
        statement = (
            pg_insert(assets)
            .values(
                id=asset_id,
                owner_id=owner_id,
                kind=kind.value,
                state=AssetState.PENDING.value,
                storage_key=storage_key,
                mime_type=mime_type,
                size_bytes=size_bytes,
                width=width,
                height=height,
                sha256=sha256,
                filename=filename,
                idempotency_key=idempotency_key,
                idempotency_scope=idempotency_scope.value if idempotency_scope else None,
                direct_upload=direct_upload,
            )
            .on_conflict_do_nothing(
                index_elements=[
                    assets.c.owner_id,
                    assets.c.idempotency_scope,
                    assets.c.idempotency_key,
                ]
            )
            .returning(assets)
        )
        row = (await self._session.execute(statement)).mappings().first()
        return None if row is None else _asset(row)

    async def find_by_idempotency_key(
        self, owner_id: uuid.UUID, scope: IdempotencyScope, key: str
    ) -> Asset | None:
        found = await self._load(
            select(assets).where(
                assets.c.owner_id == owner_id,
                assets.c.idempotency_scope == scope.value,
                assets.c.idempotency_key == key,
            )
        )
        return found[0] if found else None

    async def get(self, asset_id: uuid.UUID) -> Asset | None:
        found = await self._load(select(assets).where(assets.c.id == asset_id))
        return found[0] if found else None

    async def list_listed(
        self,
        owner_id: uuid.UUID,
        *,
        kind: AssetKind | None,
        after: Keyset | None,
        limit: int,
    ) -> list[Asset]:
        """One page of the owner's ready assets, newest first (keyset on created_at, id)."""
        statement = select(assets).where(assets.c.owner_id == owner_id, text(LISTED))
        if kind is not None:
            statement = statement.where(assets.c.kind == kind.value)
        if after is not None:
            statement = statement.where(
                tuple_(assets.c.created_at, assets.c.id) < tuple_(after.key, after.id)
            )
        statement = statement.order_by(assets.c.created_at.desc(), assets.c.id.desc()).limit(limit)
        return await self._load(statement)

    async def record_reservation(
        self, asset_id: uuid.UUID, reservation_id: str, *, reserved_bytes: int | None = None
    ) -> bool:
        """Notes the storage reservation of a pending upload (and its size, when the
        caller made it); False when the row is gone or being abandoned (then the caller
        releases the reservation)."""
        result = await self._session.execute(
            update(assets)
            .where(assets.c.id == asset_id, text(PENDING), assets.c.next_attempt_at.is_(None))
            .values(reservation_id=reservation_id, reserved_bytes=reserved_bytes)
            .returning(assets.c.id)
        )
        return result.first() is not None

    async def mark_ready(
        self,
        asset_id: uuid.UUID,
        *,
        mime_type: str,
        size_bytes: int,
        width: int,
        height: int,
        sha256: str,
        filename: str,
        variants: Iterable[Variant],
    ) -> bool:
        """Ready with its metadata and variants; False when it is no longer a live pending
        row nobody claimed (the sweeper or a purge is abandoning it, or it is gone)."""
        result = await self._session.execute(
            update(assets)
            .where(
                assets.c.id == asset_id,
                text(PENDING),
                assets.c.deleted_at.is_(None),
                assets.c.next_attempt_at.is_(None),
            )
            .values(
                state=AssetState.READY.value,
                mime_type=mime_type,
                size_bytes=size_bytes,
                width=width,
                height=height,
                sha256=sha256,
                filename=filename,
            )
            .returning(assets.c.id)
        )
        if result.first() is None:
            return False
        rows = [
            {
                "id": uuid.uuid4(),
                "asset_id": asset_id,
                "name": v.name,
                "storage_key": v.storage_key,
                "mime_type": v.mime_type,
                "size_bytes": v.size_bytes,
                "width": v.width,
                "height": v.height,
            }
            for v in variants
        ]
        if rows:
            await self._session.execute(insert(asset_variants), rows)
        return True

    async def claim_pending(self, asset_id: uuid.UUID, until: datetime.datetime) -> Asset | None:
        """Takes one pending row over for abandoning (it can never become ready after
        this); None when it is ready or gone."""
        found = await self._load(
            select(assets).where(assets.c.id == asset_id, text(PENDING)).with_for_update()
        )
        if not found:
            return None
        await self._set_lease([asset_id], until)
        return found[0]

    async def is_ready(self, asset_id: uuid.UUID) -> bool:
        found = await self._session.scalar(select(assets.c.state).where(assets.c.id == asset_id))
        return found == AssetState.READY.value

    async def _set_lease(self, asset_ids: Sequence[uuid.UUID], until: datetime.datetime) -> None:
        if asset_ids:
            await self._session.execute(
                update(assets).where(assets.c.id.in_(asset_ids)).values(next_attempt_at=until)
            )

    async def soft_delete(
        self,
        owner_id: uuid.UUID,
        asset_ids: Sequence[uuid.UUID] | None = None,
        *,
        lease_until: datetime.datetime,
    ) -> list[uuid.UUID]:
        """Marks the owner's listed assets deleted (all of them when `asset_ids` is None),
        leased to the caller, who purges them next."""
        statement = update(assets).where(assets.c.owner_id == owner_id, text(LISTED))
        if asset_ids is not None:
            statement = statement.where(assets.c.id.in_(asset_ids))
        result = await self._session.execute(
            statement.values(deleted_at=func.now(), next_attempt_at=lease_until).returning(
                assets.c.id
            )
        )
        return [row[0] for row in result]

    async def _claim(
        self,
        statement: Select[Any],
        *,
        order: Any,
        limit: int,
        until: datetime.datetime,
    ) -> list[Asset]:
        batch = await self._load(
            statement.order_by(order).limit(limit).with_for_update(skip_locked=True, of=assets)
        )
        await self._set_lease([asset.id for asset in batch], until)
        return batch

    async def claim_awaiting_purge(
        self,
        *,
        limit: int,
        now: datetime.datetime,
        until: datetime.datetime,
        asset_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[Asset]:
        """Deleted rows whose objects remain and whose lease (if any) ran out."""
        statement = select(assets).where(
            text(AWAITING_PURGE),
            or_(assets.c.next_attempt_at.is_(None), assets.c.next_attempt_at < now),
        )
        if asset_ids is not None:
            statement = statement.where(assets.c.id.in_(asset_ids))
        return await self._claim(statement, order=assets.c.deleted_at, limit=limit, until=until)

    async def claim_stuck_pending(
        self,
        *,
        limit: int,
        now: datetime.datetime,
        until: datetime.datetime,
        created_before: datetime.datetime,
    ) -> list[Asset]:
        """Pending rows nobody drives any more: older than `created_before` and never
        claimed, or claimed for abandoning by someone whose lease ran out."""
        statement = select(assets).where(
            text(PENDING),
            or_(
                (assets.c.next_attempt_at.is_(None)) & (assets.c.created_at < created_before),
                assets.c.next_attempt_at < now,
            ),
        )
        return await self._claim(statement, order=assets.c.created_at, limit=limit, until=until)

    async def claim_unsettled(
        self,
        *,
        limit: int,
        now: datetime.datetime,
        until: datetime.datetime,
        created_before: datetime.datetime,
    ) -> list[Asset]:
        """Ready rows whose reservation commit did not go through (oldest first)."""
        statement = select(assets).where(
            text(UNSETTLED),
            assets.c.created_at < created_before,
            or_(assets.c.next_attempt_at.is_(None), assets.c.next_attempt_at < now),
        )
        return await self._claim(statement, order=assets.c.created_at, limit=limit, until=until)

    async def claim_owner_rows(
        self,
        owner_id: uuid.UUID,
        *,
        after_id: uuid.UUID | None,
        limit: int,
        until: datetime.datetime,
    ) -> list[Asset]:
        """A user's purge takes over every unpurged row of theirs, leased or not, in id
        order (`after_id` continues), so one pass meets each row once."""
        statement = select(assets).where(
            assets.c.owner_id == owner_id,
            or_(text(PENDING), text(AWAITING_PURGE)),
        )
        if after_id is not None:
            statement = statement.where(assets.c.id > after_id)
        return await self._claim(statement, order=assets.c.id, limit=limit, until=until)

    async def mark_owner_deleted(
        self, owner_id: uuid.UUID, *, lease_until: datetime.datetime
    ) -> list[uuid.UUID]:
        """Every pending row of the user claimed and every live one deleted, so nothing of
        theirs can become (or stay) visible; answers the ready rows deleted.

        In this order: claiming the pending rows waits for a ready commit in flight (its
        row lock) and then skips the row, which is ready by then; the soft delete that
        follows is a new statement, so it sees that row ready and deletes it."""
        await self._session.execute(
            update(assets)
            .where(assets.c.owner_id == owner_id, text(PENDING))
            .values(next_attempt_at=lease_until)
        )
        return await self.soft_delete(owner_id, lease_until=lease_until)

    async def mark_purged(self, asset_ids: Sequence[uuid.UUID]) -> None:
        if asset_ids:
            await self._session.execute(
                update(assets)
                .where(assets.c.id.in_(asset_ids), text(AWAITING_PURGE))
                .values(purged_at=func.now(), next_attempt_at=None)
            )

    async def delete_pending(self, asset_ids: Sequence[uuid.UUID]) -> None:
        """Hard delete of abandoned pending rows (variants go with them: ON DELETE CASCADE)."""
        if asset_ids:
            await self._session.execute(
                delete(assets).where(assets.c.id.in_(asset_ids), text(PENDING))
            )

    async def delete_purged_of_owner(self, owner_id: uuid.UUID) -> int:
        result = await self._session.execute(
            delete(assets)
            .where(assets.c.owner_id == owner_id, assets.c.purged_at.is_not(None))
            .returning(assets.c.id)
        )
        return len(result.all())

    async def unpurged_by_id(self, asset_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Asset]:
        """Rows among `asset_ids` whose objects may still be stored (not purged)."""
        found = await self._load(
            select(assets).where(assets.c.id.in_(list(asset_ids)), assets.c.purged_at.is_(None))
        )
        return {asset.id: asset for asset in found}

    async def count_unfinished(self, owner_id: uuid.UUID) -> int:
        """The user's rows still pending or deleted but not purged."""
        result = await self._session.execute(
            select(func.count())
            .select_from(assets)
            .where(assets.c.owner_id == owner_id, or_(text(PENDING), text(AWAITING_PURGE)))
        )
        return int(result.scalar_one())

    async def clear_reservation(self, asset_id: uuid.UUID, reservation_id: str) -> None:
        """The reservation is committed: nothing is left to settle for this row (a
        deleted row keeps its purge lease)."""
        await self._session.execute(
            update(assets)
            .where(assets.c.id == asset_id, assets.c.reservation_id == reservation_id)
            .values(
                reservation_id=None,
                next_attempt_at=case(
                    (assets.c.deleted_at.is_(None), None), else_=assets.c.next_attempt_at
                ),
            )
        )
