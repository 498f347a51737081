"""Cursor for following identity's outbox (a deleted user's presets and likes are purged).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "presets"


def upgrade() -> None:
    op.create_table(
        "event_cursors",
        sa.Column("source", sa.Text(), nullable=False, comment="whose outbox, e.g. identity"),
        sa.Column("sequence", sa.BigInteger(), nullable=False, comment="last event handled"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_event_cursors")),
        schema=SCHEMA,
        comment="How far this service has followed another service's outbox.",
    )


def downgrade() -> None:
    op.drop_table("event_cursors", schema=SCHEMA)
