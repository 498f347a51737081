"""Async SQLAlchemy engine per service, bound to the service's own schema.

Transactions belong to the RPC boundary: the gRPC API module opens one unit of work per
call (`async with database.transaction() as session`), service code may flush but never
commits. A workflow (workflows.py) opens one short transaction per step instead and makes
its remote calls between them. Reads that need no snapshot across statements use
`database.read()`, which runs in autocommit and saves the BEGIN and COMMIT round trips.
The hottest reads (a page of history, a project, a preset) skip the session too:
`database.reader()` lends a driver connection of a small pool of its own (`DriverPool`:
SQLAlchemy's checkout, and asyncpg's pool's release, cost more than such a read), and a
`Query` compiled once from a Core statement runs on it with no ORM or result processing
(ADR 0020); inside a transaction `await reader(session)` runs the same queries on the
session's connection.
While any of these is open, `refuse_remote_call` (used by runtime/clients.py and every
adapter of an outside system) raises: no remote call ever waits with a transaction, a row
lock or a pooled connection held (ADR 0011).

A unit of work that must keep what it wrote *and* answer an error (a reused refresh
token revokes its session, then the call answers UNAUTHENTICATED; a password that matched
keeps its throttle refund when the change it guarded is refused) raises
`FailAfterCommit(error)` inside `transaction()`, which commits and then raises `error`.
Any other exception rolls back.

A restarted Postgres is survived without pinging every connection on checkout: the first
statement that meets a dead connection fails, SQLAlchemy then drops the whole pool (and
`reader()` expires every connection of its own), and the interceptor answers that call
UNAVAILABLE (safe to retry); the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from runtime.errors import DomainError

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


class FailAfterCommit(Exception):
    """Raised inside `Database.transaction()` when the call must fail *and* what the
    transaction wrote must persist: the unit of work commits, then raises `error` (the
    caller sees only `error`). Raised from a savepoint (`begin_nested`), it still rolls the
    savepoint back first; only the outer transaction commits."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


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


def server_settings(schema: str) -> dict[str, str]:
    """Session settings of every connection of a service: its schema, and its name in
    pg_stat_activity."""
    return {"search_path": schema, "application_name": f"pixelshop-{schema}"}


def create_engine(url: str, schema: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # Statement parameters would put password hashes and keys into exception text.
        hide_parameters=True,
        connect_args={
            "server_settings": server_settings(schema),
            # Prepared statements are cached per connection by asyncpg; keep the default.
        },
    )


_DIALECT = PGDialect_asyncpg()
# How long closing a driver connection may take (a cancel request, then goodbye) before
# it is cut off.
RETIRE_TIMEOUT_SECONDS = 5.0
# What asyncpg raises when the server or the socket went away: retryable for the caller
# (runtime/interceptors.py answers UNAVAILABLE); a Reader's pool is then dropped, as
# SQLAlchemy drops it when a session meets a dead connection.
# (Not asyncpg's InterfaceError: its subclasses include DataError, a wrongly typed
# argument, which is a programming error and leaves the connection fine.)
CONNECTION_LOST = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)


def connection_lost(error: BaseException) -> bool:
    """Whether `error` says the server or the socket went away (`CONNECTION_LOST`). Not a
    `TimeoutError`, though it is an `OSError`: a statement took too long, nothing was
    lost."""
    return isinstance(error, CONNECTION_LOST) and not isinstance(error, TimeoutError)


