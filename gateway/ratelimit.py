"""Per-client rate limit for the auth endpoints (password guessing, sign-up floods)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class ClientRateLimiter:
    """A token bucket per client address holding a minute's worth of requests, refilled
    continuously: a client may burst up to the limit, then gets limit/60 requests a second.

    The client address is the TCP peer; X-Forwarded-For is not trusted because any client
    can send it.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, updated at)

    def __len__(self) -> int:
        """How many clients are tracked."""
        return len(self._buckets)

    def acquire(self, client: str) -> float:
        """0.0 when the request may go ahead, otherwise the seconds until it may."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self._max_clients:
                self._forget_idle(now)
            tokens = self._capacity
        else:
            tokens = min(self._capacity, bucket[0] + (now - bucket[1]) * self._rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def _forget_idle(self, now: float) -> None:
        """Drops clients whose bucket has refilled: they are indistinguishable from new ones."""
        full_after = self._capacity / self._rate
        self._buckets = {
            client: bucket
            for client, bucket in self._buckets.items()
            if now - bucket[1] < full_after
        }
        if len(self._buckets) >= self._max_clients:
            # Too many active clients to track: forget them all rather than grow without bound.
            logger.warning("rate limiter tracks %d clients; resetting", len(self._buckets))
            self._buckets.clear()
