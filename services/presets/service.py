"""Business rules of presets: who sees, changes, likes, forks and uses what.

Visibility: system presets and public ones are everybody's; an unlisted preset is
reachable by id (get, like, fork, use) but never listed for anyone but its owner; a
private one exists only for its owner. Whatever a caller may not see answers NOT_FOUND,
exactly like a missing preset. System presets are read-only for everyone (PERMISSION_DENIED,
since the caller can see them). Publishing public needs the owner's tier feature
`public_presets`; it is checked when a preset becomes public, so a user whose plan
lapsed can still edit what they published before.

Everything runs inside the caller's unit of work; nothing here commits.
"""

from __future__ import annotations

import datetime
import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.errors import InvalidArgument
from runtime.pagination import FIELD as PAGE_TOKEN_FIELD
from services.presets.errors import (
    EditRecordedForAnotherPreset,
    NotPresetOwner,
    PresetNotFound,
    PresetVersionChanged,
    PublicPresetsNotInTier,
    SystemPresetReadOnly,
)
from services.presets.models import Category, Order, Preset, Scope, Visibility
from services.presets.repository import (
    Cursor,
    Listing,
    NewPreset,
    PresetAccess,
    PresetRepository,
)

PUBLIC_PRESETS_FEATURE = "public_presets"
MAX_SEARCH_TERMS = 8
# Letters and digits: exactly what the 'simple' text search parser makes words of, and
# nothing that could act as a tsquery operator.
_WORD = re.compile(r"[^\W_]+")


class TierFeatures(Protocol):
    """Whether a user's plan includes a feature (identity answers, with a short cache)."""

    async def allows(self, user_id: uuid.UUID, feature: str) -> bool: ...


@dataclass(frozen=True)
class PresetDraft:
    name: str
    description: str
    prompt: str
    category: Category
    visibility: Visibility


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
    # Decoded from the page token: [sort key, id] of the previous page's last row.
    after: list[Any] | None


@dataclass(frozen=True)
class PresetPage:
    presets: list[Preset]
    # Position for the next page's token; None on the last page.
    next_position: list[Any] | None


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


def _cursor(order: Order, position: list[Any]) -> Cursor:
    """Reads a page token's position back; the token is signed, this is defence in depth."""
    try:
        raw_key, raw_id = position
        key: int | datetime.datetime
        if order is Order.NEWEST:
            key = datetime.datetime.fromisoformat(raw_key)
            if key.tzinfo is None:
                raise ValueError("naive time")
        elif isinstance(raw_key, int) and not isinstance(raw_key, bool):
            key = raw_key
        else:
            raise ValueError("count expected")
        return Cursor(key=key, id=uuid.UUID(raw_id))
    except (TypeError, ValueError) as error:
        raise InvalidArgument(PAGE_TOKEN_FIELD, "is not a valid page token") from error


def _position(order: Order, preset: Preset) -> list[Any]:
    if order is Order.NEWEST:
        return [preset.created_at.isoformat(), str(preset.id)]
    count = preset.like_count if order is Order.POPULAR else preset.use_count
    return [count, str(preset.id)]


def _visible(access: PresetAccess, viewer_id: uuid.UUID) -> bool:
    return access.visibility is not Visibility.PRIVATE or access.owner_id == viewer_id


