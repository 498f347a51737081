"""Background loops: one round of work, again and again, until the server stops.

Every service runs a few (sweepers, purges, the tier relay, the mail worker, the
deleted-users refresh, the outbox follower, housekeeping), and each is the same loop:
run a round; a round that fails is logged and the next one tries again (a loop must not
die of one bad round: Postgres restarting, a peer down); wait; repeat. `every` is that
loop, written once. Cancelling the task (the server's graceful stop) ends it at once,
even in the middle of a round; a `BaseException` other than an `Exception` (a simulated
crash in tests, `KeyboardInterrupt`) ends it too, as it would end the process.

    running.background.append(
        asyncio.create_task(every(60, sweeper.sweep_once, name="assets sweep"))
    )
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

log = logging.getLogger("pixelshop.periodic")


async def every(
    interval: float,
    work: Callable[[], Awaitable[object]],
    *,
    name: str,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    max_backoff: float | None = None,
) -> NoReturn:
    """Runs `work` now, then `interval` seconds after each round ends, until cancelled.

    A round that raises is logged as a warning naming the loop (`name`, e.g. "projects
    sweep": "projects sweep failed; retrying"), with the trace and how many rounds in a
    row have failed, and the next round runs as usual. With `max_backoff`, the wait
    doubles after each failed round, up to `max_backoff` seconds, and is `interval`
    again after a round succeeds. `pause(seconds)` is how the loop waits (e.g. an event
    that can wake it early); `asyncio.sleep` by default.
    """
    delay = interval
    failures = 0
    while True:
        try:
            await work()
        except Exception:
            failures += 1
            if max_backoff is not None:
                delay = min(delay * 2, max_backoff)
            log.warning(
                "%s failed; retrying",
                name,
                extra={"loop": name, "failures": failures, "retry_in": delay},
                exc_info=True,
            )
        else:
            failures = 0
            delay = interval
        await pause(delay)
