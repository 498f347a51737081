"""Indexes for PurgeUser's project list (every row by owner) and the sweeper's reservations.

`owned_project_ids` reads all of an owner's projects, live and deleted, so the partial
listing index (live rows only) cannot serve it; `unsettled_projects` finds projects whose
quota reservation is not yet committed (`quota_reservation_id IS NOT NULL`), with
`ix_projects_awaiting_purge` serving the other arm of its OR.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "projects"


def upgrade() -> None:
    op.create_index("ix_projects_owner_id", "projects", ["owner_id"], unique=False, schema=SCHEMA)
    op.create_index(
        "ix_projects_quota_reservation_id",
        "projects",
        ["quota_reservation_id"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text("quota_reservation_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_projects_quota_reservation_id", table_name="projects", schema=SCHEMA)
    op.drop_index("ix_projects_owner_id", table_name="projects", schema=SCHEMA)
