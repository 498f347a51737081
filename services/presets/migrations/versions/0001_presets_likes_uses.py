"""Presets, likes and uses.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "presets"
LIVE = "deleted_at IS NULL"
LIVE_PUBLIC = "deleted_at IS NULL AND visibility = 'public'"


def upgrade() -> None:
    op.create_table(
        "presets",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column("prompt", sa.String(length=2000), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("visibility", sa.Text(), server_default="private", nullable=False),
        sa.Column("forked_from_id", sa.UUID(), nullable=True),
        sa.Column("like_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("use_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('simple'::regconfig, (name::text || ' '::text) || description::text)",
                persisted=True,
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "category IN ('filter', 'adjustment')", name=op.f("ck_presets_category_known")
        ),
        sa.CheckConstraint(
            "visibility IN ('private', 'unlisted', 'public')",
            name=op.f("ck_presets_visibility_known"),
        ),
        sa.CheckConstraint("like_count >= 0", name=op.f("ck_presets_like_count_not_negative")),
        sa.CheckConstraint("use_count >= 0", name=op.f("ck_presets_use_count_not_negative")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_presets_version_positive")),
        sa.CheckConstraint(
            "owner_id IS NOT NULL OR visibility = 'public'",
            name=op.f("ck_presets_system_is_public"),
        ),
        sa.ForeignKeyConstraint(
            ["forked_from_id"],
            [f"{SCHEMA}.presets.id"],
            name=op.f("fk_presets_forked_from_id_presets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presets")),
        schema=SCHEMA,
    )
    for name, columns in (
        ("ix_presets_public_newest", ["created_at", "id"]),
        ("ix_presets_public_popular", ["like_count", "id"]),
        ("ix_presets_public_used", ["use_count", "id"]),
    ):
        op.create_index(
            name, "presets", columns, schema=SCHEMA, postgresql_where=sa.text(LIVE_PUBLIC)
        )
    op.create_index(
        "ix_presets_owner_newest", "presets", ["owner_id", "created_at", "id"], schema=SCHEMA
    )
    op.create_index(
        "ix_presets_search",
        "presets",
        ["search"],
        schema=SCHEMA,
        postgresql_using="gin",
        postgresql_where=sa.text(LIVE),
    )
    op.create_index(
        "ix_presets_forked_from_id",
        "presets",
        ["forked_from_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("forked_from_id IS NOT NULL"),
    )

    op.create_table(
        "preset_likes",
        sa.Column("preset_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["preset_id"],
            [f"{SCHEMA}.presets.id"],
            name=op.f("fk_preset_likes_preset_id_presets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("preset_id", "user_id", name=op.f("pk_preset_likes")),
        schema=SCHEMA,
    )
    op.create_index("ix_preset_likes_user_id", "preset_likes", ["user_id"], schema=SCHEMA)

    op.create_table(
        "preset_uses",
        sa.Column("edit_id", sa.UUID(), nullable=False),
        sa.Column("preset_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["preset_id"],
            [f"{SCHEMA}.presets.id"],
            name=op.f("fk_preset_uses_preset_id_presets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("edit_id", name=op.f("pk_preset_uses")),
        schema=SCHEMA,
    )
    op.create_index("ix_preset_uses_preset_id", "preset_uses", ["preset_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("preset_uses", schema=SCHEMA)
    op.drop_table("preset_likes", schema=SCHEMA)
    op.drop_table("presets", schema=SCHEMA)
