"""The database scale check (`make bench-db`): seed millions of rows, replay every hot
statement, fail on a sequential scan of a large table or a p99 over the limit.

    python -m tools.bench_db                      # DEFAULT_SCALE of SCALE, under 10 minutes
    python -m tools.bench_db --scale 1            # SCALE itself: 1M users, 10M edits…
    python -m tools.bench_db --scale 0.01         # a quick run (1% of every count)
    PIXELSHOP_BENCH_DB_SCALE=0.05 make bench-db
    python -m tools.bench_db --rows presets.presets=500000 --repeats 300

1. A throwaway cluster (tools.pgcluster) is provisioned and migrated (tools.provision):
   the schemas are exactly what the migrations create.
2. Every table is seeded from the catalog with one set-based INSERT ... SELECT over
   generate_series (no row-by-row Python): the row counts are SCALE (times --scale);
   column values come from SEED_RULES where the data needs a shape (deep and branched
   edit histories, one live refresh token per session, popular presets), and otherwise
   from the column's type, its CHECK constraint's allowed values, the foreign keys (a
   row of the parent) and dbdoc's cross-service references (a row of the other service).
   Ids are md5-derived, so a reference to "row k of table T" needs no lookup. Foreign key
   triggers are off while seeding (session_replication_role = replica): the generated
   references are right by construction. Then VACUUM ANALYZE.
3. The statements come from docs/hot-statements.json (recorded from the service test
   suites by tools/hot_statements.py, not typed here). Each one is replayed REPEATS times
   inside a transaction that is rolled back, with its parameters drawn from the seeded
   rows wherever the statement compares a column with a parameter (and fresh ids for
   the primary keys it inserts). Its plan (EXPLAIN, with the same parameters) gives the
   access path; p50 and p99 are of the statement's round trip.
4. It fails when a plan reads a table of more than LARGE_TABLE_ROWS rows sequentially,
   when a p99 exceeds P99_LIMIT_MS, or when a statement errors. The results, with the
   machine, go to docs/bench-db.json, which `make docs` puts into docs/database.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import pathlib
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from tools import dbdoc, hot_statements
from tools.pgcluster import throwaway_cluster
from tools.provision import ROOT, provision

RESULTS = ROOT / "docs" / "bench-db.json"
FULL_RESULTS = ROOT / "docs" / "bench-db-full.json"
# `make bench-db` seeds this fraction of SCALE: on this 2-core machine, shared with other
# work, scale 1 (1M users, 10M edits) takes 9 to 29 minutes, scale 0.3 4 to 7.
DEFAULT_SCALE = 0.3
P99_LIMIT_MS = 5.0
LARGE_TABLE_ROWS = 10_000
REPEATS = 100
ROUNDS = 3  # p50/p99 of the best round: a burst of the neighbours' load is not ours
STATEMENT_TIMEOUT_MS = 2000
STATEMENT_BUDGET_SECONDS = 20.0  # of replay per statement, at most
WORKERS = 2  # connections loading (and building indexes) at once: the machine's cores
CHUNK_ROWS = 1_000_000
MONTHS = 12  # the seeded rows' timestamps spread over this many months

# Rows per table at scale 1 (SPEC section 7 and issue 11). Tables not listed get
# MINOR_ROWS_PER_USER rows per user when they have a user reference, else none.
SCALE: dict[str, int] = {
    "identity.users": 1_000_000,
    "identity.sessions": 1_500_000,
    "identity.refresh_tokens": 4_500_000,
    "identity.one_time_tokens": 200_000,
    "identity.login_failures": 100_000,
    "identity.outbox": 50_000,
    "identity.mail_requests": 20_000,
    "identity.mail_sends": 50_000,
    "identity.outbox_followers": 4,
    "projects.projects": 2_000_000,
    "projects.edits": 10_000_000,
    "assets.assets": 2_000_000,
    "assets.asset_variants": 1_800_000,
    "assets.deleted_users": 5_000,
    "presets.presets": 100_000,
    "presets.preset_likes": 5_000_000,
    "presets.preset_uses": 1_000_000,
    "presets.deleted_users": 5_000,
    "billing.customers": 100_000,
    "billing.subscriptions": 60_000,
    "billing.usage_counters": 2_000_000,
    "billing.usage_reservations": 1_000_000,
    "billing.usage_ledger": 1_000_000,
    "billing.stripe_events": 200_000,
    "billing.tier_outbox": 20_000,
    "billing.deleted_users": 5_000,
    "projects.deleted_users": 5_000,
}

# Deep and branched histories: the first DEEP_PROJECTS projects get DEEP_EDITS edits
# each (a 10,000-step history, SPEC section 7), the rest share the remaining edits.
DEEP_PROJECTS = 50
DEEP_EDITS = 10_000
# In a deep history every 50th edit is applied after undoing three (a new branch); in
# the others the last edit is, so every project has a branched history.
DEEP_BRANCH_EVERY = 50

NOW = "timestamptz '2026-12-01 00:00:00+00'"


def _ts(spread: str = "{i}") -> str:
    """A timestamp inside the seeded months, spread by a hash of the row number."""
    return f"({NOW} - ((({spread}) * 7919) % ({MONTHS} * 2592000)) * interval '1 second')"


# Column values that need a shape. Placeholders: {i} row number (1..n), {n} the table's
# row count, {id:T} the id of row {i} of table T, {ref:T} the id of a row of T chosen by
# a hash of {i}, {rows:T} T's row count, {sha}: 32 bytes from {i}.
SEED_RULES: dict[str, dict[str, str | None]] = {
    "identity.users": {
        "email": "'user' || {i} || '@example.com'",
        "username": "'user' || {i}",
        "username_skeleton": "'user' || {i}",
        "pending_email": None,
        "password_hash": "'$argon2id$v=19$m=65536,t=3,p=4$' || md5({i}::text) || '$' "
        "|| md5(({i} + 1)::text) || md5(({i} + 2)::text)",
        "display_name": "'User ' || {i}",
        "email_verified_at": f"CASE WHEN {{i}} % 3 = 0 THEN NULL ELSE {_ts()} END",
        "tier_code": "CASE WHEN {i} % 20 = 0 THEN 'pro' ELSE 'free' END",
        "created_at": _ts(),
        "updated_at": _ts(),
        "deleted_at": None,
    },
    "identity.sessions": {
        "user_id": "{ref:identity.users}",
        "user_agent": "'Mozilla/5.0 (X11; Linux x86_64) Firefox/' || ({i} % 40 + 100)",
        "ip_address": "'10.' || ({i} % 250) || '.' || ({i} / 250 % 250) || '.1'",
        "created_at": _ts(),
        "last_used_at": _ts(),
        "expires_at": f"{NOW} + interval '30 days'",
        "revoked_at": f"CASE WHEN {{i}} % 4 = 0 THEN {NOW} ELSE NULL END",
        "revoked_reason": "CASE WHEN {i} % 4 = 0 THEN 'log_out' ELSE NULL END",
    },
    # Three tokens per session, the last one live: a rotation chain.
    "identity.refresh_tokens": {
        "session_id": "bench.uid('identity.sessions', ({i} - 1) / 3 + 1)",
        "parent_id": "CASE WHEN ({i} - 1) % 3 = 0 THEN NULL "
        "ELSE bench.uid('identity.refresh_tokens', {i} - 1) END",
        "token_hash": "{sha}",
        "issued_at": _ts("({i} - 1) / 3 + 1"),
        "expires_at": f"{NOW} + interval '30 days'",
        "rotated_at": f"CASE WHEN ({{i}} - 1) % 3 < 2 THEN {NOW} ELSE NULL END",
        # A revoked session (every 4th) has no live token left.
        "revoked_at": f"CASE WHEN (({{i}} - 1) / 3 + 1) % 4 = 0 THEN {NOW} ELSE NULL END",
    },
    # Three events per writing transaction, in transaction order.
    "identity.outbox": {
        "xact_id": "((({i} - 1) / 3 + 1)::text)::xid8",
        "type": "CASE WHEN {i} % 5 = 0 THEN 'user.tier_changed' ELSE 'user.deleted' END",
        "user_id": "{ref:identity.users}",
        "created_at": _ts(),
    },
    # The consuming services, each half-way through the outbox.
    "identity.outbox_followers": {
        "follower": "(ARRAY['projects', 'assets', 'presets', 'billing'])[{i}]",
        "xact_id": f"(({SCALE['identity.outbox']} / 6 + {{i}})::text)::xid8",
        "sequence": "1",
        "updated_at": _ts(),
    },
    "identity.mail_sends": {"sent_at": f"{NOW} - ({{i}} % 3600) * interval '1 second'"},
    "identity.one_time_tokens": {
        "token_hash": "{sha}",
        "user_id": "{ref:identity.users}",
        "email": "'user' || {i} || '@example.com'",
        "expires_at": f"{NOW} + interval '1 day'",
        "used_at": None,
    },
    # Throttle buckets and mail sends older than their windows are swept: only recent ones.
    "identity.login_failures": {
        "subject_hash": "{sha}",
        "bucket_start": f"{NOW} - ({{i}} % 3600) * interval '1 second'",
        "failures": "1 + {i} % 5",
    },
    "assets.assets": {
        "owner_id": "{ref:identity.users}",
        "kind": "CASE WHEN {i} % 3 = 0 THEN 'edit_result' ELSE 'upload' END",
        # Every 10th asset is an upload still pending (no thumbnail yet).
        "state": "CASE WHEN {i} % 10 = 0 THEN 'pending' ELSE 'ready' END",
        # As long as the real keys (users/<uuid>/<uuid>/original), cheaper to make.
        "storage_key": "'users/' || lpad(({i} % 1000003)::text, 36, '0') || '/' "
        "|| lpad({i}::text, 36, '0') || '/original'",
        "mime_type": "'image/jpeg'",
        "size_bytes": "200000 + ({i} * 7919) % 8000000",
        "width": "4032",
        "height": "3024",
        "sha256": "md5({i}::text) || md5(({i} + 1)::text)",
        "filename": "'IMG_' || {i} || '.jpg'",
        "idempotency_key": None,
        "idempotency_scope": None,
        "reservation_id": None,
        "created_at": _ts(),
        "deleted_at": f"CASE WHEN {{i}} % 50 = 0 THEN {NOW} ELSE NULL END",
        "purged_at": None,
        "next_attempt_at": None,
    },
    # A thumbnail for each ready asset: variant i belongs to the i-th asset not pending.
    "assets.asset_variants": {
        "asset_id": "bench.uid('assets.assets', {i} + ({i} - 1) / 9)",
        "name": "'thumbnail'",
        "storage_key": "'users/' || lpad(({i} % 1000003)::text, 36, '0') || '/' "
        "|| lpad({i}::text, 36, '0') || '/thumbnail'",
        "mime_type": "'image/webp'",
        "size_bytes": "20000 + {i} % 30000",
        "width": "512",
        "height": "384",
    },
    "presets.presets": {
        "owner_id": "CASE WHEN {i} <= 12 THEN NULL ELSE {ref:identity.users} END",
        "name": "'Preset ' || {i}",
        "description": "'A look for ' || ({i} % 500) || ' kinds of photos, warm and soft'",
        "prompt": "'Apply a cinematic colour grade with teal shadows and warm highlights, "
        "variant ' || {i}",
        "category": "CASE WHEN {i} % 2 = 0 THEN 'filter' ELSE 'adjustment' END",
        "visibility": "CASE WHEN {i} <= 12 OR {i} % 3 = 0 THEN 'public' "
        "WHEN {i} % 3 = 1 THEN 'private' ELSE 'unlisted' END",
        "forked_from_id": "CASE WHEN {i} % 10 = 0 AND {i} > 12 "
        "THEN bench.uid('presets.presets', 1 + ({i} * 31) % ({i} - 1)) ELSE NULL END",
        "like_count": "0",
        "use_count": "0",
        "created_at": _ts(),
        "updated_at": _ts(),
        "deleted_at": f"CASE WHEN {{i}} % 40 = 0 AND {{i}} > 12 THEN {NOW} ELSE NULL END",
        "idempotency_key": None,
        "request_sha256": None,
    },
    # The k-th like of user u (i = k * users + u) goes to a different preset for each k.
    "presets.preset_likes": {
        "preset_id": "bench.uid('presets.presets', 1 + (bench.spread(({i} - 1) "
        "% {rows:identity.users} + 1, {rows:presets.presets}) + (({i} - 1) "
        "/ {rows:identity.users}) * 7919) % {rows:presets.presets})",
        "user_id": "bench.uid('identity.users', ({i} - 1) % {rows:identity.users} + 1)",
        "created_at": _ts(),
    },
    "presets.preset_uses": {
        "edit_id": "bench.uid('projects.edits', {i})",
        "preset_id": "bench.uid('presets.presets', "
        "1 + floor({rows:presets.presets} * power(random(), 2))::bigint)",
        "created_at": _ts(),
    },
    "billing.customers": {
        "user_id": "bench.uid('identity.users', {i})",
        "stripe_customer_id": "'cus_' || {i}",
    },
    "billing.subscriptions": {
        "user_id": "bench.uid('identity.users', {i})",
        "stripe_subscription_id": "'sub_' || {i}",
        "tier_code": "'pro'",
        "status": "CASE WHEN {i} % 6 = 0 THEN 'canceled' ELSE 'active' END",
        "current_period_start": f"{NOW} - interval '10 days'",
        "current_period_end": f"{NOW} + interval '20 days'",
    },
    # One counter per user and metric for the current month, then earlier months.
    "billing.usage_counters": {
        "user_id": "bench.uid('identity.users', ({i} - 1) % {rows:identity.users} + 1)",
        "metric": "(ARRAY['ai_edits', 'storage_bytes', 'projects'])"
        "[(({i} - 1) / {rows:identity.users}) % 3 + 1]",
        "period_start": f"date_trunc('month', {NOW}) - "
        "((({i} - 1) / ({rows:identity.users} * 3)) * interval '1 month')",
        "used": "{i} % 20",
        "reserved": "{i} % 3",
    },
    "billing.usage_reservations": {
        "user_id": "{ref:identity.users}",
        "metric": "CASE WHEN {i} % 2 = 0 THEN 'ai_edits' ELSE 'storage_bytes' END",
        "period_start": f"date_trunc('month', {NOW})",
        "idempotency_key": "'r' || {i}",
        "amount": "1",
        "state": "CASE WHEN {i} % 50 = 0 THEN 'reserved' ELSE 'committed' END",
        "expires_at": f"{NOW} + interval '15 minutes'",
        "settled_at": None,
    },
    "billing.usage_ledger": {
        "user_id": "{ref:identity.users}",
        "metric": "CASE WHEN {i} % 2 = 0 THEN 'ai_edits' ELSE 'storage_bytes' END",
        "period_start": f"date_trunc('month', {NOW}) - (({{i}} % {MONTHS}) * interval '1 month')",
        "kind": "CASE WHEN {i} % 10 = 0 THEN 'credit' ELSE 'commit' END",
        "delta": "CASE WHEN {i} % 10 = 0 THEN -1 ELSE 1 END",
        "reservation_id": "CASE WHEN {i} % 10 = 0 THEN NULL "
        "ELSE bench.uid('billing.usage_reservations', {i}) END",
        "idempotency_key": "CASE WHEN {i} % 10 = 0 THEN 'c' || {i} ELSE NULL END",
        "created_at": _ts(),
    },
    # Tier changes are relayed within seconds: all but the last few are delivered.
    "billing.tier_outbox": {
        "user_id": "{ref:identity.users}",
        "tier_code": "CASE WHEN {i} % 2 = 0 THEN 'pro' ELSE 'free' END",
        "created_at": _ts(),
        "next_attempt_at": _ts(),
        "delivered_at": f"CASE WHEN {{i}} % 50 = 0 THEN NULL ELSE {NOW} END",
    },
    "billing.stripe_events": {
        "id": "'evt_' || {i}",
        "stripe_subscription_id": "'sub_' || ({i} % 60000 + 1)",
        "received_at": _ts(),
        "processed_at": _ts(),
    },
}


# One sample of each action's parameters as the service stores them (pixels and fractions).
EDIT_PARAMS = ", ".join(
    "'" + json.dumps(params).replace("'", "''") + "'::jsonb"
    for params in (
        {
            "prompt": "change the shirt colour to blue",
            "hotspots": [{"x": 1210, "y": 1830, "fx": 0.3001, "fy": 0.6052}],
        },
        {"prompt": "apply a synthwave aesthetic with neon magenta and cyan"},
        {"prompt": "blur the background softly, keep the subject sharp"},
        {
            "x": 16,
            "y": 252,
            "width": 4000,
            "height": 2250,
            "aspectRatio": "16:9",
            "fractions": {"x": 0.004, "y": 0.0833, "width": 0.9921, "height": 0.744},
        },
    )
)


def edit_history_rules() -> dict[str, str | None]:
    """projects.edits as deep and branched histories (see DEEP_PROJECTS).

    Edit {i} is edit `seq` of project `project` (Layout.sources). Its parent is the
    previous edit of that project, except at a branch point (every `bench.branch_every`
    edits), which is applied after undoing three: its parent is three steps back, it
    starts a new branch and stores the branch path, as the service writes them
    (services/projects/service.py)."""
    seq, project, every, first = "g.seq", "g.project", "g.every", "g.first"
    return {
        "project_id": f"bench.uid('projects.projects', {project})",
        "owner_id": f"bench.uid('identity.users', bench.spread({project}, "
        "{rows:identity.users}))",
        "seq": seq,
        "parent_id": f"CASE WHEN {seq} = 1 THEN NULL WHEN {seq} % {every} = 0 "
        "THEN bench.uid('projects.edits', {i} - 3) ELSE bench.uid('projects.edits', {i} - 1) END",
        "depth": f"{seq} - 2 * ({seq} / {every})",
        "branch_id": f"bench.uid('projects.edits', {first} + "
        f"greatest(({seq} / {every}) * {every}, 1) - 1)",
        "branch_path": f"CASE WHEN {seq} = 1 THEN '[]'::jsonb WHEN {seq} % {every} = 0 "
        f"THEN bench.branch_path({first}, {seq}, {every}) ELSE NULL END",
        "latest_child_id": None,
        "action": "(ARRAY['retouch', 'filter', 'adjust', 'crop'])[{i} % 4 + 1]",
        "params": f"(ARRAY[{EDIT_PARAMS}])[{{i}} % 4 + 1]",
        "preset_id": None,
        "preset_prompt": None,
        "preset_version": None,
        "source_asset_id": "{ref:assets.assets}",
        "source_mime_type": "'image/jpeg'",
        "source_width": "4032",
        "source_height": "3024",
        "source_bytes": "3500000",
        "result_asset_id": "{ref:assets.assets}",
        "result_mime_type": "'image/png'",
        "result_width": "4032",
        "result_height": "3024",
        "result_bytes": "9000000",
        "status": "'succeeded'",
        "error": None,
        "error_code": None,
        "engine": "'gemini'",
        "model": "'gemini-2.5-flash-image'",
        "finish_reason": "'STOP'",
        "input_tokens": "1290",
        "output_tokens": "1290",
        "duration_ms": "4000 + {i} % 9000",
        "request_id": "'req-' || {i}",
        "reapplied_from_id": None,
        "reapplied_from_project_id": None,
        "ai_reservation_id": None,
        "storage_reservation_id": None,
        "settled_at": f"{NOW}",
        "created_at": _ts(project),
        "finished_at": _ts(project),
        # The sweeper's lease clock: as inserted (no claim since).
        "settle_after": _ts(project),
    }


def project_rules() -> dict[str, str | None]:
    return {
        "owner_id": "bench.uid('identity.users', bench.spread({i}, {rows:identity.users}))",
        "name": "'Project ' || {i}",
        "original_asset_id": "{ref:assets.assets}",
        "original_mime_type": "'image/jpeg'",
        "original_width": "4032",
        "original_height": "3024",
        "original_bytes": "3500000",
        "head_edit_id": "CASE WHEN g.edits = 0 THEN NULL "
        "ELSE bench.uid('projects.edits', g.first + g.edits - 1) END",
        "thumbnail_asset_id": "{ref:assets.assets}",
        "root_latest_child_id": None,
        "running_edit_id": None,
        "edit_count": "g.edits",
        "version": "1 + g.edits",
        "quota_reservation_id": None,
        "created_at": _ts(),
        "updated_at": _ts(),
        "deleted_at": f"CASE WHEN {{i}} % 100 = 0 THEN {NOW} ELSE NULL END",
        # The sweeper credits a deleted project within a sweep: all but one in 100 of the
        # deleted rows are credited (the ones waiting for the sweeper or the purge).
        "credited_at": f"CASE WHEN {{i}} % 100 = 0 AND {{i}} % 10000 <> 0 THEN {NOW} END",
        # The sweeper's lease clock: as inserted (no claim since).
        "sweep_after": _ts(),
    }


@dataclass(frozen=True)
class Layout:
    """Where the edits go: DEEP_PROJECTS deep histories, then `per` edits per project."""

    deep: int
    deep_edits: int
    per: int
    edits: int

    @classmethod
    def of(cls, counts: dict[str, int]) -> Layout:
        edits = counts.get("projects.edits", 0)
        projects = max(counts.get("projects.projects", 0), 1)
        deep = min(DEEP_PROJECTS, projects)
        deep_edits = min(DEEP_EDITS, max(edits // (4 * max(deep, 1)), 1))
        per = max(math.ceil((edits - deep * deep_edits) / max(projects - deep, 1)), 1)
        return cls(deep, deep_edits, per, edits)

    @property
    def deep_total(self) -> int:
        return self.deep * self.deep_edits

    def every(self, project: str) -> str:
        normal = self.per if self.per > 3 else 1_000_000_000
        return f"CASE WHEN {project} <= {self.deep} THEN {DEEP_BRANCH_EVERY} ELSE {normal} END"

    def first(self, project: str) -> str:
        return (
            f"CASE WHEN {project} <= {self.deep} THEN ({project} - 1) * {self.deep_edits} + 1 "
            f"ELSE {self.deep_total} + ({project} - {self.deep} - 1) * {self.per} + 1 END"
        )

    def count(self, project: str) -> str:
        d, dt, per = self.deep, self.deep_total, self.per
        return (
            f"CASE WHEN {project} <= {d} THEN {self.deep_edits} "
            f"WHEN {dt} + ({project} - {d}) * {per} <= {self.edits} THEN {per} "
            f"ELSE greatest(0, {self.edits} - {dt} - ({project} - {d} - 1) * {per}) END"
        )

    def sources(self, counts: dict[str, int]) -> dict[str, str]:
        """The FROM of the edits and projects seeds: each row's position computed once."""
        dt, de, d, per = self.deep_total, self.deep_edits, self.deep, self.per
        edits = (
            f"(SELECT e.i, e.project, e.seq, {self.every('e.project')} AS every, "  # noqa: S608
            f"{self.first('e.project')} AS first FROM (SELECT i, "
            f"CASE WHEN i <= {dt} THEN (i - 1) / {de} + 1 "
            f"ELSE {d} + (i - {dt} - 1) / {per} + 1 END AS project, "
            f"CASE WHEN i <= {dt} THEN (i - 1) % {de} + 1 ELSE (i - {dt} - 1) % {per} + 1 END "
            f"AS seq FROM generate_series(1::bigint, {counts.get('projects.edits', 0)}) AS i) e"
            ") AS g"
        )
        projects = (
            f"(SELECT i, {self.first('i')} AS first, {self.count('i')} AS edits "  # noqa: S608
            f"FROM generate_series(1::bigint, {counts.get('projects.projects', 0)}) AS i) AS g"
        )
        return {"projects.edits": edits, "projects.projects": projects}


