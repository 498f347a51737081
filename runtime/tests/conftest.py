"""Fixtures of the runtime's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runtime.db import Database


@pytest.fixture
async def database(migrated_db: str) -> AsyncIterator[Database]:
    """A Database on the session's Postgres, its pools two connections each."""
    db = Database.connect(migrated_db, "public", pool_size=2)
    try:
        yield db
    finally:
        await db.close()
