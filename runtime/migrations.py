"""Alembic, one history per service, its version table inside the service's schema.

Each service's `migrations/env.py` is two lines: it imports its MetaData and calls
`run_migrations(metadata)`. Migrations connect with the admin URL and `SET ROLE` to the
service's owner role, so every object they create is owned by it; autogenerate only ever
sees the service's own schema.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from runtime.config import owner_role
from runtime.db import async_url

SERVICES_ROOT = pathlib.Path(__file__).resolve().parents[1] / "services"


def alembic_config(service: str, admin_url: str) -> Config:
    """A programmatic Alembic config for one service (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(SERVICES_ROOT / service / "migrations"))
    config.set_main_option("version_path_separator", "os")
    config.attributes["service"] = service
    config.attributes["url"] = admin_url
    return config


def upgrade(service: str, admin_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, admin_url), revision)


def run_migrations(metadata: MetaData) -> None:
    """The body of every service's env.py."""
    config = context.config
    service: str = config.attributes["service"]
    schema = metadata.schema
    assert schema, "service metadata must name its schema"

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    def run(connection: Any) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=include_name,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(async_url(config.attributes["url"]), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.execute(text(f'SET ROLE "{owner_role(service)}"'))
                await connection.execute(text(f'SET search_path TO "{schema}"'))
                await connection.run_sync(run)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(main())
