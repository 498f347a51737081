"""gRPC servicers of presets: validate every field, map protobuf to the domain and back.

Each RPC is one unit of work: it opens a transaction, builds the catalog on it, and
commits when the call succeeds. Field names in INVALID_ARGUMENT errors are the request's
own (`preset.name` in CreatePreset, `name` in UpdatePreset).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession

from runtime import validation
from runtime.context import current_principal, current_service_caller
from runtime.db import Database
from runtime.errors import InvalidArgument
from runtime.pagination import PageTokens
from runtime.timestamps import to_timestamp
from services.presets.models import (
    DESCRIPTION_MAX,
    NAME_MAX,
    PROMPT_MAX,
    Category,
    Order,
    Preset,
    Scope,
    Visibility,
)
from services.presets.repository import PresetRepository
from services.presets.service import (
    Browse,
    PresetCatalog,
    PresetChanges,
    PresetDraft,
    TierFeatures,
    search_terms,
)

QUERY_MAX = 200

# Domain values <-> proto enum numbers; a number not in these maps is INVALID_ARGUMENT.
_CATEGORY_NUMBERS: dict[Category, presets_pb2.PresetCategory] = {
    Category.FILTER: presets_pb2.PRESET_CATEGORY_FILTER,
    Category.ADJUSTMENT: presets_pb2.PRESET_CATEGORY_ADJUSTMENT,
}
_CATEGORIES: dict[int, Category] = {n: c for c, n in _CATEGORY_NUMBERS.items()}
_VISIBILITY_NUMBERS: dict[Visibility, presets_pb2.PresetVisibility] = {
    Visibility.PRIVATE: presets_pb2.PRESET_VISIBILITY_PRIVATE,
    Visibility.UNLISTED: presets_pb2.PRESET_VISIBILITY_UNLISTED,
    Visibility.PUBLIC: presets_pb2.PRESET_VISIBILITY_PUBLIC,
}
_VISIBILITIES: dict[int, Visibility] = {n: v for v, n in _VISIBILITY_NUMBERS.items()}
# Listing filters are plain names in the query string (SPEC 6: `?scope=mine&orderBy=popular`).
_SCOPE_NAMES: dict[str, Scope] = {scope.value: scope for scope in Scope}
_ORDER_NAMES: dict[str, Order] = {order.value: order for order in Order}
_CATEGORY_NAMES: dict[str, Category | None] = {
    **{category.value: category for category in Category},
    # The resource prints categories as enum names; accept those back.
    **{presets_pb2.PresetCategory.Name(n).lower(): c for c, n in _CATEGORY_NUMBERS.items()},
}
_UPDATABLE = ("name", "description", "prompt", "category", "visibility")


def _name(value: str, field: str) -> str:
    return validation.text(value, field, max_length=NAME_MAX)


def _description(value: str, field: str) -> str:
    return validation.text(
        value, field, max_length=DESCRIPTION_MAX, required=False, single_line=False
    )


def _prompt(value: str, field: str) -> str:
    return validation.text(value, field, max_length=PROMPT_MAX, single_line=False)


def _category(value: int, field: str) -> Category:
    if value == presets_pb2.PRESET_CATEGORY_UNSPECIFIED:
        raise InvalidArgument(field, "is required (filter or adjustment)")
    validation.enum_value(value, field, set(_CATEGORIES))
    return _CATEGORIES[value]


def _visibility(value: int, field: str, *, default: Visibility | None) -> Visibility:
    if value == presets_pb2.PRESET_VISIBILITY_UNSPECIFIED and default is not None:
        return default
    if value == presets_pb2.PRESET_VISIBILITY_UNSPECIFIED:
        raise InvalidArgument(field, "is required (private, unlisted or public)")
    validation.enum_value(value, field, set(_VISIBILITIES))
    return _VISIBILITIES[value]


def preset_message(preset: Preset) -> presets_pb2.Preset:
    return presets_pb2.Preset(
        id=str(preset.id),
        owner_id="" if preset.owner_id is None else str(preset.owner_id),
        name=preset.name,
        description=preset.description,
        prompt=preset.prompt,
        category=_CATEGORY_NUMBERS[preset.category],
        visibility=_VISIBILITY_NUMBERS[preset.visibility],
        forked_from_id="" if preset.forked_from_id is None else str(preset.forked_from_id),
        forked_from_name=preset.forked_from_name or "",
        like_count=preset.like_count,
        use_count=preset.use_count,
        version=preset.version,
        system=preset.system,
        liked=preset.liked,
        create_time=to_timestamp(preset.created_at),
        update_time=to_timestamp(preset.updated_at),
    )


def _changes(request: presets_pb2.UpdatePresetRequest) -> PresetChanges:
    """The fields named in update_mask, or else the ones present in the request."""
    if request.update_mask.paths:
        named = list(request.update_mask.paths)
        for path in named:
            if path not in _UPDATABLE:
                raise InvalidArgument(
                    "update_mask", f"names {path!r}; updatable: {', '.join(_UPDATABLE)}"
                )
    else:
        named = [field for field in _UPDATABLE if request.HasField(field)]
    if not named:
        raise InvalidArgument(
            "update_mask", f"nothing to change; set one of {', '.join(_UPDATABLE)}"
        )
    return PresetChanges(
        name=_name(request.name, "name") if "name" in named else None,
        description=_description(request.description, "description")
        if "description" in named
        else None,
        prompt=_prompt(request.prompt, "prompt") if "prompt" in named else None,
        category=_category(request.category, "category") if "category" in named else None,
        visibility=_visibility(request.visibility, "visibility", default=None)
        if "visibility" in named
        else None,
    )


def _catalog(session: AsyncSession, tiers: TierFeatures) -> PresetCatalog:
    return PresetCatalog(PresetRepository(session), tiers)


def _browse_fingerprint(viewer_id: uuid.UUID, browse: Browse) -> str:
    """What a page token is bound to: everything that selects or orders the rows."""
    category = browse.category.value if browse.category else ""
    return "|".join(
        [str(viewer_id), browse.scope.value, browse.order.value, category, " ".join(browse.terms)]
    )


class PresetApi(presets_pb2_grpc.PresetServiceServicer):
    def __init__(self, database: Database, tiers: TierFeatures, page_tokens: PageTokens) -> None:
        self._database = database
        self._tiers = tiers
        self._page_tokens = page_tokens

    async def ListPresets(
        self, request: presets_pb2.ListPresetsRequest, context: Any
    ) -> presets_pb2.ListPresetsResponse:
        viewer_id = current_principal().user_id
        query = validation.text(request.query, "query", max_length=QUERY_MAX, required=False)
        terms = search_terms(query)
        if query and not terms:
            raise InvalidArgument("query", "must contain at least one letter or digit")
        browse = Browse(
            scope=validation.choice(request.scope, "scope", _SCOPE_NAMES, default=Scope.ALL),
            order=validation.choice(
                request.order_by, "order_by", _ORDER_NAMES, default=Order.NEWEST
            ),
            category=validation.choice(request.category, "category", _CATEGORY_NAMES, default=None),
            terms=terms,
            page_size=validation.page_size(request.page_size),
            after=None,
        )
        fingerprint = _browse_fingerprint(viewer_id, browse)
        browse = dataclasses.replace(
            browse, after=self._page_tokens.decode(request.page_token, fingerprint)
        )
        async with self._database.transaction() as session:
            page = await _catalog(session, self._tiers).browse(viewer_id, browse)
        return presets_pb2.ListPresetsResponse(
            presets=[preset_message(p) for p in page.presets],
            next_page_token=""
            if page.next_position is None
            else self._page_tokens.encode(page.next_position, fingerprint),
        )

    async def GetPreset(
        self, request: presets_pb2.GetPresetRequest, context: Any
    ) -> presets_pb2.GetPresetResponse:
        viewer_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.read() as session:  # one statement: no snapshot needed
            preset = await _catalog(session, self._tiers).get(preset_id, viewer_id)
        return presets_pb2.GetPresetResponse(preset=preset_message(preset))

    async def CreatePreset(
        self, request: presets_pb2.CreatePresetRequest, context: Any
    ) -> presets_pb2.CreatePresetResponse:
        owner_id = current_principal().user_id
        if not request.HasField("preset"):
            raise InvalidArgument("preset", "is required")
        given = request.preset
        # Output-only fields (id, counts, owner...) are ignored, as AIP-203 asks.
        draft = PresetDraft(
            name=_name(given.name, "preset.name"),
            description=_description(given.description, "preset.description"),
            prompt=_prompt(given.prompt, "preset.prompt"),
            category=_category(given.category, "preset.category"),
            visibility=_visibility(
                given.visibility, "preset.visibility", default=Visibility.PRIVATE
            ),
        )
        async with self._database.transaction() as session:
            preset = await _catalog(session, self._tiers).create(owner_id, draft)
        return presets_pb2.CreatePresetResponse(preset=preset_message(preset))

    async def UpdatePreset(
        self, request: presets_pb2.UpdatePresetRequest, context: Any
    ) -> presets_pb2.UpdatePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        if request.expected_version < 0:
            raise InvalidArgument("expected_version", "must not be negative")
        changes = _changes(request)
        async with self._database.transaction() as session:
            preset = await _catalog(session, self._tiers).update(
                preset_id, user_id, changes, expected_version=request.expected_version or None
            )
        return presets_pb2.UpdatePresetResponse(preset=preset_message(preset))

    async def DeletePreset(
        self, request: presets_pb2.DeletePresetRequest, context: Any
    ) -> presets_pb2.DeletePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            await _catalog(session, self._tiers).delete(preset_id, user_id)
        return presets_pb2.DeletePresetResponse()

    async def LikePreset(
        self, request: presets_pb2.LikePresetRequest, context: Any
    ) -> presets_pb2.LikePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            preset = await _catalog(session, self._tiers).like(preset_id, user_id)
        return presets_pb2.LikePresetResponse(preset=preset_message(preset))

    async def UnlikePreset(
        self, request: presets_pb2.UnlikePresetRequest, context: Any
    ) -> presets_pb2.UnlikePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            preset = await _catalog(session, self._tiers).unlike(preset_id, user_id)
        return presets_pb2.UnlikePresetResponse(preset=preset_message(preset))

    async def ForkPreset(
        self, request: presets_pb2.ForkPresetRequest, context: Any
    ) -> presets_pb2.ForkPresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        name = validation.text(request.name, "name", max_length=NAME_MAX, required=False)
        async with self._database.transaction() as session:
            preset = await _catalog(session, self._tiers).fork(preset_id, user_id, name or None)
        return presets_pb2.ForkPresetResponse(preset=preset_message(preset))


class PresetInternalApi(presets_pb2_grpc.PresetInternalServiceServicer):
    """Calls from other services. The interceptor already demands the service credential
    (AuthPolicy.internal_services); each method asserts it again, so a servicer wired
    into the wrong policy fails closed."""

    def __init__(self, database: Database, tiers: TierFeatures) -> None:
        self._database = database
        self._tiers = tiers

    async def ResolvePreset(
        self, request: presets_pb2.ResolvePresetRequest, context: Any
    ) -> presets_pb2.ResolvePresetResponse:
        current_service_caller()
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        user_id = validation.required_uuid(request.user_id, "user_id")
        async with self._database.transaction() as session:
            resolved = await _catalog(session, self._tiers).resolve(preset_id, user_id)
        return presets_pb2.ResolvePresetResponse(
            preset_id=str(resolved.id),
            name=resolved.name,
            prompt=resolved.prompt,
            category=_CATEGORY_NUMBERS[resolved.category],
            version=resolved.version,
        )

    async def RecordPresetUse(
        self, request: presets_pb2.RecordPresetUseRequest, context: Any
    ) -> presets_pb2.RecordPresetUseResponse:
        current_service_caller()
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        edit_id = validation.required_uuid(request.edit_id, "edit_id")
        async with self._database.transaction() as session:
            await _catalog(session, self._tiers).record_use(preset_id, edit_id)
        return presets_pb2.RecordPresetUseResponse()

    async def PurgeUser(
        self, request: presets_pb2.PurgeUserRequest, context: Any
    ) -> presets_pb2.PurgeUserResponse:
        current_service_caller()
        user_id = validation.required_uuid(request.user_id, "user_id")
        async with self._database.transaction() as session:
            await _catalog(session, self._tiers).purge_user(user_id)
        return presets_pb2.PurgeUserResponse()
