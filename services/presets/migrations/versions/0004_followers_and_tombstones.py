"""Following identity's outbox by (transaction id, sequence), parked events, and the
deleted-user tombstones that refuse a deleted account and drive its purge (ADR 0015).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "presets"


def upgrade() -> None:
    # Existing cursors count events written before identity's 0002, which have xact_id 0.
    op.add_column(
        "event_cursors",
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="with sequence: the last position handled (the writing transaction)",
        ),
        schema=SCHEMA,
    )
    op.alter_column(
        "event_cursors",
        "sequence",
        existing_type=sa.BigInteger(),
        existing_nullable=False,
        comment="with xact_id: the last position handled",
        existing_comment="last event handled",
        schema=SCHEMA,
    )
    op.create_table(
        "parked_events",
        sa.Column("source", sa.Text(), nullable=False, comment="whose outbox, e.g. identity"),
        sa.Column("xact_id", sa.BigInteger(), nullable=False, comment="the event's position"),
        sa.Column("sequence", sa.BigInteger(), nullable=False, comment="the event's position"),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="how often the handler failed"),
        sa.Column(
            "last_error",
            sa.Text(),
            nullable=False,
            comment="the last failure's exception type",
        ),
        sa.Column(
            "parked_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("source", "xact_id", "sequence", name=op.f("pk_parked_events")),
        schema=SCHEMA,
        comment="Events this service's handler failed on repeatedly; the cursor moved past them.",
    )
    op.create_table(
        "deleted_users",
        sa.Column(
            "user_id", postgresql.UUID(as_uuid=True), nullable=False, comment="the deleted account"
        ),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when this service recorded the deletion (and began refusing the user)",
        ),
        sa.Column(
            "purged_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the purge of the user's data finished; NULL while it is owed",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_deleted_users")),
        schema=SCHEMA,
        comment="Accounts deleted in identity: refused from recording on, their data purged.",
    )


def downgrade() -> None:
    op.drop_table("deleted_users", schema=SCHEMA)
    op.drop_table("parked_events", schema=SCHEMA)
    op.alter_column(
        "event_cursors",
        "sequence",
        existing_type=sa.BigInteger(),
        existing_nullable=False,
        comment="last event handled",
        existing_comment="with xact_id: the last position handled",
        schema=SCHEMA,
    )
    op.drop_column("event_cursors", "xact_id", schema=SCHEMA)
