"""Breaks "only api.py, workflows.py, server.py and __main__.py open units of work"
(checked as if this were a service's service.py)."""

from typing import Any


async def rename(database: Any) -> None:
    async with database.transaction() as session:
        await session.flush()


async def read_many(transactions: Any) -> None:
    async with transactions() as session:
        await session.flush()
