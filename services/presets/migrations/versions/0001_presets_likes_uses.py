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
        sa.Column(
            "owner_id",
            sa.UUID(),
            nullable=True,
            comment=(
                "identity.users.id of its owner (checked through the API, no "
                "foreign key); NULL = system preset"
            ),
        ),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column(
            "prompt",
            sa.String(length=2000),
            nullable=False,
            comment="the text sent to the AI engine",
        ),
        sa.Column(
            "category",
            sa.Text(),
            nullable=False,
            comment="filter or adjustment",
        ),
        sa.Column(
            "visibility",
            sa.Text(),
            server_default="private",
            nullable=False,
            comment="private (owner only), unlisted (anyone with the id) or public (listed)",
        ),
        sa.Column(
            "forked_from_id",
            sa.UUID(),
            nullable=True,
            comment=(
                "the preset this one was copied from; NULL for an original or "
                "once the source was purged"
            ),
        ),
        sa.Column(
            "like_count",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="number of preset_likes rows, changed in the same transaction as them",
        ),
        sa.Column(
            "use_count",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="number of preset_uses rows, changed in the same transaction as them",
        ),
        sa.Column(
            "version",
            sa.Integer(),
            server_default="1",
            nullable=False,
            comment="bumped by every change of content; edits snapshot it with the prompt",
        ),
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
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="soft delete: hidden from every listing, purged with its owner",
        ),
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('simple'::regconfig, (name::text || ' '::text) || description::text)",
                persisted=True,
            ),
            nullable=False,
            comment="generated: tsvector of name and description for full-text search",
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
        comment=(
            "Filters and adjustments whose prompt is sent to the AI engine: "
            "system presets (no owner, seeded by migration) and users' own, "
            "private, unlisted or public"
        ),
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
        sa.Column(
            "user_id",
            sa.UUID(),
            nullable=False,
            comment="identity.users.id of the user who likes it (checked through the API)",
        ),
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
        comment=(
            "Likes: the many-to-many between users and presets, one row per "
            "pair; presets.like_count counts them"
        ),
    )
    op.create_index("ix_preset_likes_user_id", "preset_likes", ["user_id"], schema=SCHEMA)

    op.create_table(
        "preset_uses",
        sa.Column(
            "edit_id",
            sa.UUID(),
            nullable=False,
            comment="projects.edits.id of the edit that applied the preset (one use per edit)",
        ),
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
        comment=(
            "Each edit that applied a preset, once: makes RecordPresetUse "
            "idempotent; presets.use_count counts them"
        ),
    )
    op.create_index("ix_preset_uses_preset_id", "preset_uses", ["preset_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("preset_uses", schema=SCHEMA)
    op.drop_table("preset_likes", schema=SCHEMA)
    op.drop_table("presets", schema=SCHEMA)
