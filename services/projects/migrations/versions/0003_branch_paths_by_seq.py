"""Stored branch paths name each branch by the seq of its first edit, not its UUID
(ADR 0012: a long path then parses in microseconds).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "projects"


NEW_COMMENT = (
    "on a branch's first edit: [[branch's first seq, deepest depth], ...] from the original"
)
OLD_COMMENT = "on a branch's first edit: [[branch, deepest depth], ...] from the original"


def _rewrite(key_from: str, key_to: str, cast: str) -> None:
    # Column names and casts are constants of this file, never input.
    op.execute(
        sa.text(
            f"""
            UPDATE {SCHEMA}.edits AS e
            SET branch_path = (
                SELECT coalesce(
                    jsonb_agg(jsonb_build_array(s.{key_to}, t.pair -> 1) ORDER BY t.ord),
                    '[]'::jsonb
                )
                FROM jsonb_array_elements(e.branch_path) WITH ORDINALITY AS t(pair, ord)
                JOIN {SCHEMA}.edits AS s
                  ON s.project_id = e.project_id AND s.{key_from} = (t.pair ->> 0)::{cast}
            )
            WHERE e.branch_path IS NOT NULL AND jsonb_array_length(e.branch_path) > 0
            """  # noqa: S608
        )
    )


def upgrade() -> None:
    _rewrite("id", "seq", "uuid")
    op.alter_column(
        "edits",
        "branch_path",
        comment=NEW_COMMENT,
        existing_comment=OLD_COMMENT,
        existing_type=sa.dialects.postgresql.JSONB(),
        existing_nullable=True,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.alter_column(
        "edits",
        "branch_path",
        comment=OLD_COMMENT,
        existing_comment=NEW_COMMENT,
        existing_type=sa.dialects.postgresql.JSONB(),
        existing_nullable=True,
        schema=SCHEMA,
    )
    _rewrite("seq", "id", "integer")
