"""Database failures a service must survive: restarts, deadlocks, and what errors reveal."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Integer, bindparam, func, text
from sqlalchemy import select as select_literal

from runtime.db import Database, Query
from runtime.interceptors import _lost_connection, _lost_race
from tools.pgcluster import PostgresCluster, throwaway_cluster


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    # A cluster of its own: restarting the session's shared one would disturb other tests.
    root = pathlib.Path(tmp_path_factory.mktemp("restart"))
    with throwaway_cluster(root / "pg") as cluster:
        yield cluster


async def test_a_restarted_postgres_is_survived(own_cluster: PostgresCluster) -> None:
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=2)
    try:
        async with database.transaction() as session:
            assert await session.scalar(text("SELECT 1")) == 1

        own_cluster.restart()

        # The stale pooled connection fails once (retryably); then the pool reconnects.
        failures = [error for error in [await _select_two(database)] if error is not None]
        if failures:
            assert all(_lost_connection(error) for error in failures), failures
            assert await _select_two(database) is None
        async with database.transaction() as session:
            assert await session.scalar(text("SELECT 3")) == 3
    finally:
        await database.close()


async def _select_two(database: Database) -> Exception | None:
    try:
        async with database.read() as session:
            assert await session.scalar(text("SELECT 2")) == 2
    except Exception as error:
        return error
    return None


async def test_a_restarted_postgres_is_survived_by_readers(own_cluster: PostgresCluster) -> None:
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=3)
    select = Query.of(select_literal(bindparam("n", type_=Integer)))
    try:
        # Three pooled driver connections, all idle when the server goes away.
        async with database.reader() as a, database.reader() as b, database.reader() as c:
            for n, reader in enumerate((a, b, c)):
                assert (await reader.fetch_one(select, n=n))[0] == n

        own_cluster.restart()

        # At most one read fails, retryably: asyncpg sees most closed sockets itself, and
        # a read that meets a dead connection expires the others.
        errors = []
        for n in range(4):
            try:
                async with database.reader() as reader:
                    assert (await reader.fetch_one(select, n=n))[0] == n
            except Exception as error:
                errors.append(error)
        assert len(errors) <= 1, errors
        assert all(_lost_connection(error) for error in errors), errors
    finally:
        await database.close()


async def test_a_bad_argument_to_a_reader_is_a_bug_not_a_lost_connection(
    own_cluster: PostgresCluster,
) -> None:
    # asyncpg's DataError is an InterfaceError: it must not read as "the database is
    # unavailable, retry" (UNAVAILABLE), nor cost the pool its connections.
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=1)
    pid = Query.of(select_literal(func.pg_backend_pid()))
    typed = Query.of(select_literal(bindparam("n", type_=Integer)))
    try:
        async with database.reader() as reader:
            before = (await reader.fetch_one(pid))[0]
        with pytest.raises(asyncpg.exceptions.DataError) as raised:
            async with database.reader() as reader:
                await reader.fetch_one(typed, n="not a number")
        assert not _lost_connection(raised.value)
        async with database.reader() as reader:
            assert (await reader.fetch_one(pid))[0] == before
    finally:
        await database.close()


async def test_readers_connect_as_the_engine_reads_the_url(own_cluster: PostgresCluster) -> None:
    # `?ssl=` is SQLAlchemy's asyncpg parameter (deploy/README.md: `?ssl=require` for TLS);
    # handed to asyncpg as a DSN it would become an unknown server setting.
    database = Database.connect(
        own_cluster.admin_url() + "?ssl=disable&prepared_statement_cache_size=50", "public"
    )
    try:
        async with database.reader() as reader:
            assert (await reader.fetch_one(Query.of(select_literal(1))))[0] == 1
        async with database.read() as session:
            assert await session.scalar(text("SELECT 1")) == 1
    finally:
        await database.close()


async def test_a_stopped_postgres_is_unavailable_not_internal(own_cluster: PostgresCluster) -> None:
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=1)
    own_cluster.stop()
    try:
        with pytest.raises(Exception) as error:  # noqa: PT011 - any driver error will do
            async with database.read() as session:
                await session.scalar(text("SELECT 1"))
        assert _lost_connection(error.value), repr(error.value)
    finally:
        own_cluster.start()
        await database.close()


async def test_a_deadlock_is_a_retryable_race(own_cluster: PostgresCluster) -> None:
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=2)
    try:
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS pair (id int PRIMARY KEY)"))
            await session.execute(text("INSERT INTO pair VALUES (1), (2) ON CONFLICT DO NOTHING"))
        first_locked, second_locked = asyncio.Event(), asyncio.Event()

        async def lock(mine: int, theirs: int, locked: asyncio.Event, other: asyncio.Event) -> None:
            async with database.transaction() as session:
                await session.execute(text("UPDATE pair SET id = id WHERE id = :id"), {"id": mine})
                locked.set()
                await other.wait()
                await session.execute(
                    text("UPDATE pair SET id = id WHERE id = :id"), {"id": theirs}
                )

        results = await asyncio.gather(
            lock(1, 2, first_locked, second_locked),
            lock(2, 1, second_locked, first_locked),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1
        assert _lost_race(errors[0]), repr(errors[0])
    finally:
        await database.close()


async def _execute(database: Database, statement: Any, parameters: dict[str, str]) -> None:
    async with database.transaction() as session:
        await session.execute(statement, parameters)


async def test_statement_parameters_stay_out_of_error_text(own_cluster: PostgresCluster) -> None:
    database = Database.connect(own_cluster.admin_url(), "public", pool_size=1)
    secret = "argon2id$v=19$do-not-log-me"
    try:
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE IF NOT EXISTS hashes (v text UNIQUE)"))
        insert = text("INSERT INTO hashes VALUES (:value), (:value)")
        with pytest.raises(Exception) as error:  # noqa: PT011 - the driver's error type
            await _execute(database, insert, {"value": secret})
        assert "duplicate key" in str(error.value)
        assert secret not in str(error.value)
    finally:
        await database.close()