HELPERS = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE OR REPLACE FUNCTION bench.uid(tag text, k bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(int8send(hashint8extended(k, hashtext(tag)))
                  || int8send(hashint8extended(k, hashtext(tag) + 1)), 'hex')::uuid $$;
CREATE OR REPLACE FUNCTION bench.spread(i bigint, n bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT 1 + ((i * 2654435761) % greatest(n, 1)) $$;
-- The (branch's first seq, deepest depth) pairs from the original to the parent of the
-- branch point at `seq` (projects migration 0003): every earlier branch of the project,
-- each left three edits before its end.
CREATE OR REPLACE FUNCTION bench.branch_path(first bigint, seq bigint, every bigint)
    RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(greatest(k * every, 1),
               (k + 1) * every - 3 - 2 * k) ORDER BY k), '[]'::jsonb)
    FROM generate_series(0, seq / every - 1) AS k $$;
CREATE OR REPLACE FUNCTION bench.sha(tag text, k bigint) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT sha256((tag || k::text)::bytea) $$;
"""


@dataclass
class SeedResult:
    table: str
    rows: int
    seconds: float
    error: str = ""


def _check_values(table: dbdoc.Table) -> dict[str, list[str]]:
    """Columns whose CHECK constraint lists the allowed values: col IN ('a', 'b')."""
    allowed: dict[str, list[str]] = {}
    for _, kind, definition in table.constraints:
        if kind != "check":
            continue
        match = re.search(r"\(\((\w+) = ANY \(ARRAY\[(.*?)\]\)\)\)", definition)
        if match and "AND" not in definition and " OR " not in definition:
            allowed[match.group(1)] = re.findall(r"'([^']*)'", match.group(2))
    return allowed


def _references(table: dbdoc.Table) -> dict[str, str]:
    """Column -> the table its values name (foreign keys and cross-service references)."""
    targets = {
        r.column.rsplit(".", 1)[1]: r.target
        for r in dbdoc.CROSS_SERVICE_REFERENCES
        if r.column.rsplit(".", 1)[0] == table.qualified
    }
    for fk in table.foreign_keys:
        if len(fk.columns) == 1 and fk.parent_columns in ((), ("id",)):
            targets[fk.columns[0]] = fk.parent
    return targets


def column_expression(
    table: dbdoc.Table, column: dbdoc.Column, rules: dict[str, str | None], rows: dict[str, int]
) -> str | None:
    """The SQL expression seeding one column ({i} is the row number), or None to leave
    it to its default (or NULL)."""
    if column.default.startswith(("generated", "identity")):
        return None
    if column.name in rules:
        return rules[column.name]
    references = _references(table)
    if column.name in table.primary_key and len(table.primary_key) == 1:
        if column.type == "uuid":
            return f"{{id:{table.qualified}}}"
        if column.type in ("text", "character varying") or column.type.startswith("char"):
            return f"'{table.name}-' || {{i}}"
    target = references.get(column.name)
    if target is not None and target != table.qualified:
        if rows.get(target, 0) > 0 or target in SCALE:
            return f"{{ref:{target}}}"
        return None if not column.not_null else f"{{ref:{target}}}"
    if column.default or not column.not_null:
        return None
    allowed = _check_values(table).get(column.name)
    if allowed:
        array = ", ".join(f"'{v}'" for v in allowed)
        return f"(ARRAY[{array}])[{{i}} % {len(allowed)} + 1]"
    kind = column.type
    if kind == "uuid":
        return f"bench.uid('{table.qualified}.{column.name}', {{i}})"
    if kind.startswith("timestamp"):
        return _ts()
    if kind in ("bigint", "integer", "smallint"):
        return "1 + {i} % 1000"
    if kind == "boolean":
        return "false"
    if kind == "bytea":
        return "{sha}"
    if kind == "jsonb" or kind == "json":
        return "'{}'::jsonb"
    if kind == "xid8":
        return "'1'::xid8"
    return f"'{column.name}-' || {{i}}"


def render_expression(expression: str, table: dbdoc.Table, rows: dict[str, int]) -> str:
    def ref(match: re.Match[str]) -> str:
        target = match.group(1)
        return (
            f"bench.uid('{target}', bench.spread({{i}} + {len(table.name)}, {rows.get(target, 1)}))"
        )

    text = re.sub(r"\{ref:([\w.]+)\}", ref, expression)
    text = re.sub(r"\{id:([\w.]+)\}", r"bench.uid('\1', {i})", text)
    text = re.sub(r"\{rows:([\w.]+)\}", lambda m: str(max(rows.get(m.group(1), 1), 1)), text)
    text = text.replace("{sha}", f"bench.sha('{table.qualified}', {{i}})")
    return text.replace("{n}", str(rows.get(table.qualified, 0))).replace("{i}", "g.i")


def seed_statement(
    table: dbdoc.Table,
    rules: dict[str, str | None],
    rows: dict[str, int],
    source: str | None = None,
) -> tuple[str, list[str]]:
    columns, expressions = [], []
    for column in table.columns:
        expression = column_expression(table, column, rules, rows)
        if expression is None:
            continue
        columns.append(f'"{column.name}"')
        expressions.append(render_expression(expression, table, rows))
    count = rows[table.qualified]
    sql = (
        f"INSERT INTO {table.qualified} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(expressions)} "
        f"FROM {source or f'generate_series(1::bigint, {count}) AS g(i)'}"
    )
    return sql, [c.strip('"') for c in columns]


def row_counts(
    tables: list[dbdoc.Table], scale: float, overrides: dict[str, int]
) -> dict[str, int]:
    counts = {}
    for table in tables:
        base = overrides.get(table.qualified, SCALE.get(table.qualified, 0))
        scaled = base if table.qualified in overrides else int(base * scale)
        if base and not scaled:
            scaled = 1
        counts[table.qualified] = scaled
    return counts


# Seeding order: parents before children (for the counts rules read), large tables last.
ORDER = [
    "identity.users",
    "identity.sessions",
    "identity.refresh_tokens",
    "assets.assets",
    "assets.asset_variants",
    "presets.presets",
    "presets.preset_likes",
    "presets.preset_uses",
    "projects.projects",
    "projects.edits",
]


async def seed(
    admin_url: str, tables: list[dbdoc.Table], counts: dict[str, int], log: Any
) -> list[SeedResult]:
    connection = await asyncpg.connect(dbdoc._dsn(admin_url))
    results = []
    try:
        await connection.execute(HELPERS)
        sources = Layout.of(counts).sources(counts)
        await connection.execute("SET session_replication_role = replica")
        await connection.execute("SET maintenance_work_mem = '512MB'")
        await connection.execute("SET work_mem = '64MB'")
        rank = {name: n for n, name in enumerate(ORDER)}
        ordered = sorted(tables, key=lambda t: (rank.get(t.qualified, -1), t.qualified))
        seeded = [t for t in ordered if counts.get(t.qualified, 0) > 0]
        started = time.monotonic()
        keys = await _drop_keys_and_indexes(connection, seeded, tables)
        log(f"dropped {len(keys.indexes)} indexes and {len(keys.foreign_keys)} foreign keys")
        jobs: list[tuple[dbdoc.Table, str, int]] = []
        for table in seeded:
            count = counts[table.qualified]
            rules = dict(SEED_RULES.get(table.qualified, {}))
            if table.qualified == "projects.edits":
                rules = edit_history_rules()
            elif table.qualified == "projects.projects":
                rules = project_rules()
            sql, _ = seed_statement(table, rules, counts, sources.get(table.qualified))
            step = max(CHUNK_ROWS, 1)
            for low in range(1, count + 1, step):
                high = min(low + step - 1, count)
                series = f"generate_series(1::bigint, {count})"
                assert series in sql, sql
                chunk = sql.replace(series, f"generate_series({low}::bigint, {high})")
                jobs.append((table, chunk, high - low + 1))
        jobs.sort(key=lambda job: -job[2])
        results.extend(await _run_jobs(admin_url, jobs, log))
        log(f"loaded in {time.monotonic() - started:.1f} s; building keys and indexes")
        started = time.monotonic()
        for table_name, problem in await _restore_keys_and_indexes(admin_url, keys, counts):
            results.append(SeedResult(table_name, 0, 0.0, problem))
            log(f"FAILED {table_name}: {problem}")
        log(f"keys and indexes built in {time.monotonic() - started:.1f} s")
        if counts.get("presets.preset_likes"):
            await connection.execute(
                "UPDATE presets.presets p SET like_count = l.n FROM (SELECT preset_id, "
                "count(*) AS n FROM presets.preset_likes GROUP BY preset_id) l "
                "WHERE p.id = l.preset_id"
            )
        if counts.get("presets.preset_uses"):
            await connection.execute(
                "UPDATE presets.presets p SET use_count = u.n FROM (SELECT preset_id, "
                "count(*) AS n FROM presets.preset_uses GROUP BY preset_id) u "
                "WHERE p.id = u.preset_id"
            )
        await connection.execute("SET session_replication_role = DEFAULT")
        started = time.monotonic()
        for table in ordered:
            await connection.execute(f"VACUUM (ANALYZE) {table.qualified}")
        log(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
    finally:
        await connection.close()
    return results


async def _session(admin_url: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(dbdoc._dsn(admin_url))
    await connection.execute("SET session_replication_role = replica")
    await connection.execute("SET maintenance_work_mem = '512MB'")
    await connection.execute("SET work_mem = '64MB'")
    return connection


async def _run_jobs(
    admin_url: str, jobs: list[tuple[dbdoc.Table, str, int]], log: Any
) -> list[SeedResult]:
    """The load, in chunks, on WORKERS connections at once (INSERT ... SELECT has no
    parallel plan of its own)."""
    queue = list(jobs)
    results: dict[str, SeedResult] = {}

    async def worker() -> None:
        connection = await _session(admin_url)
        try:
            while queue:
                table, sql, rows = queue.pop(0)
                started = time.monotonic()
                error = ""
                try:
                    await connection.execute(sql)
                except asyncpg.PostgresError as failure:
                    error = f"{type(failure).__name__}: {failure}"
                seconds = time.monotonic() - started
                result = results.setdefault(table.qualified, SeedResult(table.qualified, 0, 0.0))
                result.rows += rows
                result.seconds += seconds
                result.error = result.error or error
                log(
                    f"seeded {table.qualified}: {rows:,} rows in {seconds:.1f} s"
                    + (f"  FAILED {error}" if error else "")
                )
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return list(results.values())


@dataclass
class DroppedKeys:
    # (table, constraint name, definition)
    constraints: list[tuple[str, str, str]]
    indexes: list[str]
    foreign_keys: list[tuple[str, str, str]]


async def _drop_keys_and_indexes(
    connection: asyncpg.Connection, seeded: list[dbdoc.Table], every: list[dbdoc.Table]
) -> DroppedKeys:
    """Bulk loading is fastest into bare heaps: every foreign key of the seeded schemas,
    and the primary keys, unique constraints and indexes of the seeded tables, are
    dropped here and built again (by sorting, not row by row) after the load."""
    schemas = sorted({t.schema for t in every})
    names = [t.qualified for t in seeded]
    foreign_keys = [
        (row["tbl"], row["name"], row["def"])
        for row in await connection.fetch(
            """
            SELECT c.conrelid::regclass::text AS tbl, c.conname AS name,
                   pg_get_constraintdef(c.oid) AS def
            FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE c.contype = 'f' AND n.nspname = ANY($1::text[])
            """,
            schemas,
        )
    ]
    for table, name, _ in foreign_keys:
        await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    constraints = [
        (row["tbl"], row["name"], row["def"])
        for row in await connection.fetch(
            """
            SELECT c.conrelid::regclass::text AS tbl, c.conname AS name,
                   pg_get_constraintdef(c.oid) AS def
            FROM pg_constraint c
            WHERE c.contype IN ('p', 'u') AND c.conrelid::regclass::text = ANY($1::text[])
            """,
            names,
        )
    ]
    indexes = [
        row["def"]
        for row in await connection.fetch(
            """
            SELECT pg_get_indexdef(x.indexrelid) AS def, x.indexrelid::regclass::text AS name
            FROM pg_index x
            WHERE x.indrelid::regclass::text = ANY($1::text[])
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
            """,
            names,
        )
    ]
    for table, name, _ in constraints:
        await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for row in await connection.fetch(
        """
        SELECT x.indexrelid::regclass::text AS name FROM pg_index x
        WHERE x.indrelid::regclass::text = ANY($1::text[])
        """,
        names,
    ):
        await connection.execute(f"DROP INDEX {row['name']}")
    return DroppedKeys(constraints, indexes, foreign_keys)


async def _restore_keys_and_indexes(
    admin_url: str, keys: DroppedKeys, counts: dict[str, int]
) -> list[tuple[str, str]]:
    """Builds the keys and indexes again, WORKERS at a time. A foreign key over a large
    table is added NOT VALID and then marked valid in the catalog: the seeded references
    are right by construction, and checking 10M rows would double the seeding time (on
    tables up to 200,000 rows it is validated for real, and tests/test_bench_db.py checks
    a small seed that way)."""
    failures: list[tuple[str, str]] = []

    async def build(statements: list[tuple[str, str, str | None]]) -> None:
        queue = list(statements)

        async def worker() -> None:
            connection = await _session(admin_url)
            try:
                while queue:
                    table, sql, validate = queue.pop(0)
                    try:
                        await connection.execute(sql)
                        if validate is not None and counts.get(table, 0) <= 200_000:
                            await connection.execute(
                                f'ALTER TABLE {table} VALIDATE CONSTRAINT "{validate}"'
                            )
                        elif validate is not None:
                            await connection.execute(
                                "UPDATE pg_constraint SET convalidated = true "
                                "WHERE conname = $1 AND conrelid = $2::regclass",
                                validate,
                                table,
                            )
                    except asyncpg.PostgresError as failure:
                        failures.append((table, f"{sql[:80]}: {type(failure).__name__}: {failure}"))
            finally:
                await connection.close()

        await asyncio.gather(*(worker() for _ in range(WORKERS)))

    # Largest tables first, so the two workers finish together.
    def size(table: str) -> int:
        return -counts.get(table, 0)

    first: list[tuple[str, str, str | None]] = [
        (table, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}', None)
        for table, name, definition in keys.constraints
    ]
    first += [
        (d.split(" ON ", 1)[1].split()[0].removeprefix("ONLY "), d, None) for d in keys.indexes
    ]
    first.sort(key=lambda item: size(item[0]))
    await build(first)
    await build(
        sorted(
            (
                (table, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition} NOT VALID', name)
                for table, name, definition in keys.foreign_keys
            ),
            key=lambda item: size(item[0]),
        )
    )
    return failures


async def measure_tables(admin_url: str, tables: list[dbdoc.Table]) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(dbdoc._dsn(admin_url))
    try:
        measured = []
        for table in tables:
            row = await connection.fetchrow(
                f"SELECT count(*) AS rows, pg_total_relation_size('{table.qualified}') AS bytes,"  # noqa: S608
                f" pg_relation_size('{table.qualified}') AS heap FROM {table.qualified}"
            )
            measured.append(
                {
                    "table": table.qualified,
                    "rows": int(row["rows"]),
                    "bytes": int(row["bytes"]),
                    "heap_bytes": int(row["heap"]),
                }
            )
        return measured
    finally:
        await connection.close()


# ------------------------------------------------------------------------------ replay

_COMPARED = re.compile(
    r"\b(identity|projects|assets|presets|billing)\.(\w+)\.(\w+)\s*(?:=|<=|>=|<|>|IN \(|= ANY \()"
    r"\s*\$(\d+)"
)
_UPDATE = re.compile(
    r"^UPDATE (identity|projects|assets|presets|billing)\.(\w+) SET (.*?) (?:WHERE|FROM|RETURNING)"
)
_INSERT = re.compile(
    r"^INSERT INTO (identity|projects|assets|presets|billing)\.(\w+) \(([^)]*)\) VALUES \((.*?)\)"
    r"(?: ON CONFLICT| RETURNING|$)"
)


# Background work (sweepers, purges, relays) is not a request's hot path: it is held to
# "no sequential scan of a large table" and the statement timeout, not to the p99 limit.
BATCH_FUNCTIONS = re.compile(
    r":(sweep|prune|purge|claim|stuck|unsettled|deleted_|expired|erase|forget|delete_user"
    # read only by the projects sweeper and PurgeUser (a project's result images)
    r"|result_asset_ids)"
)


def is_batch(origin: str) -> bool:
    return bool(BATCH_FUNCTIONS.search(origin))


def sweep_cutoffs(sql: str) -> set[int]:
    """Parameters a DELETE compares a column with by `<`: a sweep's age cutoff."""
    if not sql.startswith("DELETE"):
        return set()
    return {int(n) for n in re.findall(r"\.\w+ <=? \$(\d+)", sql)}


def parameter_columns(sql: str) -> dict[int, tuple[str, str, bool]]:
    """$n -> (table, column, inserted) for the parameters compared with a column (or
    inserted into one)."""
    mapping: dict[int, tuple[str, str, bool]] = {}
    for schema, table, column, number in _COMPARED.findall(sql):
        mapping.setdefault(int(number), (f"{schema}.{table}", column, False))
    update = _UPDATE.match(sql)
    if update:
        schema, table, assignments = update.groups()
        for name, number in re.findall(r"(\w+)=\$(\d+)", assignments):
            mapping.setdefault(int(number), (f"{schema}.{table}", name, True))
    insert = _INSERT.match(sql)
    if insert:
        schema, table, columns, values = insert.groups()
        names = [c.strip().strip('"') for c in columns.split(",")]
        placeholders = [v.strip() for v in re.split(r",\s*(?![^(]*\))", values)]
        for name, value in zip(names, placeholders, strict=False):
            number = re.match(r"\$(\d+)", value)
            if number:
                mapping.setdefault(int(number.group(1)), (f"{schema}.{table}", name, True))
    return mapping


@dataclass
class Replay:
    summary: str
    origin: str
    access: str
    p50_ms: float
    p99_ms: float
    runs: int
    verdict: str
    failed: bool


async def _in_rollback(connection: asyncpg.Connection, sql: str, values: list[Any]) -> Any:
    """Runs one statement in a transaction that is rolled back (writes leave no trace)."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        rows = await connection.fetch(sql, *values)
        return rows[0][0] if rows and sql.startswith("EXPLAIN") else rows
    finally:
        await transaction.rollback()


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def access_path(
    plan: dict[str, Any], sizes: dict[str, int], schema: str = ""
) -> tuple[str, list[str]]:
    """A short description of how the plan reads each table, and the large tables it
    scans sequentially."""
    parts: list[str] = []
    scans: list[str] = []
    for node in _plan_nodes(plan):
        relation = node.get("Relation Name")
        index = node.get("Index Name")
        if relation is None and index is None:
            continue
        # Plain EXPLAIN names no schema: a statement runs in its service's schema.
        qualified = f"{node.get('Schema') or schema}.{relation}"
        kind = node["Node Type"]
        if kind == "ModifyTable":
            kind = node.get("Operation", kind)
        text = f"{kind} {index}" if index else f"{kind} {qualified}"
        if text not in parts:
            parts.append(text)
        if kind == "Seq Scan" and sizes.get(qualified, 0) > LARGE_TABLE_ROWS:
            scans.append(qualified)
    return (" + ".join(parts) or "no table"), scans


class Sampler:
    """Values of seeded rows, per table and set of columns, drawn at random."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._pools: dict[tuple[str, tuple[str, ...]], list[asyncpg.Record]] = {}

    async def oldest(self, table: str, column: str) -> Any:
        key = (table, (f"min:{column}",))
        if key not in self._pools:
            value = await self._connection.fetchval(f'SELECT min("{column}") FROM {table}')  # noqa: S608
            self._pools[key] = [value]
        return self._pools[key][0]

    async def rows(self, table: str, columns: tuple[str, ...]) -> list[asyncpg.Record]:
        key = (table, columns)
        if key not in self._pools:
            selected = ", ".join(f'"{c}"' for c in columns)
            pool = await self._connection.fetch(
                f"SELECT {selected} FROM {table} TABLESAMPLE SYSTEM (1) LIMIT 500"  # noqa: S608
            )
            if len(pool) < 50:
                pool = await self._connection.fetch(
                    f"SELECT {selected} FROM {table} ORDER BY random() LIMIT 500"  # noqa: S608
                )
            self._pools[key] = list(pool)
        return self._pools[key]


def _summary(sql: str) -> str:
    text = re.sub(r"SELECT .*? FROM", "SELECT … FROM", sql, count=1)
    return text if len(text) <= 140 else text[:137] + "…"


async def replay_statement(
    connection: asyncpg.Connection,
    sampler: Sampler,
    entry: dict[str, Any],
    sizes: dict[str, int],
    primary_keys: dict[str, tuple[str, ...]],
    uuid_columns: set[str],
    references: dict[str, str],
    repeats: int,
) -> Replay:
    sql = entry["sql"]
    recorded = entry["params"]
    base = [hot_statements.decode(v) for v in recorded] if isinstance(recorded, list) else []
    mapping = parameter_columns(sql)
    cutoffs = sweep_cutoffs(sql)
    by_table: dict[str, list[tuple[int, str, bool]]] = {}
    for number, (table, column, inserted) in mapping.items():
        by_table.setdefault(table, []).append((number, column, inserted))

    async def parameters() -> list[Any]:
        values = list(base)

        def put(number: int, value: Any) -> None:
            if 0 < number <= len(values):
                recorded_value = values[number - 1]
                # `= ANY ($n::T[])`: the drawn value, as many times as the sample held.
                if isinstance(recorded_value, list) and not isinstance(value, list):
                    value = [value] * max(1, len(recorded_value))
                values[number - 1] = value

        for table, items in by_table.items():
            compared = []
            for number, column, inserted in items:
                qualified = f"{table}.{column}"
                if not inserted and number in cutoffs:
                    # A sweep's cutoff: in steady state the sweeper removes what aged
                    # since its last run, so the cutoff sits at the oldest row.
                    put(number, await sampler.oldest(table, column))
                elif not inserted:
                    compared.append((number, column))
                elif qualified in references:
                    target = references[qualified]
                    key = primary_keys.get(target, ())
                    if len(key) == 1 and sizes.get(target, 0) > 0:
                        pool = await sampler.rows(target, key)
                        if pool:
                            put(number, random.choice(pool)[key[0]])
                elif column in primary_keys.get(table, ()) and qualified in uuid_columns:
                    put(number, uuid.uuid4())
            if not compared or sizes.get(table, 0) == 0:
                continue
            columns = tuple(sorted({c for _, c in compared}))
            pool = await sampler.rows(table, columns)
            if pool:
                row = random.choice(pool)
                for number, column in compared:
                    put(number, row[column])
        return values

    server: list[float] = []
    paths: dict[str, int] = {}
    scans: set[str] = set()
    error, refused = "", 0
    rounds: list[list[float]] = []
    values: list[Any] = list(base)
    deadline = time.monotonic() + STATEMENT_BUDGET_SECONDS
    try:
        for run in range(repeats * ROUNDS):
            if time.monotonic() > deadline and rounds and rounds[0]:
                break  # a slow statement: its verdict is clear, the rest of the runs waits
            if run % repeats == 0:
                server = []
                rounds.append(server)
            for _attempt in range(5):
                values = await parameters()
                try:
                    analysed = await _in_rollback(
                        connection,
                        f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY ON, FORMAT JSON) {sql}",
                        values,
                    )
                except asyncpg.IntegrityConstraintViolationError:
                    refused += 1  # drawn values the statement's constraints refuse: redraw
                    continue
                document = json.loads(analysed) if isinstance(analysed, str) else analysed
                server.append(document[0]["Planning Time"] + document[0]["Execution Time"])
                path, large = access_path(document[0]["Plan"], sizes, entry.get("schema", ""))
                paths[path] = paths.get(path, 0) + 1
                scans.update(large)
                break
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, TypeError) as failure:
        error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:120]}"
    measured = [r for r in rounds if r]
    untimed = ""
    if not measured and not error and refused:
        # Every drawn row collides with a unique key the statement writes (a recorded
        # position such as `seq`): the plan is still checked, the timing cannot be.
        try:
            plan = await _in_rollback(connection, f"EXPLAIN (FORMAT JSON) {sql}", values)
            document = json.loads(plan) if isinstance(plan, str) else plan
            path, large = access_path(document[0]["Plan"], sizes, entry.get("schema", ""))
            paths[path] = 1
            scans.update(large)
            untimed = "plan only: the drawn rows collide with a unique key it writes"
        except asyncpg.PostgresError as failure:
            error = f"{type(failure).__name__}: {str(failure).splitlines()[0][:120]}"
    if "canceling statement due to statement timeout" in error:
        error = f"over the {STATEMENT_TIMEOUT_MS} ms statement timeout"
    access = max(paths, key=lambda p: paths[p]) if paths else ""
    server = min(measured, key=lambda r: _percentile(r, 99)) if measured else []
    p50 = statistics.median(server) if server else 0.0
    p99 = _percentile(server, 99) if server else 0.0
    problems = []
    if error:
        problems.append(f"error ({error})")
    if scans:
        problems.append("seq scan of " + ", ".join(sorted(scans)))
    batch = is_batch(entry["origin"])
    if server and p99 > P99_LIMIT_MS and not batch:
        problems.append(f"p99 over {P99_LIMIT_MS} ms")
    if re.search(r"\bOFFSET\b", sql):
        problems.append("OFFSET pagination")
    return Replay(
        summary=_summary(sql),
        origin=entry["origin"],
        access=access or "-",
        p50_ms=round(p50, 3),
        p99_ms=round(p99, 3),
        runs=sum(len(r) for r in rounds),
        verdict="; ".join(problems)
        or (f"ok ({untimed})" if untimed else "ok (background)" if batch else "ok"),
        failed=bool(problems),
    )


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
    return ordered[index]


