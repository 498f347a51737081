"""A small test client for the presets service: users, stubs and error details."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.config import runtime_role
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import INTERNAL_SECRET

FILTER = presets_pb2.PRESET_CATEGORY_FILTER
ADJUSTMENT = presets_pb2.PRESET_CATEGORY_ADJUSTMENT
PRIVATE = presets_pb2.PRESET_VISIBILITY_PRIVATE
UNLISTED = presets_pb2.PRESET_VISIBILITY_UNLISTED
PUBLIC = presets_pb2.PRESET_VISIBILITY_PUBLIC
# Listing filters are names, as in the query string (`?scope=mine&orderBy=popular`).
SYSTEM_SCOPE = "system"
MINE = "mine"
COMMUNITY = "community"
NEWEST = "newest"
POPULAR = "popular"
USED = "used"


def unique_word() -> str:
    """A word no other test uses, to find one's own presets in shared listings."""
    return "w" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class Failure:
    """A failed call: code, message and the google.rpc.Status details."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str


async def failure(call: Awaitable[Any]) -> Failure:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        reason = field = ""
        for key, value in error.trailing_metadata() or ():
            if key != "grpc-status-details-bin":
                continue
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    field = bad.field_violations[0].field
        return Failure(error.code(), error.details() or "", reason, field)
    raise AssertionError("the call succeeded")


async def wait_for_lock_waits(admin_engine: AsyncEngine, count: int) -> None:
    """Returns once `count` of the service's connections wait for a lock (tests that
    stage a race hold a lock as the admin role, start the calls, then release it).
    Each look is its own transaction: pg_stat_activity is a snapshot per transaction."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = :role AND wait_event_type = 'Lock'"
    )
    for _ in range(6000):  # a bound only so that a broken test cannot hang the run
        async with admin_engine.connect() as connection:
            result = await connection.execute(waiting, {"role": runtime_role("presets")})
        if result.scalar_one() >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} calls never waited for a lock")


class PresetsClient:
    def __init__(self, channel: grpc.aio.Channel, identity: FakeIdentity) -> None:
        self.public = presets_pb2_grpc.PresetServiceStub(channel)
        self.internal = presets_pb2_grpc.PresetInternalServiceStub(channel)
        self.identity = identity
        self._service_tokens = ServiceTokens(INTERNAL_SECRET, "projects")

    def user(self, tier: str = "free") -> User:
        user_id, token = self.identity.new_user(tier)
        return User(user_id, token)

    def set_tier(self, user: User, tier: str) -> None:
        self.identity.user_tiers[str(user.id)] = tier

    def service_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((SERVICE_TOKEN_METADATA, self._service_tokens.token()),)

    async def create(
        self,
        user: User,
        name: str = "My preset",
        *,
        prompt: str = "Make it look like an old postcard.",
        description: str = "",
        category: int = FILTER,
        visibility: int = PRIVATE,
    ) -> presets_pb2.Preset:
        response = await self.public.CreatePreset(
            presets_pb2.CreatePresetRequest(
                preset=presets_pb2.Preset(
                    name=name,
                    prompt=prompt,
                    description=description,
                    category=category,
                    visibility=visibility,
                )
            ),
            metadata=user.metadata,
        )
        return response.preset

    async def get(self, user: User, preset_id: str) -> presets_pb2.Preset:
        response = await self.public.GetPreset(
            presets_pb2.GetPresetRequest(preset_id=preset_id), metadata=user.metadata
        )
        return response.preset

    async def like(self, user: User, preset_id: str) -> presets_pb2.Preset:
        response = await self.public.LikePreset(
            presets_pb2.LikePresetRequest(preset_id=preset_id), metadata=user.metadata
        )
        return response.preset

    async def unlike(self, user: User, preset_id: str) -> presets_pb2.Preset:
        response = await self.public.UnlikePreset(
            presets_pb2.UnlikePresetRequest(preset_id=preset_id), metadata=user.metadata
        )
        return response.preset

    async def list(self, user: User, **fields: Any) -> presets_pb2.ListPresetsResponse:
        response: presets_pb2.ListPresetsResponse = await self.public.ListPresets(
            presets_pb2.ListPresetsRequest(**fields), metadata=user.metadata
        )
        return response

    async def list_ids(self, user: User, **fields: Any) -> list[str]:
        """Every page of a listing, in order."""
        ids: list[str] = []
        token = ""
        while True:
            page = await self.list(user, page_token=token, **fields)
            ids += [p.id for p in page.presets]
            token = page.next_page_token
            if not token:
                return ids

    async def record_use(self, preset_id: str, edit_id: str | None = None) -> None:
        await self.internal.RecordPresetUse(
            presets_pb2.RecordPresetUseRequest(
                preset_id=preset_id, edit_id=edit_id or str(uuid.uuid4())
            ),
            metadata=self.service_metadata(),
        )
