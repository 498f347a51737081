"""`make bench-db` at a tiny scale: the seed is consistent, the replay finds what it must.

The defaults (millions of rows) run in `make bench-db`; here a few thousand rows show that
every migrated table can be seeded from the catalog, that the history tree is a tree,
and that the verdicts fail for a sequential scan of a large table, an error, and OFFSET.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tools import bench_db, dbdoc
from tools.provision import built_services


@pytest.fixture(scope="module")
def seeded(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A database of its own, seeded at 1/2000 of the defaults and replayed."""
    url = make_url(pg_admin_url)
    own = url.set(database=f"{url.database}_bench").render_as_string(hide_password=False)
    statements = tmp_path_factory.mktemp("bench") / "statements.json"
    probes = [
        ("SELECT id FROM identity.users WHERE identity.users.id = $1::UUID", "index"),
        ("SELECT id FROM identity.users WHERE display_name = $1::VARCHAR", "seq"),
        ("SELECT id FROM identity.users ORDER BY created_at LIMIT 5 OFFSET 5", "offset"),
        ("SELECT no_such_column FROM identity.users", "error"),
    ]
    params: list[list[Any]] = [[{"uuid": "00000000-0000-4000-8000-000000000000"}], ["x"], [], []]
    document = {
        "statements": [
            {"key": sql, "sql": sql, "params": p, "origin": f"probe:{kind}", "schema": "identity"}
            for (sql, kind), p in zip(probes, params, strict=True)
        ]
    }
    statements.write_text(json.dumps(document))
    logged: list[str] = []
    report = bench_db.run(own, 0.0005, {}, 5, statements, logged.append)
    return {"url": own, "report": report, "log": logged, "statements": statements}


def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(dbdoc._dsn(url))
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(run())


def test_every_table_with_a_count_is_seeded_without_errors(seeded: dict[str, Any]) -> None:
    report = seeded["report"]
    assert report["seed_errors"] == {}
    rows = {t["table"]: t["rows"] for t in report["tables"]}
    for table, count in bench_db.SCALE.items():
        if table in rows and table.split(".")[0] in built_services():
            assert rows[table] >= max(int(count * 0.0005), 1) * 0.9, table


def test_foreign_keys_hold_after_seeding(seeded: dict[str, Any]) -> None:
    # Small tables get their foreign keys validated for real; here every one is small.
    invalid = _fetch(
        seeded["url"],
        "SELECT conrelid::regclass::text AS t, conname FROM pg_constraint "
        "WHERE contype = 'f' AND NOT convalidated",
    )
    assert invalid == []


@pytest.mark.skipif("projects" not in built_services(), reason="projects is not built yet")
def test_the_seeded_history_is_a_branched_tree(seeded: dict[str, Any]) -> None:
    url = seeded["url"]
    orphans = _fetch(
        url,
        "SELECT e.id FROM projects.edits e WHERE e.parent_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM projects.edits p WHERE p.id = e.parent_id "
        "AND p.project_id = e.project_id AND p.depth = e.depth - 1)",
    )
    assert orphans == []
    branches = _fetch(
        url,
        "SELECT count(*) AS n FROM projects.edits WHERE branch_path IS NOT NULL "
        "AND jsonb_array_length(branch_path) > 0",
    )
    assert branches[0]["n"] > 0
    heads = _fetch(
        url,
        "SELECT p.id FROM projects.projects p WHERE p.head_edit_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM projects.edits e WHERE e.id = p.head_edit_id AND e.project_id = p.id)",
    )
    assert heads == []


def test_the_verdicts(seeded: dict[str, Any]) -> None:
    verdicts = {s["origin"]: s for s in seeded["report"]["statements"]}
    assert verdicts["probe:index"]["verdict"] == "ok"
    assert "Index" in verdicts["probe:index"]["access"]
    assert verdicts["probe:error"]["failed"]
    assert "error" in verdicts["probe:error"]["verdict"]
    assert "OFFSET" in verdicts["probe:offset"]["verdict"]
    # 500 users is not a large table: the scan is reported, and not held against it.
    assert verdicts["probe:seq"]["access"] == "Seq Scan identity.users"
    assert not verdicts["probe:seq"]["failed"]
    assert not seeded["report"]["passed"]


def test_a_sequential_scan_of_a_large_table_fails() -> None:
    # As plain EXPLAIN prints it: no schema, the statement's own is meant.
    plan = {"Node Type": "Limit", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "edits"}]}
    large = {"projects.edits": bench_db.LARGE_TABLE_ROWS + 1}
    path, scans = bench_db.access_path(plan, large, "projects")
    assert path == "Seq Scan projects.edits"
    assert scans == ["projects.edits"]
    assert bench_db.access_path(plan, {"projects.edits": 10}, "projects")[1] == []


def test_a_seeded_large_table_read_without_its_index_is_caught(
    seeded: dict[str, Any], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same seeded users, replayed with a limit below their count: reading them by an
    # unindexed column now fails the run, while the read by primary key still passes.
    users = next(t["rows"] for t in seeded["report"]["tables"] if t["table"] == "identity.users")
    monkeypatch.setattr(bench_db, "LARGE_TABLE_ROWS", users - 1)
    probes = [
        s
        for s in json.loads(seeded["statements"].read_text())["statements"]
        if s["origin"] in ("probe:seq", "probe:index")
    ]
    statements = tmp_path / "statements.json"
    statements.write_text(json.dumps({"statements": probes}))
    report = bench_db.run(seeded["url"], 0.0005, {}, 5, statements, lambda _: None, False)
    verdicts = {s["origin"]: s for s in report["statements"]}
    assert verdicts["probe:seq"]["failed"]
    assert "seq scan of identity.users" in verdicts["probe:seq"]["verdict"]
    assert not verdicts["probe:index"]["failed"]
    assert not report["passed"]


def test_parameters_are_mapped_to_the_columns_they_are_compared_with() -> None:
    sql = (
        "SELECT presets.presets.id FROM presets.presets WHERE presets.presets.owner_id = "
        "$1::UUID AND (presets.presets.created_at, presets.presets.id) < ($2, $3)"
    )
    assert bench_db.parameter_columns(sql)[1] == ("presets.presets", "owner_id", False)
    insert = (
        "INSERT INTO presets.preset_likes (preset_id, user_id) VALUES ($1::UUID, $2::UUID) "
        "ON CONFLICT (preset_id, user_id) DO NOTHING"
    )
    assert bench_db.parameter_columns(insert) == {
        1: ("presets.preset_likes", "preset_id", True),
        2: ("presets.preset_likes", "user_id", True),
    }


def test_the_recorded_statements_file_is_replayable() -> None:
    path = pathlib.Path(bench_db.hot_statements.DEFAULT_FILE)
    if not path.exists():
        pytest.fail("docs/hot-statements.json is missing: run python -m tools.hot_statements")
    entries = json.loads(path.read_text())["statements"]
    assert entries, "no statement recorded"
    for entry in entries:
        assert entry["origin"].startswith(("services/", "runtime/")), entry["origin"]
        assert "tests" not in entry["origin"].split("/")
