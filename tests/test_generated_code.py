"""Generated code is committed and must be exactly what `make proto` produces."""

from __future__ import annotations

import filecmp
import pathlib

from tools import genproto


def _tree(root: pathlib.Path) -> set[pathlib.Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_regenerating_changes_nothing(tmp_path: pathlib.Path) -> None:
    fresh = tmp_path / "gen"
    genproto.generate(fresh)
    committed = genproto.GEN_ROOT
    assert _tree(fresh) == _tree(committed), "run `make proto` and commit the result"
    changed = [
        str(path)
        for path in sorted(_tree(fresh))
        if not filecmp.cmp(fresh / path, committed / path, shallow=False)
    ]
    assert not changed, f"generated code is stale, run `make proto`: {changed}"


def test_descriptor_copies_match() -> None:
    source = genproto.GEN_ROOT / genproto.DESCRIPTOR_NAME
    for copy in genproto.DESCRIPTOR_COPIES:
        assert copy.read_bytes() == source.read_bytes(), f"{copy} is stale: run `make proto`"
