"""`Database.reader()`'s own pool of driver connections (runtime.db.DriverPool), against
a real Postgres: connections are reused as they were, never more than the pool's size
are open, callers over it wait their turn, and a connection that may carry anything of
its last caller (a transaction, a cancelled statement) is never lent again."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Float, bindparam, func, literal_column, text
from sqlalchemy import select as select_literal

from runtime.db import Database, DriverPool, Query, Reader

BACKEND = Query.of(select_literal(func.pg_backend_pid()))
SLEEP = Query.of(select_literal(func.pg_sleep(bindparam("seconds", type_=Float))))


async def pid(reader: Reader) -> int:
    row = await reader.fetch_one(BACKEND)
    assert row is not None
    return int(row[0])


async def backend(database: Database) -> int:
    async with database.reader() as reader:
        return await pid(reader)


async def open_backends(observer: Database, schema: str, state: str | None = None) -> int:
    """Backends connected for `schema` (runtime.db.server_settings names them), in
    `state` if given ("active": running a statement)."""
    async with observer.read() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
                " AND (CAST(:state AS text) IS NULL OR state = :state)"
            ),
            {"name": f"pixelshop-{schema}", "state": state},
        )
        return int(count or 0)


async def test_a_connection_comes_back_and_is_lent_again(database: Database) -> None:
    first = await backend(database)
    assert await backend(database) == first
    assert await backend(database) == first


async def test_no_more_than_its_size_are_open_and_the_rest_wait_their_turn(
    database: Database,
) -> None:
    seen: list[int] = []
    order: list[int] = []

    async def read(n: int) -> None:
        async with database.reader() as reader:
            seen.append(await pid(reader))
            await reader.fetch_one(SLEEP, seconds=0.05)
            order.append(n)

    await asyncio.gather(*(read(n) for n in range(6)))
    assert len(seen) == 6
    assert len(set(seen)) == 2  # the pool's size: two backends served all six
    assert sorted(order) == list(range(6))


async def test_a_statement_abandoned_by_its_cancelled_caller_stops_on_the_server(
    migrated_db: str,
) -> None:
    # A deadline that fires mid-read must not leave the read running in Postgres, nor
    # leave the service with more backends than its pool's size.
    schema = "driver_pool_cancel"
    db = Database.connect(migrated_db, schema, pool_size=2)
    observer = Database.connect(migrated_db, "public", pool_size=1)
    try:

        async def slow(started: asyncio.Event) -> None:
            async with db.reader() as reader:
                started.set()
                await reader.fetch_one(SLEEP, seconds=30)

        for _ in range(4):
            started = asyncio.Event()
            task = asyncio.create_task(slow(started))
            await started.wait()
            await asyncio.sleep(0.05)  # the statement is running on the server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        for _ in range(100):
            if await open_backends(observer, schema, state="active") == 0:
                break
            await asyncio.sleep(0.05)
        assert await open_backends(observer, schema, state="active") == 0
        assert await open_backends(observer, schema) <= 2
        assert await backend(db)  # and the pool serves on
    finally:
        await db.close()
        await observer.close()


async def test_a_reader_used_by_two_statements_at_once_is_not_lent_again(
    database: Database,
) -> None:
    # A programming error (two statements on one reader); the next caller must not
    # inherit the one still running.
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        async with database.reader() as reader:
            await asyncio.gather(
                reader.fetch_one(SLEEP, seconds=0.5), reader.fetch_one(SLEEP, seconds=0)
            )
    assert await backend(database)


async def test_a_statement_that_timed_out_costs_only_its_own_connection(
    database: Database,
) -> None:
    async def hold_one() -> int:
        async with database.reader() as reader:
            number = await pid(reader)
            await reader.fetch_one(SLEEP, seconds=0.05)
            return number

    both = set(await asyncio.gather(hold_one(), hold_one()))
    assert len(both) == 2
    timed_out: list[int] = []

    async def too_slow() -> None:
        async with database.reader() as reader:
            timed_out.append(await pid(reader))
            await asyncio.wait_for(reader.fetch_one(SLEEP, seconds=5), 0.1)

    with pytest.raises(TimeoutError):
        await too_slow()
    # Not read as a lost connection: the other idle connection is still lent.
    assert await backend(database) == (both - set(timed_out)).pop()


async def test_a_caller_cancelled_mid_statement_does_not_hand_its_connection_on(
    database: Database,
) -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with database.reader() as reader:
            pids.append(await pid(reader))
            started.set()
            await reader.fetch_one(SLEEP, seconds=30)

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The next caller gets a fresh backend, never the one still busy with the sleep.
    assert await backend(database) != pids[0]


async def test_a_waiter_cancelled_while_waiting_leaves_no_trace(database: Database) -> None:
    hold = asyncio.Event()
    both_lent = asyncio.Event()
    lent = 0

    async def holder() -> None:
        nonlocal lent
        async with database.reader() as reader:
            await reader.fetch_one(BACKEND)
            lent += 1
            if lent == 2:
                both_lent.set()
            await hold.wait()

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    await both_lent.wait()
    waiter = asyncio.create_task(backend(database))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    hold.set()
    await asyncio.gather(*holders)
    # Both connections came back; a new caller is served at once by one of them.
    assert await asyncio.wait_for(backend(database), timeout=10)


async def test_a_connection_left_in_a_transaction_is_not_lent_again(database: Database) -> None:
    async with database.reader() as reader:
        driver = reader._driver
        first = await pid(reader)
        await driver.execute("BEGIN")  # no reader does this; the pool must not trust it
    assert await backend(database) != first


async def test_a_statement_error_keeps_the_connection(database: Database) -> None:
    first = await backend(database)
    with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
        async with database.reader() as reader:
            await reader.fetch_one(Query.of(select_literal(literal_column("1 / 0"))))
    assert await backend(database) == first


async def test_closing_it_closes_its_connections(migrated_db: str) -> None:
    schema = "driver_pool_close"  # a name of its own: no other test's backends count
    db = Database.connect(migrated_db, schema, pool_size=2)
    observer = Database.connect(migrated_db, "public", pool_size=1)
    try:
        await asyncio.gather(backend(db), backend(db))
        assert await open_backends(observer, schema) == 2
        await db.close()
        for _ in range(100):  # a backend ends once it has read the client's goodbye
            if await open_backends(observer, schema) == 0:
                break
            await asyncio.sleep(0.05)
        assert await open_backends(observer, schema) == 0
        with pytest.raises(asyncpg.exceptions.InterfaceError):
            await backend(db)
    finally:
        await observer.close()


class FakeConnection:
    """What DriverPool asks of a connection, for orderings Postgres cannot be made to
    produce on cue."""

    def is_closed(self) -> bool:
        return False

    def is_in_transaction(self) -> bool:
        return False

    def terminate(self) -> None:
        pass

    async def close(self, timeout: float | None = None) -> None:
        pass


async def test_a_waiter_cancelled_as_a_connection_comes_back_is_just_cancelled() -> None:
    async def connect() -> Any:
        return FakeConnection()

    pool = DriverPool(connect, 1)
    held, generation = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)  # it waits its turn
    waiter.cancel()
    pool.release(held, generation, clean=True)  # before the waiter has run again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await pool.acquire())[0] is held


async def test_a_connection_lent_before_expire_is_retired_when_it_comes_back() -> None:
    closed: list[FakeConnection] = []

    class Closing(FakeConnection):
        async def close(self, timeout: float | None = None) -> None:
            closed.append(self)

    async def connect() -> Any:
        return Closing()

    pool = DriverPool(connect, 1)
    lent, generation = await pool.acquire()
    pool.expire()  # e.g. another reader met a dead socket meanwhile
    pool.release(lent, generation, clean=True)
    fresh, _ = await pool.acquire()
    assert fresh is not lent
    assert closed == [lent]


async def test_callers_waiting_when_the_pool_closes_fail_instead_of_waiting() -> None:
    async def connect() -> Any:
        return FakeConnection()

    pool = DriverPool(connect, 1)
    await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    await pool.close()
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        await asyncio.wait_for(waiter, timeout=5)
