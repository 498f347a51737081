"""Tokens: user access tokens (EdDSA JWTs from identity) and service credentials.

Every service verifies access tokens itself against identity's JWKS; keys are cached
and fetched again when a token names a `kid` we have not seen (rate-limited, so a flood
of forged kids cannot hammer identity). Only EdDSA is accepted: `alg=none`, HMAC
confusion and foreign keys all fail. Internal RPCs require a short-lived service token
signed with the key all services share (PIXELSHOP_INTERNAL_SECRET).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from runtime.context import Principal, ServiceCaller
from runtime.errors import PermissionDenied, Unauthenticated

ACCESS_TOKEN_ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["sub", "sid", "tier", "iat", "exp", "iss", "aud", "jti"]
SERVICE_TOKEN_METADATA = "x-pixelshop-service-token"
SERVICE_TOKEN_AUDIENCE = "pixelshop-internal"
SERVICE_TOKEN_TTL = 300


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url_encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def public_key_from_jwk(jwk: dict[str, str]) -> Ed25519PublicKey | None:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not jwk.get("x"):
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    except ValueError:
        return None


class KeySource(Protocol):
    async def public_key(self, kid: str) -> Ed25519PublicKey | None: ...


class JwksKeySource:
    """Identity's published keys, cached; an unknown kid triggers at most one refetch."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Sequence[dict[str, str]]]],
        *,
        ttl_seconds: float = 300.0,
        min_refetch_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        jwks = await self._fetch()
        keys = {}
        for jwk in jwks:
            key = public_key_from_jwk(jwk)
            if key is not None and jwk.get("kid"):
                keys[jwk["kid"]] = key
        self._keys = keys
        self._fetched_at = self._clock()

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._ttl
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            recently = self._fetched_at is not None and now - self._fetched_at < self._min_refetch
            stale = self._fetched_at is None or now - self._fetched_at > self._ttl
            if (kid not in self._keys and not recently) or stale:
                try:
                    await self._refresh()
                except Exception as error:
                    if not self._keys:
                        raise Unauthenticated("token keys are unavailable") from error
            return self._keys.get(kid)


# A verified token as the cache keeps it: (user id, session id, tier, token id, expiry),
# strings and an int. A plain tuple of such values is one the garbage collector stops
# tracking, so 10,000 remembered tokens add nothing to its full collections (ADR 0025);
# a Principal and its two UUIDs would be three tracked objects each.
_Verified: TypeAlias = tuple[str, str, str, str, int]


def _principal(verified: _Verified) -> Principal:
    user_id, session_id, tier, token_id, expires_at = verified
    return Principal(
        user_id=uuid.UUID(user_id),
        session_id=uuid.UUID(session_id),
        tier=tier,
        token_id=token_id,
        expires_at=expires_at,
    )


class AccessTokenVerifier:
    """Verifies access tokens locally; verified tokens are remembered until they expire."""

    def __init__(
        self, keys: KeySource, *, issuer: str, audience: str, cache_size: int = 10_000
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            if cached[4] > time.time():
                self._cache.move_to_end(token)
                return _principal(cached)
            del self._cache[token]
        verified = await self._verify(token)
        self._cache[token] = verified
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return _principal(verified)

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Unauthenticated("malformed access token") from error
        if header.get("alg") != ACCESS_TOKEN_ALGORITHM:
            raise Unauthenticated("access token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("access token has no key id")
        key = await self._keys.public_key(kid)
        if key is None:
            raise Unauthenticated("access token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ACCESS_TOKEN_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS},
            )
            # The ids are checked here (a ValueError is an invalid token), kept as text.
            return (
                str(uuid.UUID(str(claims["sub"]))),
                str(uuid.UUID(str(claims["sid"]))),
                str(claims["tier"]),
                str(claims["jti"]),
                int(claims["exp"]),
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from error
        except (jwt.PyJWTError, ValueError) as error:
            raise Unauthenticated("invalid access token") from error


def bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization must be 'Bearer <access token>'")
    return token.strip()


class ServiceTokens:
    """Issues and verifies the credential one Pixelshop service shows another."""

    def __init__(self, secret: str, service_name: str) -> None:
        if len(secret) < 32:
            raise ValueError("the internal secret must be at least 32 characters")
        self._secret = secret
        self._name = service_name
        self._token = ""
        self._token_expires = 0.0

    def token(self) -> str:
        now = time.time()
        if now > self._token_expires - 60:
            self._token = jwt.encode(
                {
                    "sub": self._name,
                    "aud": SERVICE_TOKEN_AUDIENCE,
                    "iat": int(now),
                    "exp": int(now) + SERVICE_TOKEN_TTL,
                },
                self._secret,
                algorithm="HS256",
            )
            self._token_expires = now + SERVICE_TOKEN_TTL
        return self._token

    def verify(self, token: str) -> ServiceCaller:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=SERVICE_TOKEN_AUDIENCE,
                options={"require": ["sub", "exp", "aud"]},
            )
        except jwt.PyJWTError as error:
            raise PermissionDenied("invalid service credential") from error
        return ServiceCaller(name=str(claims["sub"]))