@dataclass(frozen=True)
class Query:
    """A Core statement compiled once for asyncpg: its SQL with $n placeholders (and the
    casts SQLAlchemy renders for them) and the order of its named parameters."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, statement: ClauseElement) -> Query:
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        return cls(str(compiled), tuple(compiled.positiontup or ()))

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        missing = [name for name in self.names if name not in parameters]
        if missing:
            raise TypeError(f"query parameters missing: {', '.join(missing)}")
        return [parameters[name] for name in self.names]


# Called with (sql, arguments, application_name) before each Reader statement, when any
# is installed: tools/hot_statements.py records them as it records SQLAlchemy's.
StatementObserver = Callable[[str, Sequence[Any], str], None]
statement_observers: list[StatementObserver] = []


# Errors after which a driver connection is as it was: Postgres answered the statement
# (and is ready for the next), or asyncpg refused an argument before sending anything.
_STATEMENT_ERRORS = (asyncpg.PostgresError, asyncpg.exceptions.DataError)


class Reader:
    """Queries straight on a driver connection. Rows are asyncpg Records, read by position;
    values come as asyncpg decodes them (uuid.UUID, aware datetimes), json and jsonb as
    Python values (the codecs of both pools agree).

    `clean` says whether the connection is as a statement leaves it: none is running, and
    none ended in anything but an answer from Postgres (a cancellation may leave one
    running; a broken socket or protocol leaves nothing to trust)."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self._running = 0
        self._spoiled = False

    @property
    def clean(self) -> bool:
        return not self._running and not self._spoiled

    async def fetch(self, query: Query, **parameters: Any) -> list[Any]:
        return list(await self._run(self._driver.fetch, query, parameters))

    async def fetch_one(self, query: Query, **parameters: Any) -> Any | None:
        return await self._run(self._driver.fetchrow, query, parameters)

    async def _run(
        self, method: Callable[..., Awaitable[Any]], query: Query, parameters: Mapping[str, Any]
    ) -> Any:
        arguments = self._arguments(query, parameters)
        self._running += 1
        try:
            return await method(query.sql, *arguments)
        except _STATEMENT_ERRORS:
            raise
        except BaseException:
            self._spoiled = True
            raise
        finally:
            self._running -= 1

    def _arguments(self, query: Query, parameters: Mapping[str, Any]) -> list[Any]:
        arguments = query.arguments(parameters)
        if statement_observers:
            name = str(self._driver.get_settings().application_name)
            for observe in statement_observers:
                observe(query.sql, arguments, name)
        return arguments


async def reader(session: AsyncSession) -> Reader:
    """The session's own connection as a Reader: its queries run in the session's
    transaction (which this begins, if it had not)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return Reader(raw.driver_connection)


# Connect arguments SQLAlchemy's asyncpg adapter consumes itself.
_ADAPTER_OPTIONS = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_creator_fn",
)


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb decoded to Python values, as SQLAlchemy's dialect does on its own
    connections (jsonb's binary form is a version byte, then the text)."""
    await connection.set_type_codec(
        "json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + json.dumps(value).encode(),
        decoder=lambda data: json.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )


