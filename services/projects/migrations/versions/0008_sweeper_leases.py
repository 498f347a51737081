"""The sweeper's own lease clocks: `edits.settle_after` and `projects.sweep_after`.

The sweeper used to "claim" unsettled edits by rewriting `finished_at` (which clients see
as the edit's finishTime) and claimed projects with row locks its transaction released
at once. A claim now moves the row's clock to the end of a lease; a row is due only once
its clock has passed. Both columns default to now(): existing rows get the migration's
time and new rows their insert time, so every row is due as before (no backfill), rows
inserted by a replica still running the old code included.
`ix_edits_unsettled` is keyed by the new clock: the claim reads due rows in its order,
and rows under someone's lease sort after them. The projects' claims stay on their
partial indexes (a handful of rows each); the clock is a filter there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "projects"
UNSETTLED = "status <> 'pending' AND settled_at IS NULL"


def upgrade() -> None:
    # A stable default (now()) is evaluated once: no table rewrite.
    op.add_column(
        "edits",
        sa.Column(
            "settle_after",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="the sweeper settles the edit's reservations no earlier than this: its "
            "insert, then the end of each sweeper claim's lease (never shown to clients)",
        ),
        schema=SCHEMA,
    )
    op.add_column(
        "projects",
        sa.Column(
            "sweep_after",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="the sweeper settles the project's unit or purges it no earlier than "
            "this: its insert, then the end of each sweeper claim's lease",
        ),
        schema=SCHEMA,
    )
    op.drop_index(
        "ix_edits_unsettled",
        table_name="edits",
        schema=SCHEMA,
        postgresql_where=sa.text(UNSETTLED),
    )
    op.create_index(
        "ix_edits_unsettled",
        "edits",
        ["settle_after"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text(UNSETTLED),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_edits_unsettled",
        table_name="edits",
        schema=SCHEMA,
        postgresql_where=sa.text(UNSETTLED),
    )
    op.create_index(
        "ix_edits_unsettled",
        "edits",
        ["finished_at"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text(UNSETTLED),
    )
    op.drop_column("projects", "sweep_after", schema=SCHEMA)
    op.drop_column("edits", "settle_after", schema=SCHEMA)
