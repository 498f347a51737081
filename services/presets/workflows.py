"""Preset publish: the one presets write that needs another service (ADR 0011, ADR 0014).

Creating a public preset, or making one public, needs the owner's tier feature
`public_presets`, which identity answers. The steps:

1. *act* — ask identity for the owner's tier, with no transaction open (only when the
   request asks for public; an unknown user has no features);
2. *record* — one transaction: check the rules (including, under the row lock, whether the
   preset really becomes public) and write.

Nothing is recorded before step 2, so a crash before it leaves nothing behind and a crash
after it leaves a complete preset. A retry is safe: CreatePreset with the same
`Idempotency-Key` answers the preset the first call made (and creates no second one); an
update retried with the same values writes nothing and keeps the version. The tier may
change between the two steps: it is cached for `tier_cache_seconds` anyway, and a lapsed
plan keeps what it already published.
"""

from __future__ import annotations

import uuid

from runtime.db import Database
from runtime.errors import NotFound
from runtime.peers.identity import TierLookup
from runtime.workflow import checkpoint
from services.presets.models import Preset, Visibility
from services.presets.service import (
    PUBLIC_PRESETS_FEATURE,
    PresetCatalog,
    PresetChanges,
    PresetDraft,
)

TIER_READ = "presets.publish.tier_read"
COMMITTED = "presets.publish.committed"


class PresetPublishing:
    """CreatePreset and UpdatePreset: read the tier if needed, then one transaction."""

    def __init__(self, database: Database, catalog: PresetCatalog, tiers: TierLookup) -> None:
        self._database = database
        self._catalog = catalog
        self._tiers = tiers

    async def _may_publish(self, user_id: uuid.UUID, visibility: Visibility | None) -> bool:
        """Whether the user's plan lets them publish; only asked when the write asks for
        public (False otherwise, so a missing answer can never let a preset through)."""
        if visibility is not Visibility.PUBLIC:
            return False
        try:
            tier = await self._tiers.tier(user_id)
        except NotFound:
            return False  # a user identity does not know has no plan at all
        return tier.allows(PUBLIC_PRESETS_FEATURE)

    async def create(
        self, owner_id: uuid.UUID, draft: PresetDraft, *, idempotency_key: str | None = None
    ) -> Preset:
        may_publish = await self._may_publish(owner_id, draft.visibility)
        await checkpoint(TIER_READ)
        async with self._database.transaction() as session:
            preset = await self._catalog.create(
                session, owner_id, draft, may_publish=may_publish, idempotency_key=idempotency_key
            )
        await checkpoint(COMMITTED)
        return preset

    async def update(
        self,
        preset_id: uuid.UUID,
        user_id: uuid.UUID,
        changes: PresetChanges,
        *,
        expected_version: int | None = None,
    ) -> Preset:
        may_publish = await self._may_publish(user_id, changes.visibility)
        await checkpoint(TIER_READ)
        async with self._database.transaction() as session:
            preset = await self._catalog.update(
                session,
                preset_id,
                user_id,
                changes,
                may_publish=may_publish,
                expected_version=expected_version,
            )
        await checkpoint(COMMITTED)
        return preset
