"""Business rules of presets: who sees, changes, likes, forks and uses what.

Visibility: system presets and public ones are everybody's; an unlisted preset is
reachable by id (get, like, fork, use) but never listed for anyone but its owner; a
private one exists only for its owner. Whatever a caller may not see answers NOT_FOUND,
exactly like a missing preset. System presets are read-only for everyone (PERMISSION_DENIED,
since the caller can see them). Publishing public needs the owner's tier feature
`public_presets`; it is checked when a preset becomes public, so a user whose plan
lapsed can still edit what they published before. The tier is read before the unit of work
opens (workflows.py) and arrives here as `may_publish`.

Deleted accounts (runtime.tombstones): every write that makes a user's data visible
(create, update, fork, like) first calls `Tombstones.guard_write` in its transaction, so it
either commits before the tombstone is recorded, and the purge that follows removes it, or
it is refused UNAUTHENTICATED (`ACCOUNT_DELETED`). Nothing a deleted user writes survives.

`PresetCatalog` is built once by the composition root and holds no session: every method
runs inside the caller's unit of work (`session` first) and nothing here commits.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.pagination import Keyset, Page, SortKey, fetch_limit, page_of
from runtime.tombstones import Tombstones
from services.presets.errors import (
    EditRecordedForAnotherPreset,
    IdempotencyKeyReused,
    KeyedPresetDeleted,
    NotPresetOwner,
    PresetNotFound,
    PresetVersionChanged,
    PublicPresetsNotInTier,
    SystemPresetReadOnly,
)
from services.presets.models import Category, Order, Preset, Scope, Visibility
from services.presets.repository import (
    KeyedCreation,
    Listing,
    NewPreset,
    PresetAccess,
    PresetReads,
    PresetRepository,
)

PUBLIC_PRESETS_FEATURE = "public_presets"
MAX_SEARCH_TERMS = 8
# Letters and digits: exactly what the 'simple' text search parser makes words of, and
# nothing that could act as a tsquery operator.
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class PresetDraft:
    name: str
    description: str
    prompt: str
    category: Category
    visibility: Visibility

    def digest(self) -> bytes:
        """What a retried CreatePreset must repeat to get the same preset back."""
        fields = [self.name, self.description, self.prompt, self.category, self.visibility]
        return hashlib.sha256(json.dumps(fields).encode()).digest()


@dataclass(frozen=True)
class PresetChanges:
    """Fields to change; None leaves a field as it is."""

    name: str | None = None
    description: str | None = None
    prompt: str | None = None
    category: Category | None = None
    visibility: Visibility | None = None

    def columns(self) -> dict[str, str]:
        values = {
            "name": self.name,
            "description": self.description,
            "prompt": self.prompt,
            "category": self.category.value if self.category else None,
            "visibility": self.visibility.value if self.visibility else None,
        }
        return {column: value for column, value in values.items() if value is not None}


@dataclass(frozen=True)
class Browse:
    """One ListPresets call, validated."""

    scope: Scope
    order: Order
    category: Category | None
    terms: tuple[str, ...]
    page_size: int
    # Decoded from the page token: the previous page's last row.
    after: Keyset | None


@dataclass(frozen=True)
class ResolvedPreset:
    """What an edit snapshots from a preset."""

    id: uuid.UUID
    name: str
    prompt: str
    category: Category
    version: int


def search_terms(query: str) -> tuple[str, ...]:
    """The words of a search box, each matched as a prefix; at most MAX_SEARCH_TERMS."""
    return tuple(_WORD.findall(query))[:MAX_SEARCH_TERMS]


def sort_key_type(order: Order) -> type[SortKey]:
    """What a listing's keyset key is: a creation time, or a like / use count."""
    return datetime.datetime if order is Order.NEWEST else int


def _position(order: Order) -> Callable[[Preset], Keyset]:
    def position(preset: Preset) -> Keyset:
        if order is Order.NEWEST:
            return Keyset(preset.created_at, preset.id)
        count = preset.like_count if order is Order.POPULAR else preset.use_count
        return Keyset(count, preset.id)

    return position


def _visible(access: PresetAccess, viewer_id: uuid.UUID) -> bool:
    return access.visibility is not Visibility.PRIVATE or access.owner_id == viewer_id


