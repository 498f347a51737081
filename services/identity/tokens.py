"""The tokens identity hands out: opaque secrets (refresh and one-time) and access JWTs.

Opaque tokens are 256 random bits; only their SHA-256 digest is stored, so a copy of the
database does not let anyone act as a user. SHA-256 without salt or stretching is right
here (unlike for passwords): the input is random, not guessable.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runtime.auth import ACCESS_TOKEN_ALGORITHM

OPAQUE_TOKEN_BYTES = 32


def new_opaque_token() -> str:
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AccessTokenIssuer:
    """Signs access tokens with the claims every Pixelshop service verifies
    (runtime.auth.REQUIRED_CLAIMS) and the signing key's id in the header."""

    def __init__(self, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        tier: str,
        now: datetime.datetime,
        kid: uuid.UUID,
        key: Ed25519PrivateKey,
    ) -> str:
        issued_at = int(now.timestamp())
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "tier": tier,
            "iat": issued_at,
            "exp": issued_at + self.ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key, algorithm=ACCESS_TOKEN_ALGORITHM, headers={"kid": str(kid)})
