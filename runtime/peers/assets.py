"""Client for assets' internal service: what another service needs of users' images."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from runtime.clients import PeerChannel
from runtime.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    Unavailable,
)
from runtime.peers.errors import peer_error

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AssetInfo:
    id: uuid.UUID
    mime_type: str
    size_bytes: int
    width: int
    height: int
    ready: bool

    @classmethod
    def from_proto(cls, asset: assets_pb2.Asset) -> AssetInfo:
        return cls(
            id=uuid.UUID(asset.id),
            mime_type=asset.mime_type,
            size_bytes=asset.size_bytes,
            width=asset.width,
            height=asset.height,
            ready=asset.state == assets_pb2.ASSET_STATE_READY,
        )


def _domain_error(error: grpc.aio.AioRpcError, asset_id: object = "") -> DomainError:
    return peer_error(
        error,
        peer="assets",
        unavailable="image storage is unavailable ({code}); try again",
        verdicts={
            grpc.StatusCode.NOT_FOUND: lambda _: NotFound("asset", str(asset_id)),
            grpc.StatusCode.RESOURCE_EXHAUSTED: lambda message: QuotaExceeded(
                message or "storage limit of your plan reached"
            ),
            grpc.StatusCode.INVALID_ARGUMENT: lambda message: InvalidArgument(
                "asset", message or "was refused by assets"
            ),
            grpc.StatusCode.FAILED_PRECONDITION: lambda message: FailedPrecondition(
                message or "assets refused the request"
            ),
        },
    )


class AssetsClient:
    def __init__(self, peer: PeerChannel, *, timeout: float = 30.0) -> None:
        self._peer = peer
        self._stub = assets_pb2_grpc.AssetInternalServiceStub(peer.channel)
        self._timeout = timeout

    async def get_for_owner(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> AssetInfo:
        """The owner's ready asset; NotFound for anything else (missing, someone else's)."""
        try:
            response = await self._stub.GetAssetForOwner(
                assets_pb2.GetAssetForOwnerRequest(asset_id=str(asset_id), owner_id=str(owner_id)),
                metadata=self._peer.metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error, asset_id) from error
        return AssetInfo.from_proto(response.asset)

    async def read(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> tuple[AssetInfo, bytes]:
        """The asset's metadata and its bytes."""
        info: AssetInfo | None = None
        data = bytearray()
        try:
            call = self._stub.ReadAsset(
                assets_pb2.ReadAssetRequest(asset_id=str(asset_id), owner_id=str(owner_id)),
                metadata=self._peer.metadata(),
                timeout=self._timeout,
            )
            async for message in call:
                if message.HasField("asset"):
                    info = AssetInfo.from_proto(message.asset)
                data += message.chunk
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error, asset_id) from error
        if info is None:
            raise Unavailable("image storage answered no metadata; try again")
        return info, bytes(data)

    async def store(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        *,
        filename: str,
        idempotency_key: str,
        reservation_id: str | None = None,
        reserved_bytes: int = 0,
    ) -> AssetInfo:
        """Stores an edit result; the same key (and bytes) answers the same asset. With a
        storage reservation the caller made (`reserved_bytes` at least the data's size),
        assets commits it instead of reserving anew and credits back what is unused."""
        header = assets_pb2.StoreAssetHeader(
            owner_id=str(owner_id),
            filename=filename,
            kind=assets_pb2.ASSET_KIND_EDIT_RESULT,
            idempotency_key=idempotency_key,
            reservation_id=reservation_id or "",
            reserved_bytes=reserved_bytes if reservation_id else 0,
        )

        async def messages() -> AsyncIterator[assets_pb2.StoreAssetRequest]:
            yield assets_pb2.StoreAssetRequest(header=header)
            for start in range(0, len(data), CHUNK_BYTES):
                yield assets_pb2.StoreAssetRequest(chunk=data[start : start + CHUNK_BYTES])

        try:
            response = await self._stub.StoreAsset(
                messages(), metadata=self._peer.metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error) from error
        return AssetInfo.from_proto(response.asset)

    async def find_stored(self, owner_id: uuid.UUID, idempotency_key: str) -> AssetInfo | None:
        """What `store` stored under the key: ready, or not ready while that store is
        still under way; None when nothing was (or it was given up)."""
        try:
            response = await self._stub.FindStoredAsset(
                assets_pb2.FindStoredAssetRequest(
                    owner_id=str(owner_id), idempotency_key=idempotency_key
                ),
                metadata=self._peer.metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _domain_error(error) from error
        return AssetInfo.from_proto(response.asset)

    async def delete(self, owner_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> int:
        """Deletes the owner's assets (assets credits their storage); unknown ids ignored."""
        deleted = 0
        for start in range(0, len(asset_ids), 1000):
            batch = asset_ids[start : start + 1000]
            try:
                response = await self._stub.DeleteAssets(
                    assets_pb2.DeleteAssetsRequest(
                        owner_id=str(owner_id), asset_ids=[str(a) for a in batch]
                    ),
                    metadata=self._peer.metadata(),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise _domain_error(error) from error
            deleted += response.deleted_count
        return deleted