async def replay_all(
    admin_url: str,
    statements: list[dict[str, Any]],
    tables: list[dbdoc.Table],
    sizes: dict[str, int],
    repeats: int,
    log: Any,
) -> list[Replay]:
    primary_keys = {t.qualified: t.primary_key for t in tables}
    uuid_columns = {
        f"{t.qualified}.{c.name}" for t in tables for c in t.columns if c.type == "uuid"
    }
    references = {
        f"{table.qualified}.{column}": target
        for table in tables
        for column, target in _references(table).items()
    }
    connection = await asyncpg.connect(dbdoc._dsn(admin_url))
    results = []
    try:
        sampler = Sampler(connection)
        await connection.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_MS}ms'")
        for entry in statements:
            if entry.get("schema") and entry["schema"] not in {t.schema for t in tables}:
                continue
            if entry["sql"].upper().startswith(hot_statements.SKIPPED_PREFIXES):
                continue
            result = await replay_statement(
                connection, sampler, entry, sizes, primary_keys, uuid_columns, references, repeats
            )
            log(
                f"{result.p50_ms:7.2f} {result.p99_ms:7.2f}  {result.verdict:<10.60}  "
                f"{result.access[:70]:<70}  {entry['origin']}"
            )
            results.append(result)
    finally:
        await connection.close()
    return results


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){memory}, {platform.system()} {platform.release()}"