class PresetCatalog:
    """The rules of presets; one instance serves every call (it holds no session)."""

    def __init__(self, tombstones: Tombstones) -> None:
        self._tombstones = tombstones

    async def _visible_preset(
        self, repository: PresetRepository, preset_id: uuid.UUID, viewer_id: uuid.UUID
    ) -> Preset:
        preset = await repository.find_visible(preset_id, viewer_id)
        if preset is None:
            raise PresetNotFound(preset_id)
        return preset

    async def _owned_for_change(
        self, repository: PresetRepository, preset_id: uuid.UUID, user_id: uuid.UUID
    ) -> PresetAccess:
        access = await repository.lock(preset_id, "change")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)
        if access.owner_id is None:
            raise SystemPresetReadOnly()
        if access.owner_id != user_id:
            raise NotPresetOwner()
        return access

    async def _referenced(
        self, repository: PresetRepository, preset_id: uuid.UUID, user_id: uuid.UUID
    ) -> None:
        """Locks a preset the caller can see against a purge while a like or fork points
        at it (FOR KEY SHARE); NOT_FOUND when they cannot see it."""
        access = await repository.lock(preset_id, "reference")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)

    async def get(self, reads: PresetReads, preset_id: uuid.UUID, viewer_id: uuid.UUID) -> Preset:
        preset = await reads.find_visible(preset_id, viewer_id)
        if preset is None:
            raise PresetNotFound(preset_id)
        return preset

    async def browse(
        self, session: AsyncSession, viewer_id: uuid.UUID, request: Browse
    ) -> Page[Preset]:
        rows = await PresetRepository(session).list_page(
            Listing(
                viewer_id=viewer_id,
                scope=request.scope,
                order=request.order,
                category=request.category,
                terms=request.terms,
                after=request.after,
                limit=fetch_limit(request.page_size),
            )
        )
        return page_of(rows, request.page_size, _position(request.order))

    async def create(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        draft: PresetDraft,
        *,
        may_publish: bool,
        idempotency_key: str | None = None,
    ) -> Preset:
        """A new preset; with an idempotency key, a retry of the same request answers the
        preset the first call made (even if the plan changed since), another request with
        the key is ALREADY_EXISTS."""
        await self._tombstones.guard_write(session, owner_id)
        repository = PresetRepository(session)
        if idempotency_key is not None:
            earlier = await repository.keyed_creation(owner_id, idempotency_key)
            if earlier is not None:
                return await self._created_before(repository, owner_id, earlier, draft)
        if draft.visibility is Visibility.PUBLIC and not may_publish:
            raise PublicPresetsNotInTier()
        new = NewPreset(
            owner_id=owner_id,
            name=draft.name,
            description=draft.description,
            prompt=draft.prompt,
            category=draft.category,
            visibility=draft.visibility,
        )
        if idempotency_key is None:
            preset_id = await repository.insert(new)
        else:
            inserted = await repository.insert_keyed(new, idempotency_key, draft.digest())
            if inserted is None:  # a concurrent call with the key committed first
                earlier = await repository.keyed_creation(owner_id, idempotency_key)
                assert earlier is not None  # the conflicting row is committed and owned
                return await self._created_before(repository, owner_id, earlier, draft)
            preset_id = inserted
        return await self._visible_preset(repository, preset_id, owner_id)

    async def _created_before(
        self,
        repository: PresetRepository,
        owner_id: uuid.UUID,
        earlier: KeyedCreation,
        draft: PresetDraft,
    ) -> Preset:
        if earlier.request_sha256 != draft.digest():
            raise IdempotencyKeyReused()
        preset = await repository.find_visible(earlier.preset_id, owner_id)
        if preset is None:  # the owner sees every live preset of theirs
            raise KeyedPresetDeleted(earlier.preset_id)
        return preset

    async def update(
        self,
        session: AsyncSession,
        preset_id: uuid.UUID,
        user_id: uuid.UUID,
        changes: PresetChanges,
        *,
        may_publish: bool,
        expected_version: int | None = None,
    ) -> Preset:
        await self._tombstones.guard_write(session, user_id)
        repository = PresetRepository(session)
        access = await self._owned_for_change(repository, preset_id, user_id)
        if expected_version is not None and expected_version != access.version:
            raise PresetVersionChanged(expected_version, access.version)
        becomes_public = (
            changes.visibility is Visibility.PUBLIC and access.visibility is not Visibility.PUBLIC
        )
        if becomes_public and not may_publish:
            raise PublicPresetsNotInTier()
        await repository.update(preset_id, changes.columns())
        return await self._visible_preset(repository, preset_id, user_id)

    async def delete(self, session: AsyncSession, preset_id: uuid.UUID, user_id: uuid.UUID) -> None:
        repository = PresetRepository(session)
        await self._owned_for_change(repository, preset_id, user_id)
        await repository.soft_delete(preset_id)

    async def like(self, session: AsyncSession, preset_id: uuid.UUID, user_id: uuid.UUID) -> Preset:
        await self._tombstones.guard_write(session, user_id)
        repository = PresetRepository(session)
        await self._referenced(repository, preset_id, user_id)
        await repository.add_like(preset_id, user_id)
        return await self._visible_preset(repository, preset_id, user_id)

    async def unlike(
        self, session: AsyncSession, preset_id: uuid.UUID, user_id: uuid.UUID
    ) -> Preset:
        repository = PresetRepository(session)
        await self._referenced(repository, preset_id, user_id)
        await repository.remove_like(preset_id, user_id)
        return await self._visible_preset(repository, preset_id, user_id)

    async def fork(
        self, session: AsyncSession, preset_id: uuid.UUID, user_id: uuid.UUID, name: str | None
    ) -> Preset:
        await self._tombstones.guard_write(session, user_id)
        repository = PresetRepository(session)
        # The fork references its source: keep the source from being purged meanwhile.
        await self._referenced(repository, preset_id, user_id)
        source = await self._visible_preset(repository, preset_id, user_id)
        fork_id = await repository.insert(
            NewPreset(
                owner_id=user_id,
                name=name or source.name,
                description=source.description,
                prompt=source.prompt,
                category=source.category,
                visibility=Visibility.PRIVATE,
                forked_from_id=source.id,
            )
        )
        return await self._visible_preset(repository, fork_id, user_id)

    async def resolve(
        self, session: AsyncSession, preset_id: uuid.UUID, user_id: uuid.UUID
    ) -> ResolvedPreset:
        preset = await self._visible_preset(PresetRepository(session), preset_id, user_id)
        return ResolvedPreset(
            id=preset.id,
            name=preset.name,
            prompt=preset.prompt,
            category=preset.category,
            version=preset.version,
        )

    async def record_use(
        self, session: AsyncSession, preset_id: uuid.UUID, edit_id: uuid.UUID
    ) -> None:
        repository = PresetRepository(session)
        # The edit already resolved the preset; a later delete does not undo the use.
        if not await repository.exists(preset_id):
            raise PresetNotFound(preset_id)
        recorded_for = await repository.record_use(preset_id, edit_id)
        if recorded_for != preset_id:
            raise EditRecordedForAnotherPreset(edit_id, recorded_for)

    async def purge_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        await PresetRepository(session).purge_user(user_id)
