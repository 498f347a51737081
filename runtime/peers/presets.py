"""Client for presets' internal service: resolving a preset for an edit, counting uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc

from runtime.clients import PeerChannel
from runtime.errors import NotFound
from runtime.peers.errors import peer_error

FILTER = "filter"
ADJUSTMENT = "adjustment"
_CATEGORIES = {
    presets_pb2.PRESET_CATEGORY_FILTER: FILTER,
    presets_pb2.PRESET_CATEGORY_ADJUSTMENT: ADJUSTMENT,
}


@dataclass(frozen=True)
class ResolvedPreset:
    """What an edit snapshots of a preset."""

    id: uuid.UUID
    name: str
    prompt: str
    category: str  # "filter" or "adjustment"
    version: int


class PresetsClient:
    def __init__(self, peer: PeerChannel, *, timeout: float = 10.0) -> None:
        self._peer = peer
        self._stub = presets_pb2_grpc.PresetInternalServiceStub(peer.channel)
        self._timeout = timeout

    async def resolve(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> ResolvedPreset:
        """The preset as `user_id` may use it; NotFound when it is not visible to them."""
        try:
            response = await self._stub.ResolvePreset(
                presets_pb2.ResolvePresetRequest(preset_id=str(preset_id), user_id=str(user_id)),
                metadata=self._peer.metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(
                error,
                peer="presets",
                unavailable="presets are unavailable ({code}); try again",
                verdicts={grpc.StatusCode.NOT_FOUND: lambda _: NotFound("preset", str(preset_id))},
            ) from error
        return ResolvedPreset(
            id=uuid.UUID(response.preset_id),
            name=response.name,
            prompt=response.prompt,
            category=_CATEGORIES.get(response.category, ""),
            version=response.version,
        )

    async def record_use(self, preset_id: uuid.UUID, edit_id: uuid.UUID) -> None:
        """Counts one use; the same edit twice counts once."""
        try:
            await self._stub.RecordPresetUse(
                presets_pb2.RecordPresetUseRequest(preset_id=str(preset_id), edit_id=str(edit_id)),
                metadata=self._peer.metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(
                error, peer="presets", unavailable="presets are unavailable ({code})"
            ) from error
