"""runtime.periodic.every: the one background loop, on a real event loop."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa

from runtime.db import Database
from runtime.periodic import every
from runtime.workflow import SimulatedCrash


class Script:
    """Work whose rounds fail or succeed as scripted; once the script is done it waits
    (as a long round would) and says so, so the test can cancel it mid-round."""

    def __init__(self, outcomes: list[bool]) -> None:
        self.outcomes = list(outcomes)
        self.rounds = 0
        self.waiting = asyncio.Event()
        self.pauses: list[float] = []

    async def work(self) -> None:
        self.rounds += 1
        if not self.outcomes:
            self.waiting.set()
            await asyncio.Event().wait()
        if not self.outcomes.pop(0):
            raise ConnectionError("postgres is restarting")

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


async def _until(event: asyncio.Event, task: asyncio.Task[object]) -> None:
    """Waits for `event`; fails at once, with its error, if the loop ends first."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    assert not task.done(), f"the loop ended: {task.exception()!r}"


async def _cancelled(task: asyncio.Task[object]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_failed_round_is_logged_by_name_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([True, False, False, True])
    with caplog.at_level(logging.WARNING, logger="pixelshop.periodic"):
        task = asyncio.create_task(every(3.0, script.work, name="test sweep", pause=script.pause))
        await _until(script.waiting, task)
        # Cancelled in the middle of a round: the loop ends at once.
        await _cancelled(task)
    assert script.rounds == 5
    assert script.pauses == [3.0, 3.0, 3.0, 3.0]  # no back-off unless asked
    failed = [r for r in caplog.records if r.name == "pixelshop.periodic"]
    assert [r.getMessage() for r in failed] == ["test sweep failed; retrying"] * 2
    assert [(r.levelno, vars(r)["loop"], vars(r)["failures"]) for r in failed] == [
        (logging.WARNING, "test sweep", 1),
        (logging.WARNING, "test sweep", 2),
    ]
    assert all(r.exc_info and r.exc_info[0] is ConnectionError for r in failed)


async def test_back_off_doubles_after_failures_up_to_its_limit_and_resets_on_success() -> None:
    script = Script([False, False, False, False, True, False, True])
    task = asyncio.create_task(
        every(1.0, script.work, name="follower", pause=script.pause, max_backoff=5.0)
    )
    await _until(script.waiting, task)
    await _cancelled(task)
    assert script.pauses == [2.0, 4.0, 5.0, 5.0, 1.0, 2.0, 1.0]


async def test_cancelling_while_it_waits_ends_the_loop_with_asyncio_sleep() -> None:
    rounds = 0
    ran = asyncio.Event()

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        ran.set()

    task = asyncio.create_task(every(3600.0, work, name="hourly"))
    await ran.wait()
    await asyncio.sleep(0)  # now in asyncio.sleep(3600)
    await _cancelled(task)
    assert rounds == 1


async def test_a_crash_is_not_a_failed_round_and_ends_the_loop() -> None:
    rounds = 0

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        raise SimulatedCrash("process died")

    with pytest.raises(SimulatedCrash):
        await every(0.0, work, name="crashing", pause=lambda seconds: asyncio.sleep(0))
    assert rounds == 1


async def test_a_round_that_fails_in_postgres_is_logged_and_the_next_one_reads_again(
    migrated_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The shape of every sweeper and refresh: a round on a real database fails (the
    table it reads is gone for a moment), is logged, and the next round reads again on
    the same pool."""
    schema = f"periodic_{uuid.uuid4().hex[:10]}"
    database = Database.connect(migrated_db, schema, pool_size=1)
    marks = f'"{schema}".marks'

    async def ddl(statement: str) -> None:
        async with database.engine.begin() as connection:
            await connection.execute(sa.text(statement))

    await ddl(f'CREATE SCHEMA "{schema}"')
    await ddl(f"CREATE TABLE {marks} (n int)")
    counts: list[int] = []

    async def count_marks() -> None:
        async with database.read() as session:
            counts.append(int(await session.scalar(sa.text(f"SELECT count(*) FROM {marks}"))))

    # Between rounds the test changes the database, one step a pause.
    done = asyncio.Event()
    steps: list[Callable[[], Awaitable[None]]] = [
        lambda: ddl(f"ALTER TABLE {marks} RENAME TO gone"),
        lambda: ddl(f'ALTER TABLE "{schema}".gone RENAME TO marks'),
        lambda: ddl(f"INSERT INTO {marks} VALUES (1)"),
    ]

    async def pause(seconds: float) -> None:
        if not steps:
            done.set()
            await asyncio.Event().wait()
        await steps.pop(0)()

    try:
        with caplog.at_level(logging.WARNING, logger="pixelshop.periodic"):
            task = asyncio.create_task(every(60.0, count_marks, name="counting marks", pause=pause))
            await _until(done, task)
            await _cancelled(task)
    finally:
        await ddl(f'DROP SCHEMA "{schema}" CASCADE')
        await database.close()
    assert counts == [0, 0, 1]  # the second of four rounds failed
    failed = [r for r in caplog.records if r.name == "pixelshop.periodic"]
    assert [r.getMessage() for r in failed] == ["counting marks failed; retrying"]
    assert failed[0].exc_info is not None
    assert isinstance(failed[0].exc_info[1], sa.exc.DBAPIError)  # Postgres' own refusal
