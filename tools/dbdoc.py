"""Generates docs/database.md from the migrated database (`make docs`).

The narrative (why UUIDs, JSONB, soft deletes, schema per service, the growth plan) lives
in docs/database.template.md; this script fills in what the database itself says, read
from the catalog of every built service's schema:
- per table: its purpose (the table COMMENT), its columns (type, null, default, comment),
  its constraints, its indexes with the statement each one serves (INDEX_QUERIES below),
  and its DDL as pg_dump reports it;
- per schema, a Mermaid `erDiagram` drawn from the foreign keys and unique constraints;
- one diagram of the references between services (UUID columns checked through another
  service's API, never by a foreign key: CROSS_SERVICE_REFERENCES below);
- the last `make bench-db` results (docs/bench-db.json): rows and bytes per table and
  per user, and each hot statement's plan and latency.

tests/test_database_doc.py fails when the committed file drifts from the migrations, when
a table has no comment, when an index has no entry in INDEX_QUERIES, and when a UUID
column that is neither a key nor a foreign key is not accounted for below.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tools.pgcluster import find_binaries
from tools.provision import ROOT, built_services

TEMPLATE = ROOT / "docs" / "database.template.md"
OUTPUT = ROOT / "docs" / "database.md"
BENCH_RESULTS = ROOT / "docs" / "bench-db.json"  # `make bench-db` at its defaults
BENCH_FULL_RESULTS = ROOT / "docs" / "bench-db-full.json"  # --scale 1: SPEC's row counts


@dataclass(frozen=True)
class Reference:
    """A UUID column naming another service's row, checked through that service's API."""

    column: str  # schema.table.column
    target: str  # schema.table
    checked_by: str  # how the owning service makes sure the row exists / belongs


# Cross-service references: there are no foreign keys between schemas (ARCHITECTURE.md).
# Only the entries whose column exists in the migrated catalog are drawn.
CROSS_SERVICE_REFERENCES: tuple[Reference, ...] = (
    Reference("projects.projects.owner_id", "identity.users", "the caller's access token"),
    Reference(
        "projects.projects.original_asset_id",
        "assets.assets",
        "assets GetAssetForOwner (owner and readiness) before the row is written",
    ),
    Reference(
        "projects.projects.thumbnail_asset_id", "assets.assets", "written from an edit's result"
    ),
    Reference("projects.edits.source_asset_id", "assets.assets", "the parent edit's result"),
    Reference(
        "projects.edits.result_asset_id",
        "assets.assets",
        "assets StoreAsset answers the id the engine's output was stored under",
    ),
    Reference(
        "projects.edits.preset_id",
        "presets.presets",
        "presets GetPreset (visibility); its prompt and version are snapshotted on the edit",
    ),
    Reference("assets.assets.owner_id", "identity.users", "the caller's access token"),
    Reference("presets.presets.owner_id", "identity.users", "the caller's access token"),
    Reference("presets.preset_likes.user_id", "identity.users", "the caller's access token"),
    Reference(
        "presets.preset_uses.edit_id",
        "projects.edits",
        "projects calls RecordPresetUse with the edit it applied",
    ),
    Reference("billing.customers.user_id", "identity.users", "identity's user id in the token"),
    Reference("billing.subscriptions.user_id", "identity.users", "the Stripe customer's user"),
    Reference("billing.usage_counters.user_id", "identity.users", "the peer call's user"),
    Reference("billing.usage_reservations.user_id", "identity.users", "the peer call's user"),
    Reference("billing.usage_ledger.user_id", "identity.users", "the peer call's user"),
    Reference("billing.subscriptions.tier_code", "identity.tiers", "identity's tier codes"),
    Reference("identity.outbox.user_id", "identity.users", "not a foreign key: events outlive"),
    Reference("projects.edits.owner_id", "identity.users", "copied from its project"),
    Reference(
        "projects.edits.reapplied_from_id",
        "projects.edits",
        "Reapply reads the source edit (possibly of another project) by id and owner",
    ),
    Reference(
        "projects.edits.reapplied_from_project_id",
        "projects.projects",
        "the source edit's project, kept with it",
    ),
    Reference(
        "projects.projects.running_edit_id",
        "projects.edits",
        "set and cleared by ApplyEdit's workflow steps (a lease, not a foreign key)",
    ),
    Reference("billing.tier_outbox.user_id", "identity.users", "relayed to SetUserTier"),
    Reference(
        "billing.usage_ledger.reservation_id",
        "billing.usage_reservations",
        "the reservation a commit settles (no foreign key: the ledger outlives purges)",
    ),
    *(
        Reference(f"{schema}.deleted_users.user_id", "identity.users", "identity's user.deleted")
        for schema in ("projects", "assets", "presets", "billing")
    ),
    *(
        Reference(f"{schema}.parked_events.user_id", "identity.users", "identity's event")
        for schema in ("projects", "assets", "presets", "billing")
    ),
)
# Columns that are ids inside their own schema without a foreign key, on purpose.


NOT_REFERENCES: frozenset[str] = frozenset(
    {
        "identity.outbox.user_id",  # deliberately no FK inside identity: events outlive users
    }
)
NOT_REFERENCE_NAMES = frozenset({"request_id", "idempotency_key", "event_id"})
# branch_id is the first edit of a chain in the same project: a position, read only with
# the project's own rows.
NOT_REFERENCES_EXTRA = frozenset({"projects.edits.branch_id"})

# What each index is for: the statement (and RPC) it serves. tests/test_database_doc.py
# fails for an index with no entry, so a new index arrives with its reason.
# Primary keys get "lookups by primary key" unless an entry says more.
INDEX_QUERIES: dict[str, str] = {
    # identity
    "identity.uq_users_email_live": "uniqueness of live emails; LogIn / SignUp / "
    "RequestPasswordReset by normalized email (`WHERE email = $1 AND deleted_at IS NULL`)",
    "identity.uq_users_username_live": "uniqueness of live usernames; LogIn by username",
    "identity.ix_users_tier_code": "the RESTRICT foreign key to tiers (a tier in use cannot be "
    "deleted); no RPC reads users by tier",
    "identity.uq_tiers_stripe_price_id": "one tier per Stripe price; billing maps a "
    "subscription's price to a tier",
    "identity.ix_sessions_user_id_created_at_id": "ListSessions (a user's sessions newest "
    "first, keyset); revoking all of a user's sessions; the foreign key to users",
    "identity.ix_sessions_expires_at": "the sweeper deleting sessions long expired",
    "identity.uq_refresh_tokens_token_hash": "Refresh: the presented token by its SHA-256",
    "identity.ix_refresh_tokens_session_id": "revoking a session's tokens; the foreign key",
    "identity.ix_refresh_tokens_parent_id": "the SET NULL foreign key (a deleted parent)",
    "identity.uq_refresh_tokens_live_per_session": "at most one live refresh token per "
    "session: a concurrent double refresh loses on this index",
    "identity.uq_one_time_tokens_token_hash": "VerifyEmail / ResetPassword: the mailed "
    "token by its SHA-256",
    "identity.ix_one_time_tokens_user_id_purpose": "invalidating a user's outstanding "
    "tokens of one purpose before mailing a new one; the foreign key",
    "identity.ix_one_time_tokens_expires_at": "the sweeper deleting expired tokens",
    "identity.uq_outbox_sequence": "uniqueness of the identity column",
    "identity.uq_outbox_xact_id_sequence": "ListEvents: events after a follower's position "
    "(`(xact_id, sequence) > ($1, $2)` in order)",
    "identity.ix_login_failures_bucket_start": "the sweeper deleting buckets older than "
    "every throttle window",
    "identity.uq_users_username_skeleton_live": "one live username per UTS #39 skeleton: "
    "SignUp and username changes refuse look-alikes",
    "identity.ix_users_pending_email": "log-in by an address that is still pending "
    "(`newest_live_user_by_pending_email`, ADR 0013)",
    "identity.ix_users_deleted_at": "each replica's set of recently deleted users, whose "
    "tokens are refused",
    "identity.ix_mail_requests_next_attempt_at": "the mail worker claiming due requests "
    "(`next_attempt_at <= now()` in order)",
    "identity.ix_mail_requests_user_id": "dropping a deleted user's queued mail",
    "identity.ix_mail_sends_subject_hash_sent_at": "the per-address and per-user mail "
    "rate limits (sends of one subject since a moment)",
    "identity.ix_mail_sends_sent_at": "the sweeper deleting send records older than every "
    "rate-limit window",
    # assets
    "assets.uq_assets_storage_key": "one row per object key (keys are made from ids)",
    "assets.uq_assets_owner_id_idempotency_scope_idempotency_key": "StoreAsset and upload "
    "retries find their first attempt (per owner and scope); PurgeUser reads every row of "
    "one owner (leading owner_id)",
    "assets.ix_assets_owner_newest": "ListAssets newest first (keyset, live ready rows)",
    "assets.ix_assets_owner_kind_newest": "ListAssets filtered by kind (keyset)",
    "assets.ix_assets_pending_created": "the sweeper: uploads stuck pending, oldest first",
    "assets.ix_assets_awaiting_purge": "the sweeper: deleted assets whose objects remain",
    "assets.ix_assets_unsettled": "the sweeper: ready assets whose storage reservation is "
    "not yet committed to billing",
    "assets.uq_asset_variants_asset_id_name": "one variant of each name per asset; loading "
    "an asset's variants; the foreign key",
    "assets.uq_asset_variants_storage_key": "one row per object key",
    # projects
    "projects.ix_projects_owner_listing": "ListProjects newest first (keyset on "
    "created_at DESC, id DESC, live rows); counting a user's live projects",
    "projects.ix_projects_awaiting_purge": "the sweeper's purge claim: deleted (and "
    "credited) projects, oldest first (`claim_deleted_projects`)",
    "projects.uq_edits_project_id_seq": "ListEdits (`seq > $after` in order, keyset); one "
    "position per edit in its project; the CASCADE foreign key to projects",
    "projects.uq_edits_project_id_request_id": "ApplyEdit retries with the same request id "
    "find their edit",
    "projects.ix_edits_parent_id": "whether an edit has children (`parent_id`): "
    "placing a new edit on the tree; the self-referencing CASCADE foreign key",
    "projects.ix_edits_latest_child_id": "the SET NULL foreign key of the redo pointer "
    "(a project's purge)",
    "projects.ix_projects_owner_id": "PurgeUser: every project of an owner, live and "
    "deleted (`owned_project_ids`)",
    "projects.ix_projects_quota_reservation_id": "the sweeper: projects whose quota "
    "reservation is not yet committed (`claim_unsettled_projects`, with "
    "ix_projects_uncredited for the other arm of its OR)",
    "projects.ix_projects_uncredited": "the sweeper: deleted projects whose unit is not yet "
    "credited back (`claim_unsettled_projects`, the second arm of its OR)",
    "projects.ix_projects_head_edit_id": "the SET NULL foreign key of head (a project's purge)",
    "projects.ix_projects_root_latest_child_id": "the SET NULL foreign key of the original's "
    "redo pointer (a project's purge)",
    "projects.ix_edits_pending": "the sweeper: edits stuck pending, oldest first",
    "projects.ix_edits_unsettled": "the sweeper claiming finished edits whose billing "
    "reservations are not yet settled, in lease-clock order (`settle_after <= now`: rows "
    "another sweeper holds sort last)",
    # billing
    "billing.uq_customers_stripe_customer_id": "webhooks: the user of a Stripe customer",
    "billing.ix_subscriptions_user_id": "a user's subscriptions (tier resolution, cancelling "
    "on account deletion)",
    "billing.uq_subscriptions_stripe_subscription_id": "webhooks: locking the subscription "
    "an event is about; one row per Stripe subscription",
    "billing.uq_subscriptions_user_id_manual": "at most one manual (set-tier) subscription "
    "per user",
    "billing.ix_tier_outbox_undelivered_created_at": "the relay claiming undelivered tier "
    "changes that are due, oldest first (read in order, no sort)",
    "billing.ix_tier_outbox_user_id_created_at": "the relay skipping a change a newer one for "
    "the same user supersedes (`superseded`)",
    "billing.uq_usage_counters_user_id_metric_period_start": "Reserve / Commit / GetUsage: "
    "the counter of one user, metric and period (the conditional UPDATE)",
    "billing.ix_usage_ledger_user_id_metric_period_start": "the ledger of one counter "
    "(audit and rebuild of `used`)",
    "billing.uq_usage_ledger_credit_key": "a credit is booked once per idempotency key",
    "billing.uq_usage_ledger_reservation_id": "a reservation is committed to the ledger once",
    "billing.ix_usage_reservations_expires_at_open": "the sweeper releasing expired open "
    "reservations, oldest first",
    "billing.uq_usage_reservations_user_id_metric_idempotency_key": "Reserve retries with the "
    "same key find their reservation",
    # presets
    "presets.pk_preset_likes": "AddLike / RemoveLike (one like per user and preset) and "
    '"liked by the caller" in every listing; the CASCADE foreign key',
    "presets.pk_preset_uses": "RecordPresetUse retries find their row (one use per edit)",
    "presets.ix_presets_public_newest": "ListPresets community/all, newest first (keyset)",
    "presets.ix_presets_public_popular": "ListPresets orderBy=popular (like_count, keyset)",
    "presets.ix_presets_public_used": "ListPresets orderBy=used (use_count, keyset)",
    "presets.ix_presets_owner_newest": "ListPresets scope=mine (every visibility); PurgeUser",
    "presets.ix_presets_search": "ListPresets with a query (`search @@ plainto_tsquery`)",
    "presets.ix_presets_forked_from_id": "the SET NULL foreign key of forks when a source is "
    "purged",
    "presets.ix_preset_likes_user_id": "PurgeUser removing (and uncounting) a user's likes",
    "presets.uq_presets_owner_id_idempotency_key": "CreatePreset retried with its "
    "Idempotency-Key finds the preset the key made (one per owner and key)",
    "presets.ix_preset_uses_preset_id": "the CASCADE foreign key to presets",
}

# Columns whose meaning is in their name: not reported as lacking a comment.
NO_COMMENT = "**(no comment yet)**"
OBVIOUS_COLUMNS = frozenset(
    {"id", "created_at", "updated_at", "name", "description", "display_name", "expires_at"}
)


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    default: str
    comment: str


@dataclass
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str
    not_null: bool


@dataclass
class Table:
    schema: str
    name: str
    comment: str
    columns: list[Column] = field(default_factory=list)
    constraints: list[tuple[str, str, str]] = field(default_factory=list)  # name, type, def
    indexes: list[tuple[str, str, bool]] = field(default_factory=list)  # name, def, primary
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    unique_sets: list[tuple[str, ...]] = field(default_factory=list)  # PK and unique keys
    primary_key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


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


def split_ddl(schema: str, ddl: str) -> dict[str, list[str]]:
    """pg_dump's statements grouped by the table they create or alter ('' = the schema)."""
    groups: dict[str, list[str]] = {}
    pattern = re.compile(rf"(?:TABLE(?: ONLY)?|ON) {re.escape(schema)}\.(\w+)")
    for statement in re.split(r";\n\n", ddl.rstrip(";") + ";\n\n"):
        statement = statement.strip()
        if not statement:
            continue
        match = pattern.search(statement)
        groups.setdefault(match.group(1) if match else "", []).append(statement + ";")
    return groups


