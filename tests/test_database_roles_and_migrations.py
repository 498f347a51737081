"""Schema per service: migrations match the models, and each runtime role stays in its lane."""

from __future__ import annotations

import importlib
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from runtime.config import owner_role, runtime_role
from tools.provision import ALL_SERVICES, built_services

SERVICES = built_services()


def _sync_url(admin_url: str) -> str:
    return (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False)
    )


def _runtime_dsn(admin_url: str, service: str) -> str:
    url = make_url(admin_url).set(drivername="postgresql", username=runtime_role(service))
    return url.render_as_string(hide_password=False)


def _admin_dsn(admin_url: str) -> str:
    return make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_at_least_one_service_is_built() -> None:
    assert SERVICES


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_match_models(migrated_db: str, service: str) -> None:
    metadata: MetaData = importlib.import_module(f"services.{service}.models").metadata
    schema = metadata.schema

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return name == schema if type_ == "schema" else True

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": include_name,
                "version_table_schema": schema,
                "compare_type": True,
            },
        )
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(_sync_url(migrated_db))
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == [], f"{service}: models and migrations differ: {differences}"


@pytest.mark.parametrize("service", SERVICES)
async def test_runtime_role_is_confined_to_its_schema(migrated_db: str, service: str) -> None:
    admin = await asyncpg.connect(_admin_dsn(migrated_db))
    try:
        others = await admin.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_schema <> $2",
            [s for s in SERVICES],
            service,
        )
        own = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", service
        )
    finally:
        await admin.close()
    assert own, f"{service} has no tables"

    connection = await asyncpg.connect(_runtime_dsn(migrated_db, service))
    try:
        await connection.execute(f"SET search_path TO {service}")
        # Its own tables are usable.
        await connection.fetch(f'SELECT * FROM {service}."{own[0]["table_name"]}" LIMIT 1')
        # Nobody else's are, not even to read.
        for row in others:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.fetch(
                    f'SELECT 1 FROM {row["table_schema"]}."{row["table_name"]}" LIMIT 1'
                )
        # It cannot change the schema: no DDL in its own schema or in public.
        for schema in (service, "public"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(f"CREATE TABLE {schema}.intruder (id int)")
    finally:
        await connection.close()


async def test_every_service_gets_its_schema_and_roles(migrated_db: str) -> None:
    """All five, built or not yet: a later service only adds its migrations."""
    admin = await asyncpg.connect(_admin_dsn(migrated_db))
    try:
        schemas = {r["nspname"] for r in await admin.fetch("SELECT nspname FROM pg_namespace")}
        roles = {r["rolname"] for r in await admin.fetch("SELECT rolname FROM pg_roles")}
    finally:
        await admin.close()
    for service in ALL_SERVICES:
        assert service in schemas
        assert {runtime_role(service), owner_role(service)} <= roles
