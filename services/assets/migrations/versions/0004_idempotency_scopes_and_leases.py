"""Idempotency keys scoped (public uploads and StoreAsset apart, up to 255 characters) and
the lease a workflow step or sweeper takes on a row before it calls the object store or
billing (ADR 0011).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "assets"


def upgrade() -> None:
    op.add_column(
        "assets",
        sa.Column(
            "idempotency_scope",
            sa.Text(),
            nullable=True,
            comment="whose retry key: 'upload' (the Idempotency-Key header) or 'store' "
            "(StoreAsset)",
        ),
        schema=SCHEMA,
    )
    # Every key stored so far came from StoreAsset.
    op.execute(
        "UPDATE assets.assets SET idempotency_scope = 'store' WHERE idempotency_key IS NOT NULL"
    )
    op.alter_column(
        "assets",
        "idempotency_key",
        type_=sa.String(255),
        existing_type=sa.String(128),
        existing_nullable=True,
        schema=SCHEMA,
    )
    op.drop_constraint(
        "uq_assets_owner_id_idempotency_key", "assets", type_="unique", schema=SCHEMA
    )
    op.create_unique_constraint(
        op.f("uq_assets_owner_id_idempotency_scope_idempotency_key"),
        "assets",
        ["owner_id", "idempotency_scope", "idempotency_key"],
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f("ck_assets_idempotency_scope_known"),
        "assets",
        "idempotency_scope IN ('upload', 'store')",
        schema=SCHEMA,
    )
    op.create_check_constraint(
        op.f("ck_assets_idempotency_key_scoped"),
        "assets",
        "(idempotency_key IS NULL) = (idempotency_scope IS NULL)",
        schema=SCHEMA,
    )
    op.add_column(
        "assets",
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="lease of a claimed row (abandon, purge, settle) until then; "
            "a pending row ever claimed never becomes ready",
        ),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("assets", "next_attempt_at", schema=SCHEMA)
    op.drop_constraint(
        op.f("ck_assets_idempotency_key_scoped"), "assets", type_="check", schema=SCHEMA
    )
    op.drop_constraint(
        op.f("ck_assets_idempotency_scope_known"), "assets", type_="check", schema=SCHEMA
    )
    op.drop_constraint(
        op.f("uq_assets_owner_id_idempotency_scope_idempotency_key"),
        "assets",
        type_="unique",
        schema=SCHEMA,
    )
    # The old shape knows only StoreAsset's keys, of at most 128 characters: the assets
    # stay, public upload keys (and longer ones) are forgotten.
    op.execute(
        "UPDATE assets.assets SET idempotency_key = NULL "
        "WHERE idempotency_scope = 'upload' OR length(idempotency_key) > 128"
    )
    op.create_unique_constraint(
        "uq_assets_owner_id_idempotency_key",
        "assets",
        ["owner_id", "idempotency_key"],
        schema=SCHEMA,
    )
    op.alter_column(
        "assets",
        "idempotency_key",
        type_=sa.String(128),
        existing_type=sa.String(255),
        existing_nullable=True,
        schema=SCHEMA,
    )
    op.drop_column("assets", "idempotency_scope", schema=SCHEMA)
