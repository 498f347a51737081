"""gRPC servicers of assets: validate every field, map protobuf to the domain and back.

A plain RPC (the reads) is one unit of work opened here; an RPC that writes objects or
calls billing (uploads, direct uploads, deletion, the user purge) calls its workflow
(workflows.py), which commits step by step. Errors are runtime DomainErrors; the
interceptor turns them into google.rpc.Status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.api import httpbody_pb2
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from runtime import validation
from runtime.context import current_principal, current_service_caller
from runtime.db import Database
from runtime.errors import InvalidArgument, NotFound
from runtime.pagination import PageTokens, query_fingerprint
from runtime.timestamps import to_timestamp
from services.assets.errors import AssetNotFound
from services.assets.filenames import content_disposition
from services.assets.models import (
    IDEMPOTENCY_KEY_MAX,
    VARIANT_NAMES,
    Asset,
    AssetKind,
    AssetState,
    IdempotencyScope,
)
from services.assets.repository import AssetReads
from services.assets.service import AssetService, RetryKey
from services.assets.workflows import AssetWorkflows, HandedReservation

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

# A raw name longer than this is not a file name; shorter ones are trimmed to 255.
RAW_FILENAME_MAX = 1024
CONTENT_TYPE_MAX = 255
DELETE_BATCH_MAX = 1000

_KIND_TO_PROTO = {
    AssetKind.UPLOAD: assets_pb2.ASSET_KIND_UPLOAD,
    AssetKind.EDIT_RESULT: assets_pb2.ASSET_KIND_EDIT_RESULT,
}
_KIND_FROM_PROTO: dict[int, AssetKind] = {number: kind for kind, number in _KIND_TO_PROTO.items()}
_STATE_TO_PROTO = {
    AssetState.PENDING: assets_pb2.ASSET_STATE_PENDING,
    AssetState.READY: assets_pb2.ASSET_STATE_READY,
}


def asset_to_proto(asset: Asset) -> assets_pb2.Asset:
    return assets_pb2.Asset(
        id=str(asset.id),
        mime_type=asset.mime_type or "",
        size_bytes=asset.size_bytes,
        width=asset.width or 0,
        height=asset.height or 0,
        sha256=asset.sha256 or "",
        filename=asset.filename,
        kind=_KIND_TO_PROTO[asset.kind],
        state=_STATE_TO_PROTO[asset.state],
        create_time=to_timestamp(asset.created_at),
        variants=[variant.name for variant in asset.variants],
    )


def _filename(value: str, field: str) -> str:
    """Rejects what is not a file name at all; service code sanitizes the rest."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if len(value) > RAW_FILENAME_MAX:
        raise InvalidArgument(field, f"must be at most {RAW_FILENAME_MAX} characters")
    return value


def _variant(value: str, field: str = "variant") -> str:
    if value and value not in VARIANT_NAMES:
        raise InvalidArgument(
            field, f"must be empty (the original) or one of: {', '.join(VARIANT_NAMES)}"
        )
    return value


def _kind(value: int, field: str, *, required: bool) -> AssetKind | None:
    number = validation.enum_value(
        value, field, set(_KIND_FROM_PROTO), allow_unspecified=not required
    )
    return _KIND_FROM_PROTO.get(number)


def _idempotency_key(value: str, field: str) -> str | None:
    return validation.idempotency_key(value, field)


def idempotency_key_header(context: Context) -> str | None:
    """The `Idempotency-Key` of an HTTP upload (runtime.validation's one rule: absent,
    or 1-255 printable ASCII characters, taken as sent)."""
    return validation.idempotency_key_header(context.invocation_metadata())


def _handed_reservation(header: assets_pb2.StoreAssetHeader) -> HandedReservation | None:
    """The caller's storage reservation for the stored bytes, when it sends one."""
    reservation_id = validation.text(
        header.reservation_id,
        "header.reservation_id",
        max_length=IDEMPOTENCY_KEY_MAX,
        required=False,
    )
    if not reservation_id:
        if header.reserved_bytes:
            raise InvalidArgument("header.reserved_bytes", "needs header.reservation_id")
        return None
    if header.reserved_bytes < 1:
        raise InvalidArgument("header.reserved_bytes", "must be at least 1 with a reservation")
    return HandedReservation(reservation_id, header.reserved_bytes)


