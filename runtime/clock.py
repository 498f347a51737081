"""The wall clock, as every service takes it: a `Clock` passed down, `utc_now` by default.

Code that decides on time (expiry, leases, periods, retention) takes a `Clock` from the
composition root instead of calling `datetime.now()` itself, so a test can pass one it
moves by hand. Monotonic durations (timeouts, back-off, latency) use `time.monotonic()`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

# Answers the current moment, timezone-aware.
Clock = Callable[[], datetime.datetime]


def utc_now() -> datetime.datetime:
    """Now, in UTC (aware: Postgres `timestamptz` and comparisons with it need the zone)."""
    return datetime.datetime.now(datetime.UTC)
