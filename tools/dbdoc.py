"""Generates docs/database.md from the migrated database (`make docs`).

The narrative (why UUIDs, JSONB, soft deletes, schema per service, the cross-service
references) lives in docs/database.template.md; this script fills in what the database
itself says: the list of tables with their purpose (table comments), the DDL exactly as
the migrations created it (pg_dump --schema-only), and an ERD drawn from the foreign keys.
tests/test_database_doc.py fails when the committed file drifts from the migrations.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import asyncpg
from sqlalchemy.engine import make_url

from tools.pgcluster import find_binaries
from tools.provision import ROOT, built_services

TEMPLATE = ROOT / "docs" / "database.template.md"
OUTPUT = ROOT / "docs" / "database.md"


def _dsn(admin_url: str) -> str:
    return make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


def schema_ddl(admin_url: str, schema: str) -> str:
    """The schema's DDL from pg_dump, without version banners, SET lines or owners."""
    url = make_url(admin_url)
    command = [
        str(find_binaries() / "pg_dump"),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-comments",
        f"--schema={schema}",
        f"--host={url.host or '127.0.0.1'}",
        f"--port={url.port or 5432}",
        f"--username={url.username or 'postgres'}",
        url.database or "postgres",
    ]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    dump = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    kept = []
    for line in dump.splitlines():
        if line.startswith(
            ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
        ):
            continue
        kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text


async def _catalog(
    admin_url: str, schemas: list[str]
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    connection = await asyncpg.connect(_dsn(admin_url))
    try:
        tables = await connection.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS name,
                   coalesce(obj_description(c.oid, 'pg_class'), '') AS comment
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
              AND c.relname <> 'alembic_version'
            ORDER BY array_position($1::text[], n.nspname::text), c.relname
            """,
            schemas,
        )
        foreign_keys = await connection.fetch(
            """
            SELECT n.nspname AS schema, c.relname AS child, p.relname AS parent,
                   con.conname AS name,
                   (SELECT string_agg(a.attname, ', ' ORDER BY k.n)
                      FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum)
                     AS columns,
                   CASE con.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
                        WHEN 'r' THEN 'RESTRICT' WHEN 'd' THEN 'SET DEFAULT'
                        ELSE 'NO ACTION' END AS on_delete
            FROM pg_constraint con
            JOIN pg_class c ON c.oid = con.conrelid
            JOIN pg_class p ON p.oid = con.confrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE con.contype = 'f' AND n.nspname = ANY($1::text[])
            ORDER BY array_position($1::text[], n.nspname::text), c.relname, con.conname
            """,
            schemas,
        )
    finally:
        await connection.close()
    return tables, foreign_keys


def render(admin_url: str) -> str:
    schemas = built_services()
    tables, foreign_keys = asyncio.run(_catalog(admin_url, schemas))
    table_list = "\n".join(
        f"| `{t['schema']}` | `{t['name']}` | {t['comment'] or ''} |" for t in tables
    )
    erd_lines = []
    for schema in schemas:
        erd_lines.append(f"[{schema}]")
        names = [t["name"] for t in tables if t["schema"] == schema]
        for name in names:
            edges = [f for f in foreign_keys if f["schema"] == schema and f["child"] == name]
            if not edges:
                erd_lines.append(f"  {name}")
            for edge in edges:
                erd_lines.append(
                    f"  {name}.{edge['columns']} >--o {edge['parent']}"
                    f"  (ON DELETE {edge['on_delete']})"
                )
        erd_lines.append("")
    ddl = "\n\n".join(
        f"### Schema `{schema}`\n\n```sql\n{schema_ddl(admin_url, schema)}\n```"
        for schema in schemas
    )
    text = TEMPLATE.read_text()
    text = text.replace("{{TABLES}}", "| schema | table | purpose |\n|---|---|---|\n" + table_list)
    text = text.replace("{{ERD}}", "```text\n" + "\n".join(erd_lines).rstrip() + "\n```")
    text = text.replace("{{DDL}}", ddl)
    return text


def main() -> int:
    from tools.provision import embedded_admin_url, provision

    admin_url = os.environ.get("PIXELSHOP_DATABASE_URL") or embedded_admin_url()
    provision(admin_url)
    OUTPUT.write_text(render(admin_url))
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
