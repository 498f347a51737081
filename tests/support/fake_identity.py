"""A stand-in identity service for testing other services on their own.

It is a real grpc.aio server speaking identity's real protos: it publishes a JWKS for a
test Ed25519 key, answers users' tiers (Free and Pro with SPEC's limits, or whatever a
test sets), and records outbox events a test appends. Tokens it issues are verified by
the services under test exactly as identity's own tokens are. End-to-end tests use the
real identity service instead.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import struct_pb2
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.auth import b64url_encode

ISSUER = "pixelshop"
AUDIENCE = "pixelshop"
GIB = 1024**3
MIB = 1024**2

FREE = identity_pb2.Tier(
    code="free",
    name="Free",
    limits=identity_pb2.TierLimits(
        ai_edits_per_month=25,
        storage_bytes=GIB,
        max_projects=20,
        max_upload_bytes=15 * MIB,
        max_pixels=40_000_000,
    ),
)
FREE.features.update({"public_presets": False})
PRO = identity_pb2.Tier(
    code="pro",
    name="Pro",
    limits=identity_pb2.TierLimits(
        ai_edits_per_month=1000,
        storage_bytes=100 * GIB,
        max_projects=0,
        max_upload_bytes=50 * MIB,
        max_pixels=100_000_000,
    ),
    purchasable=True,
)
PRO.features.update({"public_presets": True})


@dataclass
class FakeIdentity:
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)
    tiers: dict[str, identity_pb2.Tier] = field(default_factory=lambda: {"free": FREE, "pro": PRO})
    user_tiers: dict[str, str] = field(default_factory=dict)
    events: list[identity_pb2.Event] = field(default_factory=list)
    # What SetUserTier answers instead of taking the change (None: it takes it).
    set_tier_refusal: grpc.StatusCode | None = None
    server: grpc.aio.Server | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def issue_token(
        self, user_id: uuid.UUID | str, tier: str = "free", *, ttl: int = 900, **overrides: Any
    ) -> str:
        """A real access token for `user_id`; the user gets `tier` in GetUserTier too."""
        self.user_tiers[str(user_id)] = tier
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "sid": str(uuid.uuid4()),
            "tier": tier,
            "iat": now,
            "exp": now + ttl,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})

    def new_user(self, tier: str = "free") -> tuple[uuid.UUID, str]:
        user_id = uuid.uuid4()
        return user_id, self.issue_token(user_id, tier)

    def add_event(self, type_: str, user_id: uuid.UUID | str, **payload: Any) -> None:
        data = struct_pb2.Struct()
        data.update(payload)
        self.events.append(
            identity_pb2.Event(
                # Each event its own transaction: position (n, n).
                xact_id=len(self.events) + 1,
                sequence=len(self.events) + 1,
                id=str(uuid.uuid4()),
                type=type_,
                user_id=str(user_id),
                payload=data,
            )
        )

    async def start(self) -> FakeIdentity:
        self.server = grpc.aio.server()
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(_Public(self), self.server)
        identity_pb2_grpc.add_IdentityInternalServiceServicer_to_server(
            _Internal(self), self.server
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


class _Public(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, fake: FakeIdentity) -> None:
        self.fake = fake

    async def GetJwks(self, request: Any, context: Any) -> identity_pb2.GetJwksResponse:
        public = self.fake.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return identity_pb2.GetJwksResponse(
            keys=[
                identity_pb2.Jwk(
                    kty="OKP",
                    crv="Ed25519",
                    x=b64url_encode(public),
                    kid=self.fake.kid,
                    alg="EdDSA",
                    use="sig",
                )
            ]
        )

    async def ListTiers(self, request: Any, context: Any) -> identity_pb2.ListTiersResponse:
        return identity_pb2.ListTiersResponse(tiers=list(self.fake.tiers.values()))


class _Internal(identity_pb2_grpc.IdentityInternalServiceServicer):
    def __init__(self, fake: FakeIdentity) -> None:
        self.fake = fake

    async def GetUserTier(self, request: Any, context: Any) -> identity_pb2.GetUserTierResponse:
        code = self.fake.user_tiers.get(request.user_id)
        if code is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "user not found")
        return identity_pb2.GetUserTierResponse(tier=self.fake.tiers[code])

    async def SetUserTier(self, request: Any, context: Any) -> identity_pb2.SetUserTierResponse:
        if self.fake.set_tier_refusal is not None:
            await context.abort(self.fake.set_tier_refusal, "refused by the test")
        self.fake.user_tiers[request.user_id] = request.tier_code
        return identity_pb2.SetUserTierResponse()

    async def ListEvents(self, request: Any, context: Any) -> identity_pb2.ListEventsResponse:
        after = (request.after_xact_id, request.after_sequence)
        limit = request.page_size or 100
        later = [e for e in self.fake.events if (e.xact_id, e.sequence) > after]
        wanted = [e for e in later if not request.types or e.type in request.types][:limit]
        last = wanted[-1] if len(wanted) == limit else (later[-1] if later else None)
        following = (last.xact_id, last.sequence) if last is not None else after
        return identity_pb2.ListEventsResponse(
            events=wanted, next_xact_id=following[0], next_sequence=following[1]
        )
