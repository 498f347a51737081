"""runtime.clock: the one wall clock every service passes down."""

from __future__ import annotations

import datetime

from runtime.clock import utc_now


def test_utc_now_is_the_current_moment_in_utc() -> None:
    before = datetime.datetime.now(datetime.UTC)
    now = utc_now()
    after = datetime.datetime.now(datetime.UTC)
    # Aware (comparable with timestamptz values), in UTC, and now.
    assert now.tzinfo is not None
    assert now.utcoffset() == datetime.timedelta(0)
    assert before <= now <= after
