"""Tier relay indexes: `superseded` by (user_id, created_at); the claim in created_at order.

`claim_tier_changes` claims the oldest undelivered changes first (ORDER BY created_at), so
its partial index is on created_at (it was on next_attempt_at, which made the claim sort
every due row); `superseded` counts a user's newer changes through (user_id, created_at).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "billing"
UNDELIVERED = "delivered_at IS NULL"


def upgrade() -> None:
    op.drop_index("ix_tier_outbox_next_attempt_at", table_name="tier_outbox", schema=SCHEMA)
    op.create_index(
        "ix_tier_outbox_undelivered_created_at",
        "tier_outbox",
        ["created_at"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text(UNDELIVERED),
    )
    op.create_index(
        "ix_tier_outbox_user_id_created_at",
        "tier_outbox",
        ["user_id", "created_at"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("ix_tier_outbox_user_id_created_at", table_name="tier_outbox", schema=SCHEMA)
    op.drop_index("ix_tier_outbox_undelivered_created_at", table_name="tier_outbox", schema=SCHEMA)
    op.create_index(
        "ix_tier_outbox_next_attempt_at",
        "tier_outbox",
        ["next_attempt_at"],
        unique=False,
        schema=SCHEMA,
        postgresql_where=sa.text(UNDELIVERED),
    )