CATALOG_SQL = {
    "tables": """
        SELECT n.nspname AS schema, c.relname AS name,
               coalesce(obj_description(c.oid, 'pg_class'), '') AS comment
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
          AND c.relname <> 'alembic_version' AND NOT c.relispartition
        ORDER BY array_position($1::text[], n.nspname::text), c.relname
    """,
    "columns": """
        SELECT n.nspname AS schema, c.relname AS table, a.attname AS name,
               format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               CASE WHEN a.attgenerated = 's'
                    THEN 'generated: ' || pg_get_expr(d.adbin, d.adrelid)
                    WHEN a.attidentity <> '' THEN 'identity'
                    ELSE coalesce(pg_get_expr(d.adbin, d.adrelid), '') END AS default,
               coalesce(col_description(c.oid, a.attnum), '') AS comment
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[])
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    """,
    "constraints": """
        SELECT n.nspname AS schema, c.relname AS table, con.conname AS name,
               con.contype::text AS type, pg_get_constraintdef(con.oid) AS definition,
               p.relname AS parent, pn.nspname AS parent_schema,
               ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
                     JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                     ORDER BY k.i)::text[] AS columns,
               ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                     ORDER BY k.i)::text[] AS parent_columns,
               CASE con.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
                    WHEN 'r' THEN 'RESTRICT' WHEN 'd' THEN 'SET DEFAULT'
                    WHEN 'a' THEN 'NO ACTION' ELSE '' END AS on_delete
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_class p ON p.oid = con.confrelid
        LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND con.contype IN ('p', 'u', 'f', 'c', 'x')
        ORDER BY array_position(ARRAY['p', 'u', 'f', 'c', 'x']::"char"[], con.contype),
                 con.conname
    """,
    "indexes": """
        SELECT n.nspname AS schema, t.relname AS table, i.relname AS name,
               pg_get_indexdef(i.oid) AS definition, x.indisprimary AS primary,
               x.indisunique AS unique, x.indpred IS NOT NULL AS partial,
               ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(attnum, o)
                     JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                     ORDER BY k.o)::text[] AS columns,
               x.indexprs IS NOT NULL AS expression
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND t.relname <> 'alembic_version'
        ORDER BY x.indisprimary DESC, i.relname
    """,
}