class AssetApi(assets_pb2_grpc.AssetServiceServicer):
    """The public service: the caller is the owner, from the access token."""

    def __init__(
        self,
        *,
        database: Database,
        service: AssetService,
        workflows: AssetWorkflows,
        page_tokens: PageTokens,
        content_cache_seconds: int,
    ) -> None:
        self._database = database
        self._service = service
        self._workflows = workflows
        self._page_tokens = page_tokens
        self._cache_control = f"private, max-age={content_cache_seconds}"

    async def UploadAsset(
        self, request: assets_pb2.UploadAssetRequest, context: Context
    ) -> assets_pb2.UploadAssetResponse:
        owner_id = current_principal().user_id
        filename = _filename(request.filename, "filename")
        if not request.HasField("content"):
            raise InvalidArgument("content", "is required")
        # The declared content type is only the client's opinion: the bytes decide.
        validation.text(
            request.content.content_type,
            "content.content_type",
            max_length=CONTENT_TYPE_MAX,
            required=False,
        )
        key = idempotency_key_header(context)
        asset = await self._workflows.upload(
            owner_id,
            request.content.data,
            filename=filename,
            kind=AssetKind.UPLOAD,
            retry=RetryKey(IdempotencyScope.UPLOAD, key) if key else None,
        )
        return assets_pb2.UploadAssetResponse(asset=asset_to_proto(asset))

    async def ListAssets(
        self, request: assets_pb2.ListAssetsRequest, context: Context
    ) -> assets_pb2.ListAssetsResponse:
        owner_id = current_principal().user_id
        page_size = validation.page_size(request.page_size)
        kind = _kind(request.kind, "kind", required=False)
        # Tokens are bound to the owner and the filter: replaying one elsewhere fails.
        query = query_fingerprint(owner_id, kind.value if kind else "")
        after = self._page_tokens.keyset_after(request.page_token, query)
        async with self._database.transaction() as session:
            page = await self._service.list_assets(
                session, owner_id, kind=kind, after=after, page_size=page_size
            )
        next_token = self._page_tokens.keyset_token(page.next_after, query)
        return assets_pb2.ListAssetsResponse(
            assets=[asset_to_proto(a) for a in page.items], next_page_token=next_token
        )

    async def GetAsset(
        self, request: assets_pb2.GetAssetRequest, context: Context
    ) -> assets_pb2.GetAssetResponse:
        owner_id = current_principal().user_id
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        async with self._database.reader() as reader:
            asset = await self._service.get(AssetReads(reader), owner_id, asset_id)
        return assets_pb2.GetAssetResponse(asset=asset_to_proto(asset))

    async def DeleteAsset(
        self, request: assets_pb2.DeleteAssetRequest, context: Context
    ) -> assets_pb2.DeleteAssetResponse:
        owner_id = current_principal().user_id
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        if not await self._workflows.delete(owner_id, [asset_id]):
            raise AssetNotFound(asset_id)
        return assets_pb2.DeleteAssetResponse()

    async def GetAssetContent(
        self, request: assets_pb2.GetAssetContentRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        owner_id = current_principal().user_id
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        variant = _variant(request.variant)
        async with self._database.reader() as reader:
            content = await self._service.locate(AssetReads(reader), owner_id, asset_id, variant)
        data = await self._service.read(content)
        # The gateway (like Envoy) turns initial metadata into response headers.
        await context.send_initial_metadata(
            (
                ("x-content-type-options", "nosniff"),
                ("content-disposition", content_disposition(content.filename)),
                ("cache-control", self._cache_control),
            )
        )
        return httpbody_pb2.HttpBody(content_type=content.mime_type, data=data)

    async def CreateUploadUrl(
        self, request: assets_pb2.CreateUploadUrlRequest, context: Context
    ) -> assets_pb2.CreateUploadUrlResponse:
        owner_id = current_principal().user_id
        filename = _filename(request.filename, "filename")
        content_type = validation.text(
            request.content_type, "content_type", max_length=CONTENT_TYPE_MAX
        )
        if request.size_bytes <= 0:
            raise InvalidArgument("size_bytes", "must be positive")
        upload = await self._workflows.create_upload_url(
            owner_id,
            filename=filename,
            content_type=content_type.lower(),
            size_bytes=request.size_bytes,
        )
        return assets_pb2.CreateUploadUrlResponse(
            asset_id=str(upload.asset_id),
            upload_url=upload.request.url,
            headers=dict(upload.request.headers),
            expire_time=to_timestamp(upload.request.expires_at),
        )

    async def ConfirmUpload(
        self, request: assets_pb2.ConfirmUploadRequest, context: Context
    ) -> assets_pb2.ConfirmUploadResponse:
        owner_id = current_principal().user_id
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        asset = await self._workflows.confirm_upload(owner_id, asset_id)
        return assets_pb2.ConfirmUploadResponse(asset=asset_to_proto(asset))

    async def GetDownloadUrl(
        self, request: assets_pb2.GetDownloadUrlRequest, context: Context
    ) -> assets_pb2.GetDownloadUrlResponse:
        owner_id = current_principal().user_id
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        variant = _variant(request.variant)
        async with self._database.reader() as reader:
            content = await self._service.locate(AssetReads(reader), owner_id, asset_id, variant)
        presigned = await self._service.download_url(content)
        return assets_pb2.GetDownloadUrlResponse(
            url=presigned.url, expire_time=to_timestamp(presigned.expires_at)
        )


class AssetInternalApi(assets_pb2_grpc.AssetInternalServiceServicer):
    """For other services (service credential): they name the owner they act for."""

    def __init__(
        self, *, database: Database, service: AssetService, workflows: AssetWorkflows
    ) -> None:
        self._database = database
        self._service = service
        self._workflows = workflows

    async def StoreAsset(
        self, request_iterator: AsyncIterator[assets_pb2.StoreAssetRequest], context: Context
    ) -> assets_pb2.StoreAssetResponse:
        current_service_caller()
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("header", "the first message must be the header")
        header = first.header
        owner_id = validation.required_uuid(header.owner_id, "header.owner_id")
        filename = _filename(header.filename, "header.filename")
        kind = _kind(header.kind, "header.kind", required=True)
        assert kind is not None
        idempotency_key = _idempotency_key(header.idempotency_key, "header.idempotency_key")
        handed = _handed_reservation(header)

        async def chunks() -> AsyncIterator[bytes]:
            async for message in messages:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("header", "only the first message may be a header")
                yield message.chunk

        asset = await self._workflows.upload_stream(
            owner_id,
            chunks(),
            filename=filename,
            kind=kind,
            retry=RetryKey(IdempotencyScope.STORE, idempotency_key) if idempotency_key else None,
            handed=handed,
        )
        return assets_pb2.StoreAssetResponse(asset=asset_to_proto(asset))

    async def FindStoredAsset(
        self, request: assets_pb2.FindStoredAssetRequest, context: Context
    ) -> assets_pb2.FindStoredAssetResponse:
        """What StoreAsset stored under a key (ready, or pending while it is under way):
        a caller that crashed after storing adopts the result instead of losing it."""
        current_service_caller()
        owner_id = validation.required_uuid(request.owner_id, "owner_id")
        key = _idempotency_key(request.idempotency_key, "idempotency_key")
        if key is None:
            raise InvalidArgument("idempotency_key", "is required")
        async with self._database.read() as session:
            found = await self._service.stored_under(
                session, owner_id, RetryKey(IdempotencyScope.STORE, key)
            )
        if found is None or found.deleted_at is not None:
            raise NotFound("asset stored under this key", key)
        return assets_pb2.FindStoredAssetResponse(asset=asset_to_proto(found))

    async def GetAssetForOwner(
        self, request: assets_pb2.GetAssetForOwnerRequest, context: Context
    ) -> assets_pb2.GetAssetForOwnerResponse:
        current_service_caller()
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        owner_id = validation.required_uuid(request.owner_id, "owner_id")
        async with self._database.reader() as reader:
            asset = await self._service.get(AssetReads(reader), owner_id, asset_id)
        return assets_pb2.GetAssetForOwnerResponse(asset=asset_to_proto(asset))

    async def ReadAsset(
        self, request: assets_pb2.ReadAssetRequest, context: Context
    ) -> AsyncIterator[assets_pb2.ReadAssetResponse]:
        current_service_caller()
        asset_id = validation.required_uuid(request.asset_id, "asset_id")
        owner_id = validation.required_uuid(request.owner_id, "owner_id")
        variant = _variant(request.variant)
        async with self._database.reader() as reader:
            content = await self._service.locate(AssetReads(reader), owner_id, asset_id, variant)
        first = True
        async for chunk in self._service.stream(content):
            if first:  # metadata in the first message only
                yield assets_pb2.ReadAssetResponse(asset=asset_to_proto(content.asset), chunk=chunk)
                first = False
            else:
                yield assets_pb2.ReadAssetResponse(chunk=chunk)
        if first:  # no bytes at all: still answer what the asset is
            yield assets_pb2.ReadAssetResponse(asset=asset_to_proto(content.asset))

    async def DeleteAssets(
        self, request: assets_pb2.DeleteAssetsRequest, context: Context
    ) -> assets_pb2.DeleteAssetsResponse:
        current_service_caller()
        owner_id = validation.required_uuid(request.owner_id, "owner_id")
        if len(request.asset_ids) > DELETE_BATCH_MAX:
            raise InvalidArgument("asset_ids", f"must hold at most {DELETE_BATCH_MAX} ids")
        asset_ids = [
            validation.required_uuid(value, f"asset_ids[{index}]")
            for index, value in enumerate(request.asset_ids)
        ]
        deleted = await self._workflows.delete(owner_id, asset_ids) if asset_ids else 0
        return assets_pb2.DeleteAssetsResponse(deleted_count=deleted)

    async def PurgeUser(
        self, request: assets_pb2.PurgeUserRequest, context: Context
    ) -> assets_pb2.PurgeUserResponse:
        current_service_caller()
        user_id = validation.required_uuid(request.user_id, "user_id")
        deleted = await self._workflows.purge_user(user_id)
        return assets_pb2.PurgeUserResponse(deleted_count=deleted)
