"""runtime.periodic.every: the one background loop, on a real event loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

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
        await script.waiting.wait()
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
    await script.waiting.wait()
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
