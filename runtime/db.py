"""Async SQLAlchemy engine per service, bound to the service's own schema.

Transactions belong to the RPC boundary: the gRPC API module opens one unit of work per
call (`async with database.transaction() as session`), service code may flush but never
commits. A workflow (workflows.py) opens one short transaction per step instead and makes
its remote calls between them. Reads that need no snapshot across statements use
`database.read()`, which runs in autocommit and saves the BEGIN and COMMIT round trips on
hot paths. While either is open, `refuse_remote_call` (used by runtime/clients.py and every
adapter of an outside system) raises: no remote call ever waits with a transaction, a row
lock or a pooled connection held (ADR 0011).

A restarted Postgres is survived without pinging every connection on checkout: the first
statement that meets a dead connection fails, SQLAlchemy then drops the whole pool, and
the interceptor answers that call UNAVAILABLE (safe to retry); the next call reconnects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Constraint names Alembic can diff and docs/database.md can show.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# How many units of work (transactions or read sessions) the current task has open.
# runtime/clients.py refuses a peer call while it is above zero (ADR 0011).
_open_units: ContextVar[int] = ContextVar("pixelshop_open_units", default=0)


class RemoteCallInTransaction(RuntimeError):
    """A remote call (peer RPC, object store, Stripe, the AI engine, mail) was made while a
    transaction or pooled connection was open: a programming error, never a user's."""


def unit_of_work_open() -> bool:
    """True while the current task is inside `Database.transaction()` or `read()`."""
    return _open_units.get() > 0


def refuse_remote_call(what: str) -> None:
    """Called by every remote-call adapter before it goes out; raises inside a unit of work."""
    if unit_of_work_open():
        raise RemoteCallInTransaction(
            f"{what} was called while a database transaction is open; "
            "commit first (docs/service-conventions.md, 'Workflows')"
        )


@asynccontextmanager
async def _counted() -> AsyncIterator[None]:
    token = _open_units.set(_open_units.get() + 1)
    try:
        yield
    finally:
        _open_units.reset(token)


def schema_metadata(schema: str) -> MetaData:
    """The MetaData of one service: every table lives in the service's schema."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def async_url(url: str) -> str:
    """Accepts postgres://, postgresql:// or postgresql+asyncpg:// and answers the asyncpg form."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(url: str, schema: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # Statement parameters would put password hashes and keys into exception text.
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "search_path": schema,
                "application_name": f"pixelshop-{schema}",
            },
            # Prepared statements are cached per connection by asyncpg; keep the default.
        },
    )


class Database:
    """One engine and its session factory; the composition root owns it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._read_sessions = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            autoflush=False,
        )

    @classmethod
    def connect(cls, url: str, schema: str, pool_size: int = 10) -> Database:
        return cls(create_engine(url, schema, pool_size))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back when it raises."""
        async with _counted(), self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Autocommit reads: each statement sees the latest committed data on its own."""
        async with _counted(), self._read_sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
