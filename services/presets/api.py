"""gRPC servicers of presets: validate every field, map protobuf to the domain and back.

Each plain RPC is one unit of work opened here (`database.transaction()`, or `read()` for
GetPreset's single statement) and handed to the catalog; CreatePreset and UpdatePreset may
need the owner's tier first and go through the publish workflow (workflows.py), which asks
identity before it opens its transaction. Field names in INVALID_ARGUMENT errors are the
request's own (`preset.name` in CreatePreset, `name` in UpdatePreset).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, TypeAlias

import grpc
from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc

from runtime import validation
from runtime.context import current_principal, current_service_caller
from runtime.db import Database
from runtime.errors import InvalidArgument
from runtime.pagination import PageTokens, query_fingerprint
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
from services.presets.repository import PresetReads
from services.presets.service import (
    Browse,
    PresetCatalog,
    PresetChanges,
    PresetDraft,
    search_terms,
    sort_key_type,
)
from services.presets.workflows import PresetPublishing

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

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


def _idempotency_key(context: Context) -> str | None:
    """CreatePreset's `Idempotency-Key` (optional; runtime.validation's one rule)."""
    return validation.idempotency_key_header(context.invocation_metadata())


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


def _browse_fingerprint(viewer_id: uuid.UUID, browse: Browse) -> str:
    """What a page token is bound to: everything that selects or orders the rows."""
    category = browse.category.value if browse.category else None
    return query_fingerprint(
        viewer_id, browse.scope.value, browse.order.value, category, " ".join(browse.terms)
    )


class PresetApi(presets_pb2_grpc.PresetServiceServicer):
    def __init__(
        self,
        *,
        database: Database,
        catalog: PresetCatalog,
        publishing: PresetPublishing,
        page_tokens: PageTokens,
    ) -> None:
        self._database = database
        self._catalog = catalog
        self._publishing = publishing
        self._page_tokens = page_tokens

    async def ListPresets(
        self, request: presets_pb2.ListPresetsRequest, context: Context
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
        after = self._page_tokens.keyset_after(
            request.page_token, fingerprint, sort_key_type(browse.order)
        )
        browse = dataclasses.replace(browse, after=after)
        async with self._database.transaction() as session:
            page = await self._catalog.browse(session, viewer_id, browse)
        return presets_pb2.ListPresetsResponse(
            presets=[preset_message(p) for p in page.items],
            next_page_token=self._page_tokens.keyset_token(page.next_after, fingerprint),
        )

    async def GetPreset(
        self, request: presets_pb2.GetPresetRequest, context: Context
    ) -> presets_pb2.GetPresetResponse:
        viewer_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.reader() as reader:  # one statement, no session (ADR 0020)
            preset = await self._catalog.get(PresetReads(reader), preset_id, viewer_id)
        return presets_pb2.GetPresetResponse(preset=preset_message(preset))

    async def CreatePreset(
        self, request: presets_pb2.CreatePresetRequest, context: Context
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
        preset = await self._publishing.create(
            owner_id, draft, idempotency_key=_idempotency_key(context)
        )
        return presets_pb2.CreatePresetResponse(preset=preset_message(preset))

    async def UpdatePreset(
        self, request: presets_pb2.UpdatePresetRequest, context: Context
    ) -> presets_pb2.UpdatePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        if request.expected_version < 0:
            raise InvalidArgument("expected_version", "must not be negative")
        changes = _changes(request)
        preset = await self._publishing.update(
            preset_id, user_id, changes, expected_version=request.expected_version or None
        )
        return presets_pb2.UpdatePresetResponse(preset=preset_message(preset))

    async def DeletePreset(
        self, request: presets_pb2.DeletePresetRequest, context: Context
    ) -> presets_pb2.DeletePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            await self._catalog.delete(session, preset_id, user_id)
        return presets_pb2.DeletePresetResponse()

    async def LikePreset(
        self, request: presets_pb2.LikePresetRequest, context: Context
    ) -> presets_pb2.LikePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            preset = await self._catalog.like(session, preset_id, user_id)
        return presets_pb2.LikePresetResponse(preset=preset_message(preset))

    async def UnlikePreset(
        self, request: presets_pb2.UnlikePresetRequest, context: Context
    ) -> presets_pb2.UnlikePresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        async with self._database.transaction() as session:
            preset = await self._catalog.unlike(session, preset_id, user_id)
        return presets_pb2.UnlikePresetResponse(preset=preset_message(preset))

    async def ForkPreset(
        self, request: presets_pb2.ForkPresetRequest, context: Context
    ) -> presets_pb2.ForkPresetResponse:
        user_id = current_principal().user_id
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        name = validation.text(request.name, "name", max_length=NAME_MAX, required=False)
        async with self._database.transaction() as session:
            preset = await self._catalog.fork(session, preset_id, user_id, name or None)
        return presets_pb2.ForkPresetResponse(preset=preset_message(preset))


class PresetInternalApi(presets_pb2_grpc.PresetInternalServiceServicer):
    """Calls from other services. The interceptor already demands the service credential
    (AuthPolicy.internal_services); each method asserts it again, so a servicer wired
    into the wrong policy fails closed."""

    def __init__(self, *, database: Database, catalog: PresetCatalog) -> None:
        self._database = database
        self._catalog = catalog

    async def ResolvePreset(
        self, request: presets_pb2.ResolvePresetRequest, context: Context
    ) -> presets_pb2.ResolvePresetResponse:
        current_service_caller()
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        user_id = validation.required_uuid(request.user_id, "user_id")
        async with self._database.transaction() as session:
            resolved = await self._catalog.resolve(session, preset_id, user_id)
        return presets_pb2.ResolvePresetResponse(
            preset_id=str(resolved.id),
            name=resolved.name,
            prompt=resolved.prompt,
            category=_CATEGORY_NUMBERS[resolved.category],
            version=resolved.version,
        )

    async def RecordPresetUse(
        self, request: presets_pb2.RecordPresetUseRequest, context: Context
    ) -> presets_pb2.RecordPresetUseResponse:
        current_service_caller()
        preset_id = validation.required_uuid(request.preset_id, "preset_id")
        edit_id = validation.required_uuid(request.edit_id, "edit_id")
        async with self._database.transaction() as session:
            await self._catalog.record_use(session, preset_id, edit_id)
        return presets_pb2.RecordPresetUseResponse()

    async def PurgeUser(
        self, request: presets_pb2.PurgeUserRequest, context: Context
    ) -> presets_pb2.PurgeUserResponse:
        current_service_caller()
        user_id = validation.required_uuid(request.user_id, "user_id")
        async with self._database.transaction() as session:
            await self._catalog.purge_user(session, user_id)
        return presets_pb2.PurgeUserResponse()