async def _fetch(admin_url: str, schemas: list[str]) -> dict[str, list[asyncpg.Record]]:
    connection = await asyncpg.connect(_dsn(admin_url))
    try:
        return {key: await connection.fetch(sql, schemas) for key, sql in CATALOG_SQL.items()}
    finally:
        await connection.close()


def read_catalog(admin_url: str, schemas: list[str] | None = None) -> list[Table]:
    """Every table of the given schemas (default: the built services), from pg_catalog."""
    chosen = built_services() if schemas is None else schemas
    rows = asyncio.run(_fetch(admin_url, chosen))
    tables = {
        (r["schema"], r["name"]): Table(r["schema"], r["name"], r["comment"])
        for r in rows["tables"]
    }
    for r in rows["columns"]:
        table = tables.get((r["schema"], r["table"]))
        if table is not None:
            table.columns.append(
                Column(r["name"], r["type"], r["not_null"], r["default"], r["comment"])
            )
    for r in rows["constraints"]:
        table = tables.get((r["schema"], r["table"]))
        if table is None:
            continue
        kind = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check"}.get(
            r["type"], "exclusion"
        )
        table.constraints.append((r["name"], kind, r["definition"]))
        columns = tuple(r["columns"])
        if r["type"] == "p":
            table.primary_key = columns
        if r["type"] in ("p", "u"):
            table.unique_sets.append(columns)
        if r["type"] == "f":
            not_null = all((c := table.column(name)) is not None and c.not_null for name in columns)
            table.foreign_keys.append(
                ForeignKey(
                    r["name"],
                    columns,
                    f"{r['parent_schema']}.{r['parent']}",
                    tuple(r["parent_columns"]),
                    r["on_delete"],
                    not_null,
                )
            )
    for r in rows["indexes"]:
        table = tables.get((r["schema"], r["table"]))
        if table is None:
            continue
        table.indexes.append((r["name"], r["definition"], r["primary"]))
        if r["unique"] and not r["partial"] and not r["expression"]:
            columns = tuple(r["columns"])
            if columns not in table.unique_sets:
                table.unique_sets.append(columns)
    return list(tables.values())


