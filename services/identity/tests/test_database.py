"""The schema itself: the migration matches the models, the runtime role is confined to
its schema, and the hot queries are served by indexes on seeded data."""

from __future__ import annotations

import datetime
import pathlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import ClauseElement

from runtime.db import async_url
from services.identity import repository
from services.identity.models import metadata
from services.identity.tokens import token_digest
from tests.support.settings import runtime_url

OTHER_SERVICES = ("projects", "assets", "presets", "billing")


def drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _: name == "identity" if kind == "schema" else True,
            "compare_type": True,
            "compare_server_default": True,
            "version_table_schema": "identity",
        },
    )
    return list(compare_metadata(context, metadata))


VERSIONS = pathlib.Path(__file__).resolve().parents[1] / "migrations" / "versions"


async def test_migration_matches_the_models(migrated_db: str, admin_db: asyncpg.Connection) -> None:
    engine = create_async_engine(async_url(migrated_db), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(drift) == []
    finally:
        await engine.dispose()
    newest = max(VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py")).name[:4]
    assert await admin_db.fetchval("SELECT version_num FROM identity.alembic_version") == newest


@pytest.fixture
async def as_identity(migrated_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as identity's runtime role, the role the service uses."""
    connection = await asyncpg.connect(runtime_url(migrated_db, "identity"))
    yield connection
    await connection.close()


async def test_runtime_role_is_confined_to_its_schema(
    admin_db: asyncpg.Connection, as_identity: asyncpg.Connection
) -> None:
    assert await as_identity.fetchval("SELECT current_user") == "pixelshop_identity"
    await as_identity.fetchval("SELECT count(*) FROM identity.users")  # its own: fine

    # Another schema, whether or not the other services are built in this checkout.
    await admin_db.execute("CREATE SCHEMA IF NOT EXISTS identity_probe_elsewhere")
    await admin_db.execute(
        "CREATE TABLE IF NOT EXISTS identity_probe_elsewhere.secrets (value text)"
    )
    foreign = ["identity_probe_elsewhere.secrets"]
    for schema in OTHER_SERVICES:
        table = await admin_db.fetchval(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 LIMIT 1",
            schema,
        )
        if table:
            foreign.append(f'{schema}."{table}"')
    for table in foreign:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_identity.fetch(f"SELECT * FROM {table} LIMIT 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_identity.execute(f"DELETE FROM {table}")

    for statement in (
        "CREATE TABLE public.probe (value text)",
        "CREATE TABLE identity.probe (value text)",
        "CREATE SCHEMA probe",
        "DROP TABLE identity.users",
        "ALTER TABLE identity.users ADD COLUMN probe text",
        "TRUNCATE identity.outbox",
        "CREATE INDEX probe ON identity.users (display_name)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_identity.execute(statement)


async def explain(connection: asyncpg.Connection, statement: ClauseElement) -> str:
    """The plan of exactly the statement the repository runs, with its bound values."""
    compiled = statement.compile(dialect=asyncpg_dialect.dialect())
    names = compiled.positiontup or []
    plan = await connection.fetch(f"EXPLAIN {compiled}", *(compiled.params[n] for n in names))
    return "\n".join(row[0] for row in plan)


@pytest.fixture(scope="module")
async def seeded(admin_db: asyncpg.Connection) -> dict[str, Any]:
    """A few thousand users, each with a session, a spent and a live refresh token."""
    marker = uuid.uuid4().hex[:8]
    async with admin_db.transaction():
        await admin_db.execute(
            """
            INSERT INTO identity.users
                (id, email, username, password_hash, display_name, created_at, updated_at)
            SELECT gen_random_uuid(), 'seed' || i || '-' || $1 || '@example.com',
                   'seed' || i || '-' || $1, 'not-a-hash', 'Seed', now(), now()
            FROM generate_series(1, 4000) AS i
            """,
            marker,
        )
        await admin_db.execute(
            """
            INSERT INTO identity.sessions (id, user_id, created_at, last_used_at, expires_at)
            SELECT gen_random_uuid(), id, now(), now(), now() + interval '30 days'
            FROM identity.users WHERE username LIKE 'seed%-' || $1
            """,
            marker,
        )
        await admin_db.execute(
            """
            INSERT INTO identity.refresh_tokens
                (id, session_id, token_hash, issued_at, expires_at, rotated_at)
            SELECT gen_random_uuid(), s.id,
                   decode(md5(random()::text) || md5(random()::text), 'hex'),
                   now(), now() + interval '30 days', CASE WHEN spent THEN now() END
            FROM identity.sessions s JOIN identity.users u ON u.id = s.user_id
            CROSS JOIN (VALUES (true), (false)) AS t(spent)
            WHERE u.username LIKE 'seed%-' || $1
            """,
            marker,
        )
        user_id = await admin_db.fetchval(
            "SELECT id FROM identity.users WHERE username = $1", f"seed1234-{marker}"
        )
    for table in ("users", "sessions", "refresh_tokens"):
        await admin_db.execute(f"ANALYZE identity.{table}")
    return {"marker": marker, "user_id": user_id}


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("log-in by email", "uq_users_email_live"),
        ("log-in by username", "uq_users_username_live"),
        ("refresh-token rotation", "uq_refresh_tokens_token_hash"),
        ("refresh-token lookup", "uq_refresh_tokens_token_hash"),
        ("refresh session lock", "uq_refresh_tokens_token_hash"),
        ("refresh session lock", "pk_sessions"),
        ("sessions list", "ix_sessions_user_id_created_at_id"),
        ("recently deleted users", "ix_users_deleted_at"),
    ],
)
async def test_hot_queries_use_an_index(
    admin_db: asyncpg.Connection, seeded: dict[str, Any], query: str, index: str
) -> None:
    marker = seeded["marker"]
    now = datetime.datetime.now(datetime.UTC)
    statements = {
        "log-in by email": repository.live_user_by_email(f"seed1234-{marker}@example.com"),
        "log-in by username": repository.live_user_by_username(f"seed1234-{marker}"),
        "refresh-token rotation": repository.spend_refresh_token(token_digest("x"), now),
        "refresh-token lookup": repository.refresh_token_by_hash(token_digest("x")),
        "refresh session lock": repository.lock_session_of_refresh_token(token_digest("x")),
        "sessions list": repository.active_sessions(seeded["user_id"], now, after=None, limit=51),
        # Every replica, every second (outbox.deleted_users).
        "recently deleted users": repository.recently_deleted_users(now - datetime.timedelta(1)),
    }
    plan = await explain(admin_db, statements[query])
    assert "Seq Scan" not in plan, plan
    assert index in plan, plan
    assert "Index Scan" in plan or "Index Only Scan" in plan, plan
