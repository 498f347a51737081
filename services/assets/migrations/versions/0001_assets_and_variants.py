"""Assets and their variants.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "assets"
# The same predicates as models.py: the repository repeats them literally.
LISTED = "deleted_at IS NULL AND state = 'ready'"
PENDING = "state = 'pending'"
AWAITING_PURGE = "deleted_at IS NOT NULL AND purged_at IS NULL"
UNSETTLED = "state = 'ready' AND reservation_id IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("reservation_id", sa.Text(), nullable=True),
        sa.Column("direct_upload", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
        sa.UniqueConstraint("storage_key", name="uq_assets_storage_key"),
        sa.UniqueConstraint(
            "owner_id", "idempotency_key", name="uq_assets_owner_id_idempotency_key"
        ),
        sa.CheckConstraint("kind IN ('upload', 'edit_result')", name="ck_assets_kind_known"),
        sa.CheckConstraint("state IN ('pending', 'ready')", name="ck_assets_state_known"),
        sa.CheckConstraint("size_bytes >= 0", name="ck_assets_size_not_negative"),
        sa.CheckConstraint("width > 0 AND height > 0", name="ck_assets_dimensions_positive"),
        sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="ck_assets_sha256_hex"),
        sa.CheckConstraint(
            "state <> 'ready' OR (mime_type IS NOT NULL AND width IS NOT NULL "
            "AND height IS NOT NULL AND sha256 IS NOT NULL)",
            name="ck_assets_ready_has_metadata",
        ),
        sa.CheckConstraint(
            "purged_at IS NULL OR deleted_at IS NOT NULL", name="ck_assets_purged_after_deleted"
        ),
        schema=SCHEMA,
        comment=(
            "Images in object storage (uploads and edit results): storage key, sniffed MIME "
            "type, size, dimensions, SHA-256, sanitized file name; pending until the object "
            "is stored"
        ),
    )
    op.create_index(
        "ix_assets_owner_newest",
        "assets",
        ["owner_id", "created_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text(LISTED),
    )
    op.create_index(
        "ix_assets_owner_kind_newest",
        "assets",
        ["owner_id", "kind", "created_at", "id"],
        schema=SCHEMA,
        postgresql_where=sa.text(LISTED),
    )
    op.create_index(
        "ix_assets_pending_created",
        "assets",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_assets_awaiting_purge",
        "assets",
        ["deleted_at"],
        schema=SCHEMA,
        postgresql_where=sa.text(AWAITING_PURGE),
    )
    op.create_index(
        "ix_assets_unsettled",
        "assets",
        ["created_at"],
        schema=SCHEMA,
        postgresql_where=sa.text(UNSETTLED),
    )

    op.create_table(
        "asset_variants",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("asset_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_asset_variants"),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            [f"{SCHEMA}.assets.id"],
            name="fk_asset_variants_asset_id_assets",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("asset_id", "name", name="uq_asset_variants_asset_id_name"),
        sa.UniqueConstraint("storage_key", name="uq_asset_variants_storage_key"),
        sa.CheckConstraint("size_bytes >= 0", name="ck_asset_variants_size_not_negative"),
        sa.CheckConstraint(
            "width > 0 AND height > 0", name="ck_asset_variants_dimensions_positive"
        ),
        schema=SCHEMA,
        comment="Images derived from an asset (the 512 px thumbnail), stored next to it",
    )


def downgrade() -> None:
    op.drop_table("asset_variants", schema=SCHEMA)
    op.drop_index("ix_assets_unsettled", table_name="assets", schema=SCHEMA)
    op.drop_index("ix_assets_awaiting_purge", table_name="assets", schema=SCHEMA)
    op.drop_index("ix_assets_pending_created", table_name="assets", schema=SCHEMA)
    op.drop_index("ix_assets_owner_kind_newest", table_name="assets", schema=SCHEMA)
    op.drop_index("ix_assets_owner_newest", table_name="assets", schema=SCHEMA)
    op.drop_table("assets", schema=SCHEMA)