# ---------------------------------------------------------------------------- checks


def tables_without_comment(tables: Iterable[Table]) -> list[str]:
    return [t.qualified for t in tables if not t.comment.strip()]


def columns_without_comment(tables: Iterable[Table]) -> list[str]:
    """Columns that say nothing about themselves: not obvious by name, not a foreign key."""
    missing = []
    for table in tables:
        fk_columns = {c for fk in table.foreign_keys for c in fk.columns}
        for column in table.columns:
            if column.comment.strip() or column.name in OBVIOUS_COLUMNS:
                continue
            if column.name in fk_columns or column.name in table.primary_key:
                continue
            missing.append(f"{table.qualified}.{column.name}")
    return missing


def indexes_without_query(tables: Iterable[Table]) -> list[str]:
    return [
        f"{t.schema}.{name}"
        for t in tables
        for name, _, primary in t.indexes
        if not primary and f"{t.schema}.{name}" not in INDEX_QUERIES
    ]


def unaccounted_uuid_columns(tables: Iterable[Table]) -> list[str]:
    """UUID columns that are not keys, not foreign keys, and not listed as references."""
    known = {r.column for r in CROSS_SERVICE_REFERENCES} | NOT_REFERENCES | NOT_REFERENCES_EXTRA
    found = []
    for table in tables:
        fk_columns = {c for fk in table.foreign_keys for c in fk.columns}
        for column in table.columns:
            qualified = f"{table.qualified}.{column.name}"
            if column.type != "uuid" or column.name == "id" or column.name in fk_columns:
                continue
            if column.name in NOT_REFERENCE_NAMES or qualified in known:
                continue
            if table.primary_key == (column.name,) and not column.name.endswith("_id"):
                continue
            found.append(qualified)
    return found


