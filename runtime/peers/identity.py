"""Client for identity: public keys (JWKS) and users' tiers.

`TierLookup` is how every service asks for a user's plan (limits and feature flags);
`IdentityClient` implements it with a short cache, tests pass a fake. Ask it before opening
a transaction: a peer call inside one is refused (ADR 0011).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import json_format
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.clients import PeerChannel
from runtime.errors import NotFound
from runtime.events import Event, EventPage, Position
from runtime.peers.errors import peer_error


@dataclass(frozen=True)
class TierInfo:
    """A tier's limits (0 = unlimited) and feature flags, as other services need them."""

    code: str
    name: str = ""
    ai_edits_per_month: int = 0
    storage_bytes: int = 0
    max_projects: int = 0
    max_upload_bytes: int = 0
    max_pixels: int = 0
    features: dict[str, Any] = field(default_factory=dict)

    def allows(self, feature: str) -> bool:
        return bool(self.features.get(feature, False))

    @classmethod
    def from_proto(cls, tier: identity_pb2.Tier) -> TierInfo:
        limits = tier.limits
        return cls(
            code=tier.code,
            name=tier.name,
            ai_edits_per_month=limits.ai_edits_per_month,
            storage_bytes=limits.storage_bytes,
            max_projects=limits.max_projects,
            max_upload_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
            features=json_format.MessageToDict(tier.features),
        )


class TierLookup(Protocol):
    """A user's tier. Raises NotFound for a user identity does not know and Unavailable
    when the answer cannot be had: callers see domain errors, never gRPC ones."""

    async def tier(self, user_id: uuid.UUID) -> TierInfo: ...


class CachedTierLookup(TierLookup, Protocol):
    """A TierLookup with a cache whose entry for one user can be dropped at once (billing
    forgets a tier the moment it changes it, so the next reservation sees the new one)."""

    def forget_tier(self, user_id: uuid.UUID) -> None: ...


class IdentityClient:
    """Identity's public and internal RPCs; implements `CachedTierLookup`."""

    def __init__(self, peer: PeerChannel, *, tier_cache_seconds: float = 30.0) -> None:
        self._peer = peer
        self._public = identity_pb2_grpc.IdentityServiceStub(peer.channel)
        self._internal = identity_pb2_grpc.IdentityInternalServiceStub(peer.channel)
        # By the user id's int: (when it was read, the tier's code). Only ints, floats and
        # strings, which the collector stops tracking (docs/service-conventions.md); the
        # tiers themselves, a handful, are kept once each, as last answered.
        self._tier_cache: dict[int, tuple[float, str]] = {}
        self._tiers: dict[str, TierInfo] = {}
        self._tier_cache_seconds = tier_cache_seconds

    async def jwks(self) -> list[dict[str, str]]:
        # wait_for_ready: right after start-up identity may not be listening yet.
        response = await self._public.GetJwks(
            identity_pb2.GetJwksRequest(), timeout=5, wait_for_ready=True
        )
        return [
            {"kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.use}
            for k in response.keys
        ]

    async def tier(self, user_id: uuid.UUID) -> TierInfo:
        """The user's tier (`TierLookup`), cached briefly: a tier change shows within the
        cache time."""
        now = time.monotonic()
        cached = self._tier_cache.get(user_id.int)
        if cached and now - cached[0] < self._tier_cache_seconds:
            return self._tiers[cached[1]]
        try:
            response = await self._internal.GetUserTier(
                identity_pb2.GetUserTierRequest(user_id=str(user_id)),
                metadata=self._peer.metadata(),
                timeout=5,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(
                error,
                peer="identity",
                unavailable="cannot read the user's plan right now; try again",
                verdicts={grpc.StatusCode.NOT_FOUND: lambda _: NotFound("user", str(user_id))},
            ) from error
        tier = TierInfo.from_proto(response.tier)
        self._tiers[tier.code] = tier
        self._tier_cache[user_id.int] = (now, tier.code)
        if len(self._tier_cache) > 10_000:
            self._tier_cache.clear()
        return tier

    def forget_tier(self, user_id: uuid.UUID) -> None:
        self._tier_cache.pop(user_id.int, None)

    async def set_user_tier(self, user_id: uuid.UUID, tier_code: str) -> None:
        """NotFound when identity knows no such (live) user or tier; Unavailable otherwise."""
        try:
            await self._internal.SetUserTier(
                identity_pb2.SetUserTierRequest(user_id=str(user_id), tier_code=tier_code),
                metadata=self._peer.metadata(),
                timeout=10,
            )
        except grpc.aio.AioRpcError as error:
            raise peer_error(
                error,
                peer="identity",
                unavailable="identity did not take the tier change; try again",
                verdicts={
                    grpc.StatusCode.NOT_FOUND: lambda _: NotFound(
                        "user or tier", f"{user_id} {tier_code}"
                    )
                },
            ) from error
        self.forget_tier(user_id)

    async def events(
        self, after: Position, limit: int = 100, types: Sequence[str] = ()
    ) -> EventPage:
        """The outbox after `after` (only `types`, if given): implements
        `runtime.events.EventSource`. Reporting `after` is also how identity learns this
        service's position, below which it may prune."""
        response = await self._internal.ListEvents(
            identity_pb2.ListEventsRequest(
                after_xact_id=after.xact_id,
                after_sequence=after.sequence,
                page_size=limit,
                types=list(types),
            ),
            metadata=self._peer.metadata(),
            timeout=10,
        )
        events = [
            Event(
                position=Position(raw.xact_id, raw.sequence),
                id=uuid.UUID(raw.id),
                type=raw.type,
                user_id=uuid.UUID(raw.user_id),
                payload=json_format.MessageToDict(raw.payload),
            )
            for raw in response.events
        ]
        following = Position(response.next_xact_id, response.next_sequence)
        return EventPage(events, max(after, following))