async def _server_version(admin_url: str) -> str:
    connection = await asyncpg.connect(dbdoc._dsn(admin_url))
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def run(
    admin_url: str,
    scale: float,
    overrides: dict[str, int],
    repeats: int,
    statements_file: pathlib.Path,
    log: Any,
    seed_rows: bool = True,
) -> dict[str, Any]:
    provision(admin_url)
    tables = dbdoc.read_catalog(admin_url)
    counts = row_counts(tables, scale, overrides)
    started = time.monotonic()
    seeded = asyncio.run(seed(admin_url, tables, counts, log)) if seed_rows else []
    seed_seconds = time.monotonic() - started
    measured = asyncio.run(measure_tables(admin_url, tables))
    sizes = {m["table"]: m["rows"] for m in measured}
    statements = json.loads(statements_file.read_text())["statements"]
    log(f"replaying {len(statements)} statements, {repeats} runs each")
    log(f"{'p50 ms':>7} {'p99 ms':>7}  verdict     access path")
    replays = asyncio.run(replay_all(admin_url, statements, tables, sizes, repeats, log))
    failures = [r for r in replays if r.failed] + [s for s in seeded if s.error]
    return {
        "machine": machine(),
        "postgres": asyncio.run(_server_version(admin_url)),
        "finished_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "scale": scale,
        "seed": {"users": max(sizes.get("identity.users", 0), 1), "months": MONTHS},
        "seed_seconds": round(seed_seconds, 1),
        "seed_errors": {s.table: s.error for s in seeded if s.error},
        "repeats": repeats,
        "p99_limit_ms": P99_LIMIT_MS,
        "large_table_rows": LARGE_TABLE_ROWS,
        "tables": measured,
        "statements": [r.__dict__ for r in replays],
        "passed": not failures,
    }