def foreign_keys_without_index(tables: Iterable[Table]) -> list[str]:
    """Foreign keys whose columns do not lead an index: cascades and RESTRICT checks on
    the parent would scan the child table."""
    missing = []
    for table in tables:
        leading = [tuple(_index_columns(d)) for _, d, _ in table.indexes]
        for fk in table.foreign_keys:
            width = len(fk.columns)
            if not any(set(cols[:width]) == set(fk.columns) for cols in leading):
                missing.append(f"{table.qualified}.{fk.name}")
    return missing


def _index_columns(definition: str) -> list[str]:
    inside = definition.split("(", 1)[1].rsplit(")", 1)[0] if "(" in definition else ""
    if " WHERE " in definition:
        inside = definition.split(" WHERE ")[0].split("(", 1)[1].rsplit(")", 1)[0]
    return [part.strip().split(" ")[0].strip('"') for part in inside.split(",")]


def times_without_time_zone(tables: Iterable[Table]) -> list[str]:
    return [
        f"{t.qualified}.{c.name}"
        for t in tables
        for c in t.columns
        if c.type.startswith(("timestamp without", "time without", "date"))
    ]


# --------------------------------------------------------------------------- Mermaid

_TYPE_WORDS = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "character varying": "varchar",
    "integer": "int",
    "boolean": "bool",
    "double precision": "float8",
}