class DriverPool:
    """The driver connections `Database.reader()` lends: opened on demand up to `size`,
    the most recently returned lent first. A caller over `size` waits; waiters are woken
    in the order they came (one that arrives just as a connection comes back may take it
    first, as with asyncpg's pool).

    Lending and taking back a clean connection cost no round trip and no task: a reader
    runs no transaction and changes no session state (no SET, LISTEN or advisory lock), so
    it comes back as it went out. (asyncpg's own pool resets it and shields its release in
    a task of its own: a tenth of a history page's CPU.) Any other connection (its reader
    not clean, left in a transaction, from before `expire`, or the pool closing) is
    retired: closed in the background, which first has Postgres cancel a statement its
    caller abandoned, so none keeps running on the server; its place counts against
    `size` until it has closed."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        if size < 1:
            raise ValueError("a driver pool holds at least one connection")
        self._connect = connect
        self._size = size
        self._idle: list[asyncpg.Connection] = []
        self._open = 0  # lent, idle, being opened or being retired
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._retiring: set[asyncio.Task[None]] = set()
        self._generation = 0
        self._closed = False

    async def acquire(self) -> tuple[asyncpg.Connection, int]:
        """A connection and the generation to hand back with it."""
        while True:
            if self._closed:
                raise asyncpg.exceptions.InterfaceError("the driver pool is closed")
            while self._idle:
                connection = self._idle.pop()
                if not connection.is_closed():
                    return connection, self._generation
                connection.terminate()  # its socket died while idle: asyncpg's cleanup
                self._open -= 1
            if self._open < self._size:
                self._open += 1
                generation = self._generation  # an `expire` during the connect retires it
                try:
                    return await self._connect(), generation
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            await self._wait_turn()

    async def _wait_turn(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, then cancelled: the turn passes on
            else:
                # Still queued, unless a release already dropped it as cancelled.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, connection: asyncpg.Connection, generation: int, *, clean: bool) -> None:
        if (
            clean
            and not self._closed
            and generation == self._generation
            and not connection.is_closed()
            and not connection.is_in_transaction()
        ):
            self._idle.append(connection)
            self._wake_one()
        elif connection.is_closed():
            connection.terminate()
            self._open -= 1
            self._wake_one()
        else:
            task = asyncio.get_running_loop().create_task(self._retire(connection))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, connection: asyncpg.Connection) -> None:
        try:
            # asyncpg's close waits for the cancel request of a statement whose caller was
            # cancelled to reach Postgres, then says goodbye.
            await connection.close(timeout=RETIRE_TIMEOUT_SECONDS)
        except BaseException:
            connection.terminate()
            raise
        finally:
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def expire(self) -> None:
        """Every connection open now is replaced: the idle ones at once, the lent ones
        (and those being opened) when they come back."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.terminate()
        self._open -= len(idle)
        for _ in idle:
            self._wake_one()

    async def close(self) -> None:
        """Closes the idle connections and waits for those being retired; lent ones are
        retired as they come back, and waiting callers fail."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        await asyncio.gather(
            *(connection.close(timeout=RETIRE_TIMEOUT_SECONDS) for connection in idle),
            return_exceptions=True,
        )
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it wakes to find the pool closed
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


class Database:
    """One engine and its session factory, and the driver pool `reader()` lends from; the
    composition root owns it."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema: str | None = None,
        reader_pool_size: int | None = None,
    ) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._read_sessions = async_sessionmaker(
            engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
            autoflush=False,
        )
        self._reader_settings = server_settings(schema) if schema else {}
        self._drivers = DriverPool(self._connect_driver, reader_pool_size or 10)

    @classmethod
    def connect(cls, url: str, schema: str, pool_size: int = 10) -> Database:
        engine = create_engine(url, schema, pool_size)
        return cls(engine, schema=schema, reader_pool_size=pool_size)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block ends, rolls back when it raises,
        except for `FailAfterCommit`, which commits and then raises the error it carries."""
        failure: FailAfterCommit | None = None
        async with _counted(), self._sessions() as session, session.begin():
            try:
                yield session
            except FailAfterCommit as raised:
                failure = raised
        if failure is not None:
            raise failure.error from None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Autocommit reads: each statement sees the latest committed data on its own."""
        async with _counted(), self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Reader]:
        """A driver connection in autocommit, for the hot reads of one or two statements,
        where a session's (and SQLAlchemy's pool's) own bookkeeping is most of the cost."""
        async with _counted():
            driver, generation = await self._drivers.acquire()
            lent = Reader(driver)
            clean = False
            try:
                yield lent
                clean = lent.clean
            except Exception as error:
                if connection_lost(error):
                    # The server restarted or the socket died: every pooled connection is
                    # suspect and is replaced on its next use; this call fails retryably.
                    self._drivers.expire()
                else:
                    # A statement's own error (Postgres answered it), a timeout or the
                    # caller's: the connection is as its reader left it. (A cancellation
                    # is not clean: it may leave a statement running.)
                    clean = lent.clean
                raise
            finally:
                self._drivers.release(driver, generation, clean=clean)

    async def _connect_driver(self) -> asyncpg.Connection:
        # Connected as SQLAlchemy connects (its reading of the URL, e.g. `?ssl=`), less
        # the options only its adapter takes.
        _, options = self.engine.dialect.create_connect_args(self.engine.url)
        for adapter_only in _ADAPTER_OPTIONS:
            options.pop(adapter_only, None)
        connection = await asyncpg.connect(**options, server_settings=self._reader_settings)
        try:
            await _json_codecs(connection)
        except BaseException:
            connection.terminate()
            raise
        return connection

    async def close(self) -> None:
        await self._drivers.close()
        await self.engine.dispose()
