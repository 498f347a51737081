"""An index of the deleted projects whose unit is not yet credited back, for the sweeper.

`unsettled_projects` finds deleted projects with `credited_at IS NULL` (the second arm of
its OR). `ix_projects_awaiting_purge` holds every deleted project, credited or not, and
the sweeper credits them within a sweep, so almost all of what that index returns was
filtered away: on the scale check's seed, 6 ms at p50 for a handful of rows. This partial
index holds only the uncredited ones (a few rows at any time).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "projects"


def upgrade() -> None:
    op.create_index(
        "ix_projects_uncredited",
        "projects",
        ["deleted_at"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NOT NULL AND credited_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_projects_uncredited", table_name="projects", schema=SCHEMA)