def mermaid_type(sql_type: str) -> str:
    """A column type as one Mermaid attribute-type word (letters, digits, _ - ( ) [ ])."""
    for long, short in _TYPE_WORDS.items():
        sql_type = sql_type.replace(long, short)
    return re.sub(r"[^A-Za-z0-9_()\[\]-]", "_", sql_type.replace(" ", "_"))


def _is_unique(table: Table, columns: tuple[str, ...]) -> bool:
    return any(set(u) <= set(columns) for u in table.unique_sets)


def _many_to_many(table: Table, references: dict[str, str]) -> tuple[str, str] | None:
    """A junction table: its primary key is two columns, each naming another table."""
    if len(table.primary_key) != 2:
        return None
    targets = []
    for column in table.primary_key:
        fk = next((f for f in table.foreign_keys if f.columns == (column,)), None)
        target = fk.parent if fk else references.get(f"{table.qualified}.{column}")
        if target is None:
            return None
        targets.append(target)
    return targets[0], targets[1]


def schema_erd(schema: str, tables: list[Table]) -> str:
    """A Mermaid erDiagram of one schema: entities with their columns and FK relations."""
    lines = ["erDiagram"]
    for table in tables:
        fk_columns = {c for fk in table.foreign_keys for c in fk.columns}
        unique_single = {u[0] for u in table.unique_sets if len(u) == 1}
        lines.append(f"    {table.name} {{")
        for column in table.columns:
            keys = []
            if column.name in table.primary_key:
                keys.append("PK")
            if column.name in fk_columns:
                keys.append("FK")
            if column.name in unique_single and column.name not in table.primary_key:
                keys.append("UK")
            suffix = f" {', '.join(keys)}" if keys else ""
            lines.append(f"        {mermaid_type(column.type)} {column.name}{suffix}")
        lines.append("    }")
    for table in tables:
        for fk in table.foreign_keys:
            parent = fk.parent.split(".", 1)[1]
            left = "||" if fk.not_null else "|o"
            right = "o|" if _is_unique(table, fk.columns) else "o{"
            label = f"{', '.join(fk.columns)} ON DELETE {fk.on_delete}"
            lines.append(f'    {parent} {left}--{right} {table.name} : "{label}"')
    return "\n".join(lines)


def _entity(qualified: str) -> str:
    return qualified.replace(".", "__")


def present_references(tables: list[Table], *, local: bool = False) -> list[Reference]:
    """The references whose column exists; `local`: also those inside one schema."""
    by_name = {t.qualified: t for t in tables}
    present = []
    for reference in CROSS_SERVICE_REFERENCES:
        table_name, column = reference.column.rsplit(".", 1)
        table = by_name.get(table_name)
        if table is None or table.column(column) is None:
            continue
        if not local and reference.target.split(".")[0] == reference.column.split(".")[0]:
            continue  # inside one schema: not a cross-service reference
        present.append(reference)
    return present


def cross_service_erd(tables: list[Table]) -> str:
    """References between schemas, dotted: nothing in the database enforces them."""
    references = present_references(tables)
    by_name = {t.qualified: t for t in tables}
    lines = ["erDiagram"]
    for reference in references:
        table_name, column = reference.column.rsplit(".", 1)
        table = by_name[table_name]
        nullable = not table.column(column).not_null  # type: ignore[union-attr]
        left = "|o" if nullable else "||"
        right = "o|" if _is_unique(table, (column,)) else "o{"
        lines.append(
            f'    {_entity(reference.target)} {left}..{right} {_entity(table_name)} : "{column}"'
        )
    return "\n".join(lines)