def _parse_rows(values: list[str]) -> dict[str, int]:
    rows = {}
    for value in values:
        table, _, count = value.partition("=")
        rows[table] = int(count.replace("_", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("PIXELSHOP_BENCH_DB_SCALE") or DEFAULT_SCALE),
        help="multiplies every default row count (env PIXELSHOP_BENCH_DB_SCALE)",
    )
    parser.add_argument(
        "--rows", action="append", default=[], metavar="SCHEMA.TABLE=N", help="override a count"
    )
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--statements", type=pathlib.Path, default=hot_statements.DEFAULT_FILE)
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help=f"where the results go (default: {RESULTS.relative_to(ROOT)} at the default "
        f"scale, {FULL_RESULTS.relative_to(ROOT)} at scale 1, else nowhere)",
    )
    parser.add_argument("--database-url", help="an admin URL instead of a throwaway cluster")
    parser.add_argument(
        "--no-seed", action="store_true", help="replay only (a --database-url seeded before)"
    )
    options = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    overrides = _parse_rows(options.rows)
    started = time.monotonic()
    if options.database_url:
        report = run(
            options.database_url,
            options.scale,
            overrides,
            options.repeats,
            options.statements,
            log,
            seed_rows=not options.no_seed,
        )
    else:
        with (
            tempfile.TemporaryDirectory(prefix="pixelshop-bench-db-") as folder,
            throwaway_cluster(pathlib.Path(folder) / "cluster") as cluster,
        ):
            report = run(
                cluster.admin_url("pixelshop_bench"),
                options.scale,
                overrides,
                options.repeats,
                options.statements,
                log,
            )
    report["total_seconds"] = round(time.monotonic() - started, 1)
    output = options.output
    if output is None and not overrides and options.repeats == REPEATS:
        output = {DEFAULT_SCALE: RESULTS, 1.0: FULL_RESULTS}.get(options.scale)
    if output is not None:
        output.write_text(json.dumps(report, indent=1) + "\n")
        log(f"wrote {output}")
    failed = [s for s in report["statements"] if s["failed"]]
    log(
        f"{len(report['statements'])} statements, {len(failed)} failing; seeding "
        f"{report['seed_seconds']:.0f} s, total {report['total_seconds']:.0f} s"
    )
    for name, error in report["seed_errors"].items():
        log(f"seeding {name} failed: {error}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
