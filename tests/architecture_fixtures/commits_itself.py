"""Breaks "nobody calls .commit() outside runtime/"."""

from typing import Any


async def save(session: Any) -> None:
    await session.commit()