def relationship_sentences(tables: list[Table]) -> list[str]:
    """Every relationship in words: one-to-one, one-to-many and many-to-many."""
    references = {r.column: r.target for r in present_references(tables)}
    how = {r.column: r.checked_by for r in present_references(tables)}
    sentences = []
    for table in tables:
        pair = _many_to_many(table, references)
        if pair is not None:
            sentences.append(
                f"- **many-to-many** between `{pair[0]}` and `{pair[1]}` through "
                f"`{table.qualified}` (primary key `({', '.join(table.primary_key)})`)"
            )
        for fk in table.foreign_keys:
            kind = "one-to-one" if _is_unique(table, fk.columns) else "one-to-many"
            optional = "" if fk.not_null else ", optional"
            sentences.append(
                f"- **{kind}**: `{fk.parent}` → `{table.qualified}` through "
                f"`{', '.join(fk.columns)}` (foreign key{optional}, ON DELETE {fk.on_delete})"
            )
        for column in table.columns:
            target = references.get(f"{table.qualified}.{column.name}")
            if target is None:
                continue
            kind = "one-to-one" if _is_unique(table, (column.name,)) else "one-to-many"
            optional = "" if column.not_null else ", optional"
            qualified = f"{table.qualified}.{column.name}"
            sentences.append(
                f"- **{kind}** across services: `{target}` → `{table.qualified}` through "
                f"`{column.name}` (no foreign key{optional}: {how[qualified]})"
            )
    return sentences


# ---------------------------------------------------------------------------- render


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else ""


def table_section(table: Table, ddl: list[str]) -> str:
    out = [f"#### `{table.qualified}`", "", table.comment or "**(no comment yet)**", ""]
    out += ["| column | type | null | default | comment |", "|---|---|---|---|---|"]
    for c in table.columns:
        default = f"`{_cell(c.default)}`" if c.default else ""
        out.append(
            f"| `{c.name}` | `{c.type}` | {'NOT NULL' if c.not_null else 'NULL'} | "
            f"{default} | {_cell(c.comment)} |"
        )
    out += ["", "| constraint | kind | definition |", "|---|---|---|"]
    for name, kind, definition in table.constraints:
        out.append(f"| `{name}` | {kind} | `{_cell(definition)}` |")
    out += ["", "| index | definition | serves |", "|---|---|---|"]
    for name, definition, primary in table.indexes:
        serves = INDEX_QUERIES.get(f"{table.schema}.{name}")
        if serves is None:
            serves = "lookups by primary key" if primary else "**(no entry in INDEX_QUERIES)**"
        short = definition.split(" USING ", 1)[-1]
        out.append(f"| `{name}` | `{_cell(short)}` | {_cell(serves)} |")
    out += ["", "```sql", "\n\n".join(ddl), "```", ""]
    return "\n".join(out)


def render_tables(tables: list[Table], admin_url: str, schemas: list[str]) -> str:
    sections = []
    for schema in schemas:
        ddl = split_ddl(schema, schema_ddl(admin_url, schema))
        own = [t for t in tables if t.schema == schema]
        sections.append(f"### Schema `{schema}`\n")
        sections.extend(table_section(t, ddl.get(t.name, [])) for t in own)
        if ddl.get(""):
            rest = [s for s in ddl[""] if not s.startswith("CREATE SCHEMA")]
            if rest:
                sections.append("Schema-level objects:\n\n```sql\n" + "\n\n".join(rest) + "\n```\n")
    return "\n".join(sections).rstrip()


def render_table_list(tables: list[Table]) -> str:
    rows = ["| schema | table | purpose |", "|---|---|---|"]
    rows += [
        f"| `{t.schema}` | `{t.name}` | {_cell(t.comment) or '**(no comment yet)**'} |"
        for t in tables
    ]
    return "\n".join(rows)


def render_references(tables: list[Table]) -> str:
    rows = ["| column | refers to | how it is kept right |", "|---|---|---|"]
    for r in present_references(tables, local=True):
        same = r.target.split(".")[0] == r.column.split(".")[0]
        note = " (same schema, deliberately no foreign key)" if same else ""
        rows.append(f"| `{r.column}` | `{r.target}` | {_cell(r.checked_by)}{note} |")
    return "\n".join(rows)


def render_missing(tables: list[Table]) -> str:
    missing_tables = tables_without_comment(tables)
    missing_columns = columns_without_comment(tables)
    lines = []
    if missing_tables:
        lines.append("Tables without a comment: " + ", ".join(f"`{t}`" for t in missing_tables))
    lines.append(
        "Columns without a comment (names other than the obvious ones: "
        + ", ".join(sorted(OBVIOUS_COLUMNS))
        + "): "
        + (", ".join(f"`{c}`" for c in missing_columns) or "none")
        + "."
    )
    return "\n\n".join(lines)


