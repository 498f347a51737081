"""Breaks "only repository.py holds SQL" (checked as if this were a service's outbox.py):
the statement identity's outbox module once built for its deleted-users refresh, and a
query run on a session outside the repository."""

import datetime
from typing import Any

from sqlalchemy import Select, select


def recently_deleted(users: Any, since: datetime.datetime) -> Select[Any]:
    return select(users.c.id).where(users.c.deleted_at > since)


async def count_users(session: Any, statement: Any) -> int:
    return int((await session.execute(statement)).scalar_one())
