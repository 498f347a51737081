"""Ed25519 signing keys: creation, rotation, the published JWKS, and identity's own
key source.

Identity's own verifier reads the published keys from the table (server.PublishedKeySource),
not over the network from itself.

Life of a key: created (published at once) → active from `activated_at` → retired at
`retired_at` (stops signing) → still published until every token it signed has expired
(`MAX_ACCESS_TOKEN_SECONDS` + leeway after retirement) → private half erased.

A rotated-in key is published `key_publish_lead_seconds` before it signs, longer than
verifiers cache the JWKS, so no verifier ever sees a token whose key it has not fetched.
The signer reads the active key from the table on every issue (one small query), so
every replica switches at the same moment without coordination.
"""

from __future__ import annotations

import datetime
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.auth import ACCESS_TOKEN_ALGORITHM, b64url_encode
from runtime.clock import Clock
from services.identity.models import SigningKey
from services.identity.repository import IdentityRepository
from services.identity.settings import MAX_ACCESS_TOKEN_SECONDS

# Verifiers' clocks may be this far behind ours.
CLOCK_LEEWAY = datetime.timedelta(seconds=60)
# How long after retirement a key's public half stays published.
PUBLISHED_AFTER_RETIREMENT = datetime.timedelta(seconds=MAX_ACCESS_TOKEN_SECONDS) + CLOCK_LEEWAY


def jwk(key: SigningKey) -> dict[str, str]:
    """The RFC 8037 JSON Web Key of a key's public half."""
    public = load_pem_public_key(key.public_key_pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "kid": str(key.kid),
        "alg": ACCESS_TOKEN_ALGORITHM,
        "use": "sig",
    }


class SigningKeys:
    def __init__(self, *, rotation_days: int, publish_lead_seconds: int, clock: Clock) -> None:
        self._rotation_age = datetime.timedelta(days=rotation_days)
        self._publish_lead = datetime.timedelta(seconds=publish_lead_seconds)
        self._clock = clock
        # Parsed private keys by kid: parsing PEM on every sign would be wasted work.
        self._private_keys: dict[uuid.UUID, Ed25519PrivateKey] = {}

    async def ensure_signing_key(self, session: AsyncSession) -> None:
        """Creates an active key when none can sign now (first start, or all retired)."""
        repository = IdentityRepository(session)
        await repository.lock_signing_keys()
        if await repository.signing_key_at(self._clock()) is None:
            await self._create(repository, activate_after=datetime.timedelta(0))

    async def rotate(self, session: AsyncSession, *, immediately: bool = False) -> SigningKey:
        """Adds a new key; it signs after the publish lead (or at once), when the others
        retire. Without `immediately`, verifiers have fetched it before it signs."""
        repository = IdentityRepository(session)
        await repository.lock_signing_keys()
        lead = datetime.timedelta(0) if immediately else self._publish_lead
        return await self._create(repository, activate_after=lead)

    async def rotate_if_due(self, session: AsyncSession) -> SigningKey | None:
        """Rotates when the newest key (pending ones included) is older than the rotation age."""
        repository = IdentityRepository(session)
        await repository.lock_signing_keys()
        newest = await repository.newest_signing_key()
        if newest is not None and self._clock() - newest.activated_at < self._rotation_age:
            return None
        return await self._create(repository, activate_after=self._publish_lead)

    async def _create(
        self, repository: IdentityRepository, *, activate_after: datetime.timedelta
    ) -> SigningKey:
        now = self._clock()
        private = Ed25519PrivateKey.generate()
        key = await repository.insert_signing_key(
            kid=uuid.uuid4(),
            public_key_pem=private.public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            private_key_pem=private.private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
            ).decode(),
            now=now,
            activated_at=now + activate_after,
        )
        await repository.retire_signing_keys(keep=key.kid, retire_at=key.activated_at)
        return key

    async def active_key(self, session: AsyncSession) -> tuple[uuid.UUID, Ed25519PrivateKey]:
        """The key to sign with now (created on the spot if an operator retired them all)."""
        repository = IdentityRepository(session)
        key = await repository.signing_key_at(self._clock())
        if key is None:
            await self.ensure_signing_key(session)
            key = await repository.signing_key_at(self._clock())
        assert key is not None
        assert key.private_key_pem is not None
        private = self._private_keys.get(key.kid)
        if private is None:
            loaded = load_pem_private_key(key.private_key_pem.encode(), password=None)
            assert isinstance(loaded, Ed25519PrivateKey)
            private = self._private_keys[key.kid] = loaded
        return key.kid, private

    async def published(self, session: AsyncSession) -> list[SigningKey]:
        """Every key that may have signed a token still valid, and keys about to sign."""
        return await IdentityRepository(session).published_signing_keys(
            self._clock() - PUBLISHED_AFTER_RETIREMENT
        )

    async def published_key(self, session: AsyncSession, kid: uuid.UUID) -> SigningKey | None:
        keys = await IdentityRepository(session).published_signing_keys(
            self._clock() - PUBLISHED_AFTER_RETIREMENT, kid=kid
        )
        return keys[0] if keys else None

    async def erase_retired_private_keys(self, session: AsyncSession) -> int:
        """A retired key never signs again: its private half has no reason to exist."""
        erased = await IdentityRepository(session).erase_retired_private_keys(self._clock())
        if erased:
            self._private_keys.clear()
        return erased
