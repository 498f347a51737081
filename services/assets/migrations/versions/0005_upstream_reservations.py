"""The size of a storage reservation a caller made for StoreAsset (projects reserves room
for an edit's result before the engine runs and hands the reservation over), so the
surplus over the stored bytes is credited back when the reservation is committed, also by
the sweeper.

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

SCHEMA = "assets"


def upgrade() -> None:
    op.add_column(
        "assets",
        sa.Column(
            "reserved_bytes",
            sa.BigInteger(),
            nullable=True,
            comment="bytes of a reservation the caller made (StoreAsset); the surplus over "
            "size_bytes is credited back once it is committed",
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("assets", "reserved_bytes", schema=SCHEMA)
