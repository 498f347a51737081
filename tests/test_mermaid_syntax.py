"""The Mermaid blocks in docs/database.md parse as the erDiagram subset dbdoc emits.

A small grammar check (Mermaid's own parser needs a browser): the header, entity blocks
with `type name [PK|FK|UK, ...] ["comment"]` attributes, and relationship lines
`A <left>--<right> B : label` (or `..` for a non-identifying, dotted line) with Mermaid's
crow's-foot cardinalities. Every entity a relationship names must be declared or at least
be a valid entity name; braces must balance.
"""

from __future__ import annotations

import re

import pytest

from tools import dbdoc
from tools.provision import built_services

NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
TYPE = r"[A-Za-z_][A-Za-z0-9_()\[\]-]*"
LEFT = r"(?:\|o|\|\||\}o|\}\|)"
RIGHT = r"(?:o\||\|\||o\{|\|\{)"
ENTITY_OPEN = re.compile(rf"^({NAME})\s*\{{$")
ATTRIBUTE = re.compile(
    rf'^{TYPE}\s+{NAME}(?:\s+(?:PK|FK|UK)(?:\s*,\s*(?:PK|FK|UK))*)?(?:\s+"[^"]*")?$'
)
RELATION = re.compile(rf'^({NAME})\s+{LEFT}(?:--|\.\.){RIGHT}\s+({NAME})\s*:\s*(?:"[^"]*"|{NAME})$')


class MermaidError(ValueError):
    pass


def check_er_diagram(block: str) -> tuple[set[str], int]:
    """Raises MermaidError for a line outside the subset; answers entities and relations."""
    lines = [line.strip() for line in block.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("%%")]
    if not lines or lines[0] != "erDiagram":
        raise MermaidError("a diagram starts with `erDiagram`")
    entities: set[str] = set()
    relations = 0
    inside: str | None = None
    for number, line in enumerate(lines[1:], 2):
        if inside is not None:
            if line == "}":
                inside = None
            elif not ATTRIBUTE.match(line):
                raise MermaidError(f"line {number}: not an attribute of {inside}: {line!r}")
            continue
        opened = ENTITY_OPEN.match(line)
        if opened:
            inside = opened.group(1)
            if inside in entities:
                raise MermaidError(f"line {number}: {inside} declared twice")
            entities.add(inside)
            continue
        if RELATION.match(line):
            relations += 1
            continue
        raise MermaidError(f"line {number}: not an entity or relationship: {line!r}")
    if inside is not None:
        raise MermaidError(f"entity {inside} is never closed")
    return entities, relations


def mermaid_blocks(markdown: str) -> list[str]:
    return re.findall(r"```mermaid\n(.*?)```", markdown, flags=re.DOTALL)


def test_every_mermaid_block_in_the_database_doc_parses() -> None:
    blocks = mermaid_blocks(dbdoc.OUTPUT.read_text())
    # One diagram per schema, plus the cross-service one.
    assert len(blocks) == len(built_services()) + 1
    for block in blocks:
        check_er_diagram(block)


def test_the_relations_name_declared_entities_in_schema_diagrams() -> None:
    for block in mermaid_blocks(dbdoc.OUTPUT.read_text()):
        entities, _ = check_er_diagram(block)
        if not entities:
            continue  # the cross-service diagram declares none (entities by use)
        for line in block.splitlines():
            match = RELATION.match(line.strip())
            if match:
                assert {match.group(1), match.group(2)} <= entities, line


@pytest.mark.parametrize(
    "broken",
    [
        "graph TD\n  a --> b",
        "erDiagram\n  users {\n    uuid id PK\n",
        "erDiagram\n  users {\n    timestamp with time zone created_at\n  }",
        "erDiagram\n  users ||--x{ sessions : has",
        "erDiagram\n  users ||--o{ sessions has",
        "erDiagram\n  identity.users ||--o{ sessions : has",
        'erDiagram\n  users {\n    uuid id PK "a "quoted" word"\n  }',
        "erDiagram\n  users {\n    uuid id PK\n  }\n  users {\n    uuid id\n  }",
    ],
)
def test_the_checker_rejects_what_mermaid_rejects(broken: str) -> None:
    with pytest.raises(MermaidError):
        check_er_diagram(broken)


def test_the_checker_accepts_every_cardinality_dbdoc_emits() -> None:
    text = "\n".join(
        ["erDiagram", "    a {", "        varchar(255) key UK", "        uuid id PK, FK", "    }"]
        + [f'    a {left}--{right} a : "x"' for left in ("||", "|o") for right in ("o{", "o|")]
        + ['    a |o..o{ b : "owner_id"']
    )
    entities, relations = check_er_diagram(text)
    assert entities == {"a"}
    assert relations == 5


def test_dbdoc_types_are_single_mermaid_words() -> None:
    for sql_type in ("timestamp with time zone", "character varying(255)", "text[]", "xid8"):
        assert re.fullmatch(TYPE, dbdoc.mermaid_type(sql_type)), sql_type
