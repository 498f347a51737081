"""Creates the database, one schema + owner role + runtime role per service, and migrates.

    python -m tools.provision            # embedded cluster under .pixelshop/ (make db)
    PIXELSHOP_DATABASE_URL=... python -m tools.provision [--service identity]

The admin URL (PIXELSHOP_DATABASE_URL) is used only here. Each service's runtime role can
use its own schema and nothing else: USAGE on the schema, DML on its tables through
default privileges of the owner role. Runtime role passwords, when the database needs
them, come from PIXELSHOP_<SERVICE>_DB_PASSWORD. Safe to run again at any time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sys

import asyncpg
from sqlalchemy.engine import make_url

from runtime.config import EMBEDDED_PG_DATABASE, EMBEDDED_PG_PORT, owner_role, runtime_role
from runtime.migrations import SERVICES_ROOT, upgrade

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Everything `make run` keeps: the Postgres cluster, stored images, mail, the service key.
STATE_DIR = pathlib.Path(os.environ.get("PIXELSHOP_STATE_DIR") or ROOT / ".pixelshop")
EMBEDDED_PORT = int(os.environ.get("PIXELSHOP_PG_PORT") or EMBEDDED_PG_PORT)
ALL_SERVICES = ("identity", "projects", "assets", "presets", "billing")


def built_services() -> list[str]:
    """Services that exist in this checkout (later issues add the rest)."""
    return [s for s in ALL_SERVICES if (SERVICES_ROOT / s / "migrations" / "env.py").exists()]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def ensure_database(admin_url: str) -> None:
    """Creates the target database when it does not exist (needs CREATEDB on the admin)."""
    url = make_url(admin_url)
    database = url.database or EMBEDDED_PG_DATABASE
    maintenance = url.set(database="postgres", drivername="postgresql")
    connection = await asyncpg.connect(maintenance.render_as_string(hide_password=False))
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await connection.execute(f"CREATE DATABASE {_quote(database)}")
    finally:
        await connection.close()


async def provision_roles(admin_url: str, services: list[str]) -> None:
    url = make_url(admin_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        database = _quote(url.database or EMBEDDED_PG_DATABASE)
        admin = await connection.fetchval("SELECT current_user")
        # PostgreSQL 15 already keeps PUBLIC out of schema public; make sure of it anyway.
        await connection.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await connection.execute(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC")
        for service in services:
            owner, runtime = _quote(owner_role(service)), _quote(runtime_role(service))
            password = os.environ.get(f"PIXELSHOP_{service.upper()}_DB_PASSWORD", "")
            async with connection.transaction():
                for role, login in ((owner_role(service), False), (runtime_role(service), True)):
                    if not await connection.fetchval(
                        "SELECT 1 FROM pg_roles WHERE rolname = $1", role
                    ):
                        await connection.execute(
                            f"CREATE ROLE {_quote(role)} {'LOGIN' if login else 'NOLOGIN'}"
                        )
                if password:
                    await connection.execute(
                        f"ALTER ROLE {runtime} WITH LOGIN PASSWORD {_literal(password)}"
                    )
                await connection.execute(f"GRANT {owner} TO {_quote(admin)}")
                await connection.execute(f"GRANT CONNECT ON DATABASE {database} TO {runtime}")
                await connection.execute(
                    f"CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {owner}"
                )
                await connection.execute(f"REVOKE ALL ON SCHEMA {service} FROM PUBLIC")
                await connection.execute(f"GRANT USAGE ON SCHEMA {service} TO {runtime}")
                for grant in (
                    f"SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime}",
                    f"USAGE, SELECT ON SEQUENCES TO {runtime}",
                ):
                    await connection.execute(
                        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {service} "
                        f"GRANT {grant}"
                    )
    finally:
        await connection.close()


def provision(admin_url: str, services: list[str] | None = None) -> list[str]:
    """The database, every service's schema and roles, and the migrations of the services
    built so far; answers the services migrated."""
    chosen = list(ALL_SERVICES) if services is None else services
    asyncio.run(ensure_database(admin_url))
    asyncio.run(provision_roles(admin_url, chosen))
    migrated = [service for service in chosen if service in built_services()]
    for service in migrated:
        upgrade(service, admin_url)
    return migrated


def embedded_admin_url() -> str:
    """Starts (or reuses) the embedded cluster under .pixelshop/ and answers its admin URL."""
    from tools.pgcluster import PostgresCluster

    cluster = PostgresCluster(root=STATE_DIR / "postgres", port=EMBEDDED_PORT)
    cluster.start()
    return cluster.admin_url(EMBEDDED_PG_DATABASE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--service", action="append", choices=ALL_SERVICES)
    options = parser.parse_args(argv)
    admin_url = os.environ.get("PIXELSHOP_DATABASE_URL") or embedded_admin_url()
    done = provision(admin_url, options.service)
    print(f"provisioned and migrated: {', '.join(done) or 'nothing yet'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
