"""Breaks "time comes from runtime.clock": reads the wall clock itself, twice."""

import datetime
from datetime import UTC
from datetime import datetime as dt


def expired(deadline: dt) -> bool:
    return deadline < dt.now(UTC) or deadline < datetime.datetime.now(datetime.UTC)
