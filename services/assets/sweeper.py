"""The sweeper: finishes or undoes what crashes and failures left behind.

One pass (`sweep_once`) abandons uploads stuck pending (row, objects, reservation),
purges deleted assets whose objects remain, retries storage reservations that were not
committed, and removes orphaned objects: stored objects no row accounts for, once they
are older than a grace period (an upload writes its objects before its row turns ready).
The orphan scan walks the store in key order, one batch per pass, resuming where the last
pass stopped. Every step locks rows with SKIP LOCKED, so several replicas may sweep at
once. The server runs it periodically; `python -m services.assets sweep` runs one pass.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import uuid
from dataclasses import asdict, dataclass

from runtime.db import Database
from services.assets.models import OBJECTS_PREFIX, Asset, AssetState, asset_id_of_key
from services.assets.repository import AssetRepository
from services.assets.service import AssetService
from services.assets.settings import AssetsSettings
from services.assets.storage import Clock, ObjectStore, StoredObject, utc_now

log = logging.getLogger("pixelshop.assets.sweeper")

# A ready row keeps its reservation id only between "ready" and the quota commit, which
# the request itself does a moment later; the sweeper retries only after this long.
SETTLE_AFTER = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class SweepReport:
    abandoned_pending: int = 0
    purged_deleted: int = 0
    settled_reservations: int = 0
    removed_orphans: int = 0


class AssetSweeper:
    def __init__(
        self,
        *,
        service: AssetService,
        database: Database,
        store: ObjectStore,
        settings: AssetsSettings,
        clock: Clock = utc_now,
    ) -> None:
        self._service = service
        self._database = database
        self._store = store
        self._settings = settings
        self._clock = clock
        # Last key the orphan scan looked at; "" starts from the beginning.
        self._orphan_cursor = ""

    async def sweep_once(self) -> SweepReport:
        now = self._clock()
        batch = self._settings.sweep_batch_size
        abandoned = await self._service.abandon_stuck_pending(
            limit=batch,
            created_before=now - datetime.timedelta(seconds=self._settings.pending_timeout_seconds),
        )
        purged = await self._service.purge_deleted(limit=batch)
        settled = await self._service.settle_reservations(
            limit=batch, created_before=now - SETTLE_AFTER
        )
        orphans = await self._remove_orphans(
            older_than=now - datetime.timedelta(seconds=self._settings.orphan_grace_seconds)
        )
        return SweepReport(abandoned, purged, settled, orphans)

    async def _remove_orphans(self, *, older_than: datetime.datetime) -> int:
        limit = self._settings.sweep_batch_size
        listed = await self._store.list_objects(
            OBJECTS_PREFIX, start_after=self._orphan_cursor, limit=limit
        )
        # A short page means the scan reached the end: start over next time.
        self._orphan_cursor = listed[-1].key if len(listed) == limit else ""
        candidates = [o for o in listed if o.last_modified < older_than]
        if not candidates:
            return 0
        asset_ids = {asset_id_of_key(o.key) for o in candidates}
        async with self._database.transaction() as session:
            rows = await AssetRepository(session).unpurged_by_id(
                [asset_id for asset_id in asset_ids if asset_id is not None]
            )
        removed = 0
        for stored in candidates:
            if _accounted_for(stored, rows):
                continue
            await self._store.delete(stored.key)
            removed += 1
        return removed

    async def run_periodically(self, interval_seconds: float) -> None:
        """Sweeps every `interval_seconds` until cancelled; a failed pass is logged and
        the next one tries again."""
        # Replicas started together should not sweep in lockstep.
        await asyncio.sleep(interval_seconds * random.uniform(0.5, 1.0))
        while True:
            try:
                report = await self.sweep_once()
                if any(asdict(report).values()):
                    log.info("swept", extra=asdict(report))
            except Exception as error:
                log.error("sweep failed", exc_info=error)
            await asyncio.sleep(interval_seconds)


def _accounted_for(stored: StoredObject, rows: dict[uuid.UUID, Asset]) -> bool:
    asset_id = asset_id_of_key(stored.key)
    asset = rows.get(asset_id) if asset_id is not None else None
    if asset is None or not stored.key.startswith(asset.prefix):
        return False
    if asset.state is AssetState.PENDING:
        # Its upload may still be writing (or the stuck-pending step will take it).
        return True
    return stored.key in asset.object_keys
