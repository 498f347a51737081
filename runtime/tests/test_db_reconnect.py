"""Services survive a Postgres restart: one call fails retryably, the next reconnects."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from runtime.db import Database
from runtime.interceptors import _lost_connection
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
