"""Decode slots shared fairly between users.

Each decode may hold a full bitmap and a CPU for as long as the image takes, so the
service runs at most `total` at once. One user must not be able to take all of them: a
user runs at most `per_user` at once (below `total`), and a waiting upload is started as
soon as a slot is free *and* its user is below that limit, so another user's upload is
never queued behind one user's backlog. (How long a slot is held is bounded too: the
pixel limit counts a narrow image's rows, see imaging.decode_cost.)

A slot belongs to the worker thread, not to the call: a cancelled call (the client went
away) cannot stop the thread, so the slot is freed when the thread ends.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DecodeSlots:
    def __init__(self, total: int, per_user: int) -> None:
        if not 1 <= per_user <= total:
            raise ValueError("per_user must be between 1 and total")
        self.total = total
        self.per_user = per_user
        self._running: collections.Counter[uuid.UUID] = collections.Counter()
        self._waiting: collections.deque[tuple[uuid.UUID, asyncio.Future[None]]] = (
            collections.deque()
        )

    def running(self, user_id: uuid.UUID | None = None) -> int:
        """Decodes running now, of one user or of everyone."""
        return self._running[user_id] if user_id else sum(self._running.values())

    def _may_start(self, user_id: uuid.UUID) -> bool:
        return self.running() < self.total and self._running[user_id] < self.per_user

    async def _acquire(self, user_id: uuid.UUID) -> None:
        if self._may_start(user_id):
            self._running[user_id] += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (user_id, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(user_id)  # granted just as we were cancelled: pass it on
            else:
                self._waiting.remove(entry)
            raise

    def _release(self, user_id: uuid.UUID) -> None:
        self._running[user_id] -= 1
        if self._running[user_id] <= 0:
            del self._running[user_id]
        # Start every waiter that may run now, oldest first, skipping users at their limit.
        for entry in list(self._waiting):
            waiter, granted = entry
            if self.running() >= self.total:
                break
            if self._running[waiter] < self.per_user and not granted.done():
                self._waiting.remove(entry)
                self._running[waiter] += 1
                granted.set_result(None)

    async def run(self, user_id: uuid.UUID, function: Callable[..., T], *args: object) -> T:
        """Runs `function(*args)` in a worker thread once one of the user's slots is free."""
        await self._acquire(user_id)
        try:
            work = asyncio.ensure_future(asyncio.to_thread(function, *args))
        except BaseException:
            self._release(user_id)
            raise
        work.add_done_callback(lambda done: self._finished(user_id, done))
        return await asyncio.shield(work)

    def _finished(self, user_id: uuid.UUID, work: asyncio.Future[T]) -> None:
        self._release(user_id)
        if not work.cancelled():
            work.exception()  # an abandoned decode's error is not worth a warning
