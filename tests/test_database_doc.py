"""docs/database.md is generated from the migrated database and must not drift; the
catalog it is generated from must explain itself (comments, index purposes, references)."""

from __future__ import annotations

import json

import pytest

from tools import dbdoc
from tools.provision import built_services


@pytest.fixture(scope="module")
def catalog(migrated_db: str) -> list[dbdoc.Table]:
    return dbdoc.read_catalog(migrated_db)


def test_database_doc_matches_the_migrations(migrated_db: str) -> None:
    expected = dbdoc.render(migrated_db)
    actual = dbdoc.OUTPUT.read_text() if dbdoc.OUTPUT.exists() else ""
    assert actual == expected, "docs/database.md is stale: run `make docs` and commit it"


def test_the_doc_covers_every_built_schema_and_table(catalog: list[dbdoc.Table]) -> None:
    text = dbdoc.OUTPUT.read_text()
    assert {t.schema for t in catalog} == set(built_services())
    for table in catalog:
        assert f"#### `{table.qualified}`" in text, table.qualified


def test_every_table_states_its_purpose(catalog: list[dbdoc.Table]) -> None:
    assert dbdoc.tables_without_comment(catalog) == [], (
        "add a comment= to these tables (model and migration)"
    )


def test_every_index_says_which_statement_it_serves(catalog: list[dbdoc.Table]) -> None:
    assert dbdoc.indexes_without_query(catalog) == [], "add them to INDEX_QUERIES in dbdoc"


def test_no_index_purpose_is_left_for_an_index_that_is_gone(
    catalog: list[dbdoc.Table],
) -> None:
    existing = {f"{t.schema}.{name}" for t in catalog for name, _, _ in t.indexes}
    built = set(built_services())
    stale = [name for name in dbdoc.INDEX_QUERIES if name.split(".")[0] in built]
    assert [name for name in stale if name not in existing] == []


def test_every_uuid_column_is_a_key_or_a_listed_reference(catalog: list[dbdoc.Table]) -> None:
    assert dbdoc.unaccounted_uuid_columns(catalog) == [], (
        "a UUID naming another row without a foreign key: list it in "
        "CROSS_SERVICE_REFERENCES (or NOT_REFERENCES) in tools/dbdoc.py"
    )


def test_every_time_is_a_timestamptz(catalog: list[dbdoc.Table]) -> None:
    assert dbdoc.times_without_time_zone(catalog) == []


def test_the_checks_find_what_they_look_for() -> None:
    # The checks above must be able to fail: a table as a careless migration leaves it.
    careless = dbdoc.Table("projects", "careless", "")
    careless.columns = [
        dbdoc.Column("id", "uuid", True, "", ""),
        dbdoc.Column("owner_ref", "uuid", True, "", ""),
        dbdoc.Column("parent_id", "uuid", False, "", ""),
        dbdoc.Column("seen", "timestamp without time zone", False, "", ""),
    ]
    careless.primary_key = ("id",)
    careless.indexes = [
        ("pk_careless", "CREATE UNIQUE INDEX pk_careless ON projects.careless (id)", True),
        ("ix_careless_seen", "CREATE INDEX ix_careless_seen ON projects.careless (seen)", False),
    ]
    careless.foreign_keys = [
        dbdoc.ForeignKey(
            "fk_careless_parent_id", ("parent_id",), "projects.careless", ("id",), "CASCADE", False
        )
    ]
    tables = [careless]
    assert dbdoc.tables_without_comment(tables) == ["projects.careless"]
    assert dbdoc.indexes_without_query(tables) == ["projects.ix_careless_seen"]
    assert dbdoc.unaccounted_uuid_columns(tables) == ["projects.careless.owner_ref"]
    assert dbdoc.times_without_time_zone(tables) == ["projects.careless.seen"]
    assert dbdoc.foreign_keys_without_index(tables) == ["projects.careless.fk_careless_parent_id"]
    assert "projects.careless.seen" in dbdoc.columns_without_comment(tables)


def test_the_relationships_are_named_in_words(catalog: list[dbdoc.Table]) -> None:
    sentences = "\n".join(dbdoc.relationship_sentences(catalog))
    if "presets" in built_services():
        assert (
            "**many-to-many** between `presets.presets` and `identity.users` through "
            "`presets.preset_likes`" in sentences
        )
    if "identity" in built_services():
        assert "**one-to-many**: `identity.users` → `identity.sessions`" in sentences


def test_the_bench_results_in_the_doc_come_from_the_committed_run() -> None:
    assert dbdoc.BENCH_RESULTS.exists(), "run `make bench-db` and commit docs/bench-db.json"
    results = json.loads(dbdoc.BENCH_RESULTS.read_text())
    text = dbdoc.OUTPUT.read_text()
    assert results["machine"] in text
    assert len(results["statements"]) > 0
