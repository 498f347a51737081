"""`FailAfterCommit`: a unit of work that keeps what it wrote and still answers an error.

identity uses it twice (a reused refresh token revokes its session; a refused address
change keeps its throttle refund); services/identity/tests/test_tokens.py and
test_email_change.py show those through the API. Here is the mechanism itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Database, FailAfterCommit, unit_of_work_open
from runtime.errors import NotFound, Unauthenticated


@dataclass
class Scratch:
    database: Database
    notes: sa.Table

    async def written(self) -> list[str]:
        async with self.database.read() as session:
            return list(await session.scalars(sa.select(self.notes.c.note).order_by("note")))

    async def write(self, session: AsyncSession, note: str) -> None:
        await session.execute(sa.insert(self.notes).values(note=note))


@pytest.fixture
async def scratch(migrated_db: str) -> AsyncIterator[Scratch]:
    schema = f"after_commit_{uuid.uuid4().hex[:10]}"
    database = Database.connect(migrated_db, schema, pool_size=2)
    notes = sa.Table("notes", sa.MetaData(schema=schema), sa.Column("note", sa.Text))
    async with database.engine.begin() as connection:
        await connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        await connection.run_sync(notes.metadata.create_all)
    try:
        yield Scratch(database, notes)
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        await database.close()


async def test_the_writes_commit_and_the_caller_gets_the_carried_error(scratch: Scratch) -> None:
    refused = Unauthenticated("the session has been ended", reason="REFRESH_TOKEN_REUSED")

    async def revoke_then_refuse() -> None:
        async with scratch.database.transaction() as session:
            await scratch.write(session, "session revoked")
            raise FailAfterCommit(refused)

    with pytest.raises(Unauthenticated) as raised:
        await revoke_then_refuse()
    assert raised.value is refused
    assert not isinstance(raised.value.__cause__, FailAfterCommit)
    assert raised.value.__suppress_context__
    assert not unit_of_work_open()
    assert await scratch.written() == ["session revoked"]


async def test_any_other_error_still_rolls_back(scratch: Scratch) -> None:
    async def write_then_fail() -> None:
        async with scratch.database.transaction() as session:
            await scratch.write(session, "never kept")
            raise NotFound("thing", "x")

    with pytest.raises(NotFound):
        await write_then_fail()
    assert await scratch.written() == []


async def test_a_savepoint_it_leaves_rolls_back_and_the_rest_commits(scratch: Scratch) -> None:
    """As identity's refused address change: the refund commits, the change does not."""

    async def refund_then_refuse_the_change() -> None:
        async with scratch.database.transaction() as session:
            await scratch.write(session, "refund")
            try:
                async with session.begin_nested():
                    await scratch.write(session, "change")
                    raise NotFound("username", "taken meanwhile")
            except NotFound as error:
                raise FailAfterCommit(error) from None

    with pytest.raises(NotFound):
        await refund_then_refuse_the_change()
    assert await scratch.written() == ["refund"]
