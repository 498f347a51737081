"""Password hashing with argon2id, off the event loop.

argon2 is deliberately slow (tens of milliseconds at OWASP's parameters), so every hash
and verification runs in a worker thread. `verify_or_dummy` checks a password against a
dummy hash when there is no account, so that "no such user" and "wrong password" cost
the same time and cannot be told apart.
"""

from __future__ import annotations

import asyncio
import secrets

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        # Same parameters as real hashes, so verifying against it takes as long.
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._argon2.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_or_dummy(self, password_hash: str | None, password: str) -> bool:
        """Verifies against the dummy hash when there is no account; then always False."""
        matched = await self.verify(password_hash or self._dummy_hash, password)
        return matched and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than today's settings."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