class PresetCatalog:
    def __init__(self, repository: PresetRepository, tiers: TierFeatures) -> None:
        self._repository = repository
        self._tiers = tiers

    async def _require_publishing(self, owner_id: uuid.UUID) -> None:
        if not await self._tiers.allows(owner_id, PUBLIC_PRESETS_FEATURE):
            raise PublicPresetsNotInTier()

    async def _visible_preset(self, preset_id: uuid.UUID, viewer_id: uuid.UUID) -> Preset:
        preset = await self._repository.find_visible(preset_id, viewer_id)
        if preset is None:
            raise PresetNotFound(preset_id)
        return preset

    async def _owned_for_change(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> PresetAccess:
        access = await self._repository.lock(preset_id, "change")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)
        if access.owner_id is None:
            raise SystemPresetReadOnly()
        if access.owner_id != user_id:
            raise NotPresetOwner()
        return access

    async def get(self, preset_id: uuid.UUID, viewer_id: uuid.UUID) -> Preset:
        return await self._visible_preset(preset_id, viewer_id)

    async def browse(self, viewer_id: uuid.UUID, request: Browse) -> PresetPage:
        after = None if request.after is None else _cursor(request.order, request.after)
        rows = await self._repository.list_page(
            Listing(
                viewer_id=viewer_id,
                scope=request.scope,
                order=request.order,
                category=request.category,
                terms=request.terms,
                after=after,
                # One more than asked tells whether another page exists.
                limit=request.page_size + 1,
            )
        )
        page = rows[: request.page_size]
        more = len(rows) > request.page_size
        return PresetPage(
            presets=page,
            next_position=_position(request.order, page[-1]) if more else None,
        )

    async def create(self, owner_id: uuid.UUID, draft: PresetDraft) -> Preset:
        if draft.visibility is Visibility.PUBLIC:
            await self._require_publishing(owner_id)
        preset_id = await self._repository.insert(
            NewPreset(
                owner_id=owner_id,
                name=draft.name,
                description=draft.description,
                prompt=draft.prompt,
                category=draft.category,
                visibility=draft.visibility,
            )
        )
        return await self._visible_preset(preset_id, owner_id)

    async def update(
        self,
        preset_id: uuid.UUID,
        user_id: uuid.UUID,
        changes: PresetChanges,
        expected_version: int | None = None,
    ) -> Preset:
        access = await self._owned_for_change(preset_id, user_id)
        if expected_version is not None and expected_version != access.version:
            raise PresetVersionChanged(expected_version, access.version)
        becomes_public = (
            changes.visibility is Visibility.PUBLIC and access.visibility is not Visibility.PUBLIC
        )
        if becomes_public:
            await self._require_publishing(user_id)
        await self._repository.update(preset_id, changes.columns())
        return await self._visible_preset(preset_id, user_id)

    async def delete(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await self._owned_for_change(preset_id, user_id)
        await self._repository.soft_delete(preset_id)

    async def like(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> Preset:
        access = await self._repository.lock(preset_id, "reference")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)
        await self._repository.add_like(preset_id, user_id)
        return await self._visible_preset(preset_id, user_id)

    async def unlike(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> Preset:
        access = await self._repository.lock(preset_id, "reference")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)
        await self._repository.remove_like(preset_id, user_id)
        return await self._visible_preset(preset_id, user_id)

    async def fork(self, preset_id: uuid.UUID, user_id: uuid.UUID, name: str | None) -> Preset:
        # The fork references its source: keep the source from being purged meanwhile.
        access = await self._repository.lock(preset_id, "reference")
        if access is None or not _visible(access, user_id):
            raise PresetNotFound(preset_id)
        source = await self._visible_preset(preset_id, user_id)
        fork_id = await self._repository.insert(
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
        return await self._visible_preset(fork_id, user_id)

    async def resolve(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> ResolvedPreset:
        preset = await self._visible_preset(preset_id, user_id)
        return ResolvedPreset(
            id=preset.id,
            name=preset.name,
            prompt=preset.prompt,
            category=preset.category,
            version=preset.version,
        )

    async def record_use(self, preset_id: uuid.UUID, edit_id: uuid.UUID) -> None:
        # The edit already resolved the preset; a later delete does not undo the use.
        if not await self._repository.exists(preset_id):
            raise PresetNotFound(preset_id)
        recorded_for = await self._repository.record_use(preset_id, edit_id)
        if recorded_for != preset_id:
            raise EditRecordedForAnotherPreset(edit_id, recorded_for)

    async def purge_user(self, user_id: uuid.UUID) -> None:
        await self._repository.purge_user(user_id)
