"""docs/database.md is generated from the migrated database and must not drift."""

from __future__ import annotations

from tools import dbdoc


def test_database_doc_matches_the_migrations(migrated_db: str) -> None:
    expected = dbdoc.render(migrated_db)
    actual = dbdoc.OUTPUT.read_text() if dbdoc.OUTPUT.exists() else ""
    assert actual == expected, "docs/database.md is stale: run `make docs` and commit it"