def _bench(path: Any = None) -> dict[str, Any] | None:
    path = BENCH_RESULTS if path is None else path
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def render_growth(bench: dict[str, Any] | None) -> str:
    if bench is None:
        return "_`make bench-db` has not been run yet: no measurements._"
    users = bench["seed"]["users"]
    months = bench["seed"]["months"]
    lines = [
        f"Measured after seeding {users:,} users with {months} months of activity "
        f"({bench['machine']}, {bench['finished_at']}). Per user per month = the table's "
        f"rows or total bytes (heap + indexes + TOAST) / users / months.",
        "",
        "| table | rows | total size | rows / user / month | bytes / user / month |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in sorted(bench["tables"], key=lambda t: -t["bytes"]):
        lines.append(
            f"| `{t['table']}` | {t['rows']:,} | {_bytes(t['bytes'])} | "
            f"{t['rows'] / users / months:.3f} | {_bytes(t['bytes'] / users / months)} |"
        )
    return "\n".join(lines)


def render_bench(bench: dict[str, Any] | None) -> str:
    if bench is None:
        return "_`make bench-db` has not been run yet._"
    rows = {t["table"]: t["rows"] for t in bench["tables"]}
    biggest = ", ".join(
        f"{rows[t]:,} {t.split('.')[1]}"
        for t in (
            "identity.users",
            "projects.projects",
            "projects.edits",
            "assets.assets",
            "presets.presets",
            "presets.preset_likes",
            "billing.usage_ledger",
        )
        if t in rows
    )
    lines = [
        f"Scale {bench['scale']:g} ({biggest}). Machine: {bench['machine']}, PostgreSQL "
        f"{bench['postgres']}. Run: {bench['finished_at']}, "
        f"{bench['repeats']} runs per statement and round, seeding took "
        f"{bench['seed_seconds']:.0f} s, the whole run {bench.get('total_seconds', 0):.0f} s. "
        f"Verdict: **{'pass' if bench['passed'] else 'FAIL'}** "
        f"(limit: p99 ≤ {bench['p99_limit_ms']} ms, no sequential scan of a table over "
        f"{bench['large_table_rows']:,} rows).",
        *([f"Conditions: {bench['note']}"] if bench.get("note") else []),
        "",
        "| # | statement (from) | access path | p50 ms | p99 ms | verdict |",
        "|---:|---|---|---:|---:|---|",
    ]
    for i, s in enumerate(bench["statements"], 1):
        lines.append(
            f"| {i} | `{_cell(s['summary'])}` ({_cell(s['origin'])}) | {_cell(s['access'])} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {_cell(s['verdict'])} |"
        )
    return "\n".join(lines)


def render(admin_url: str) -> str:
    schemas = built_services()
    tables = read_catalog(admin_url, schemas)
    bench = _bench()
    full = _bench(BENCH_FULL_RESULTS)
    erds = "\n\n".join(
        f"`{schema}`:\n\n```mermaid\n"
        + schema_erd(schema, [t for t in tables if t.schema == schema])
        + "\n```"
        for schema in schemas
    )
    replacements = {
        "{{SCHEMAS}}": ", ".join(f"`{s}`" for s in schemas),
        "{{TABLES}}": render_table_list(tables),
        "{{REFERENCES}}": render_references(tables),
        "{{CROSS_ERD}}": "```mermaid\n" + cross_service_erd(tables) + "\n```",
        "{{RELATIONSHIPS}}": "\n".join(relationship_sentences(tables)),
        "{{ERD}}": erds,
        "{{MISSING}}": render_missing(tables),
        "{{FK_INDEX}}": ", ".join(f"`{f}`" for f in foreign_keys_without_index(tables)) or "none",
        "{{GROWTH}}": render_growth(full or bench),
        "{{BENCH}}": render_bench(bench),
        "{{BENCH_FULL}}": render_bench(full),
        "{{DETAILS}}": render_tables(tables, admin_url, schemas),
    }
    text = TEMPLATE.read_text()
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def main() -> int:
    from tools.provision import embedded_admin_url, provision

    admin_url = os.environ.get("PIXELSHOP_DATABASE_URL") or embedded_admin_url()
    provision(admin_url)
    tables = read_catalog(admin_url)
    for label, items in (
        ("table without a comment", tables_without_comment(tables)),
        ("column without a comment", columns_without_comment(tables)),
        ("index without an INDEX_QUERIES entry", indexes_without_query(tables)),
        ("UUID column not accounted for", unaccounted_uuid_columns(tables)),
        ("foreign key without an index", foreign_keys_without_index(tables)),
    ):
        for item in items:
            print(f"dbdoc: {label}: {item}", file=sys.stderr)
    OUTPUT.write_text(render(admin_url))
    print(f"wrote {OUTPUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
