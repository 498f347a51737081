"""The embedded Postgres explains itself when it cannot start."""

from __future__ import annotations

import pytest

from tools import pgcluster


def test_missing_binaries_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELSHOP_PG_BIN", "/nonexistent")
    monkeypatch.setattr(pgcluster.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(pgcluster.shutil, "which", lambda name: None)
    with pytest.raises(pgcluster.PostgresUnavailable) as error:
        pgcluster.find_binaries()
    message = str(error.value)
    assert "apt-get install postgresql" in message
    assert "PIXELSHOP_DATABASE_URL" in message


def test_free_ports_are_all_different() -> None:
    from tools.pgcluster import free_ports

    assert len(set(free_ports(50))) == 50
