"""CreatePreset is safe to retry: the Idempotency-Key it was called with, and a digest of
the request, stored on the preset it made (unique per owner).

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

SCHEMA = "presets"


def upgrade() -> None:
    op.add_column(
        "presets",
        sa.Column(
            "idempotency_key",
            sa.String(length=255),
            nullable=True,
            comment="the Idempotency-Key CreatePreset was called with; unique per owner",
        ),
        schema=SCHEMA,
    )
    op.add_column(
        "presets",
        sa.Column(
            "request_sha256",
            sa.LargeBinary(),
            nullable=True,
            comment="digest of the CreatePreset request that key was first used for",
        ),
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f("ck_presets_idempotency_key_digest"),
        "presets",
        "(idempotency_key IS NULL) = (request_sha256 IS NULL)",
        schema=SCHEMA,
    )
    op.create_index(
        "uq_presets_owner_id_idempotency_key",
        "presets",
        ["owner_id", "idempotency_key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_presets_owner_id_idempotency_key", table_name="presets", schema=SCHEMA)
    op.drop_constraint(
        op.f("ck_presets_idempotency_key_digest"), "presets", type_="check", schema=SCHEMA
    )
    op.drop_column("presets", "request_sha256", schema=SCHEMA)
    op.drop_column("presets", "idempotency_key", schema=SCHEMA)
