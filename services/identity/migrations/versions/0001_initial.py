"""Identity: tiers (seeded Free and Pro), users, sessions, refresh tokens, signing keys,
one-time tokens, the outbox and the log-in throttle.

Written by hand to match services/identity/models.py exactly; the drift test runs
autogenerate's comparison against the migrated schema.

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

SCHEMA = "identity"
LIVE_USER = "deleted_at IS NULL"
LIVE_REFRESH_TOKEN = "rotated_at IS NULL AND revoked_at IS NULL"
GIB = 1024**3
MIB = 1024**2


def _timestamp(
    name: str, *, nullable: bool = False, default_now: bool = False, comment: str | None = None
) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if default_now else None,
        nullable=nullable,
        comment=comment,
    )


def upgrade() -> None:
    tiers = op.create_table(
        "tiers",
        sa.Column(
            "code",
            sa.Text(),
            nullable=False,
            comment="stable tier id named in tokens and by billing (free, pro)",
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "ai_edits_per_month",
            sa.BigInteger(),
            nullable=False,
            comment="AI edits allowed per calendar month; 0 = unlimited",
        ),
        sa.Column(
            "storage_bytes",
            sa.BigInteger(),
            nullable=False,
            comment="bytes of stored images allowed; 0 = unlimited",
        ),
        sa.Column(
            "max_projects",
            sa.BigInteger(),
            nullable=False,
            comment="live projects allowed; 0 = unlimited",
        ),
        sa.Column(
            "max_upload_bytes",
            sa.BigInteger(),
            nullable=False,
            comment="largest upload accepted in bytes; 0 = unlimited",
        ),
        sa.Column(
            "max_pixels",
            sa.BigInteger(),
            nullable=False,
            comment="largest image accepted (width x height); 0 = unlimited",
        ),
        sa.Column(
            "features",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
            comment="feature flags, a JSON object (e.g. public_presets); served as a Struct",
        ),
        sa.Column(
            "stripe_price_id",
            sa.Text(),
            nullable=True,
            comment="the Stripe price a checkout for this tier uses; NULL when not sold",
        ),
        sa.Column(
            "purchasable",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="offered in checkout",
        ),
        sa.Column(
            "sort_order",
            sa.Integer(),
            nullable=False,
            comment="display order in ListTiers",
        ),
        sa.CheckConstraint(
            "ai_edits_per_month >= 0 AND storage_bytes >= 0 AND max_projects >= 0 "
            "AND max_upload_bytes >= 0 AND max_pixels >= 0",
            name=op.f("ck_tiers_limits_not_negative"),
        ),
        sa.CheckConstraint(
            "jsonb_typeof(features) = 'object'", name=op.f("ck_tiers_features_is_object")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_tiers")),
        sa.UniqueConstraint("stripe_price_id", name=op.f("uq_tiers_stripe_price_id")),
        schema=SCHEMA,
        comment=(
            "Subscription tiers (Free, Pro): usage limits and feature flags; "
            "reference data changed only by migrations"
        ),
    )
    # SPEC section 4: data, changeable only by a later migration. 0 means unlimited.
    op.bulk_insert(
        tiers,
        [
            {
                "code": "free",
                "name": "Free",
                "ai_edits_per_month": 25,
                "storage_bytes": 1 * GIB,
                "max_projects": 20,
                "max_upload_bytes": 15 * MIB,
                "max_pixels": 40_000_000,
                "features": {"public_presets": False},
                "stripe_price_id": None,
                "purchasable": False,
                "sort_order": 0,
            },
            {
                "code": "pro",
                "name": "Pro",
                "ai_edits_per_month": 1000,
                "storage_bytes": 100 * GIB,
                "max_projects": 0,
                "max_upload_bytes": 50 * MIB,
                "max_pixels": 100_000_000,
                "features": {"public_presets": True},
                "stripe_price_id": None,
                "purchasable": True,
                "sort_order": 1,
            },
        ],
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "email",
            sa.Text(),
            nullable=True,
            comment=(
                "normalized (NFKC + case fold); NULL once the account is deleted and scrubbed"
            ),
        ),
        sa.Column(
            "username",
            sa.Text(),
            nullable=True,
            comment="normalized (NFKC + case fold); NULL once deleted and scrubbed",
        ),
        sa.Column(
            "password_hash",
            sa.Text(),
            nullable=True,
            comment="argon2id PHC string; NULL once deleted and scrubbed",
        ),
        sa.Column("display_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        _timestamp(
            "email_verified_at",
            nullable=True,
            comment="when the current email was proven; NULL = not verified",
        ),
        sa.Column(
            "tier_code",
            sa.Text(),
            server_default=sa.text("'free'"),
            nullable=False,
            comment="the user's current tier",
        ),
        _timestamp("created_at", default_now=True),
        _timestamp("updated_at", default_now=True),
        _timestamp(
            "deleted_at",
            nullable=True,
            comment="soft delete: when the account was deleted (its personal data is scrubbed)",
        ),
        sa.CheckConstraint(
            "deleted_at IS NOT NULL "
            "OR (email IS NOT NULL AND username IS NOT NULL AND password_hash IS NOT NULL)",
            name=op.f("ck_users_live_user_is_complete"),
        ),
        sa.ForeignKeyConstraint(
            ["tier_code"],
            [f"{SCHEMA}.tiers.code"],
            name=op.f("fk_users_tier_code_tiers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        schema=SCHEMA,
        comment=(
            "Accounts: normalized email and username (unique among live "
            "users), argon2id password hash, tier; soft-deleted and scrubbed "
            "when the account is deleted"
        ),
    )
    op.create_index(
        "uq_users_email_live",
        "users",
        ["email"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(LIVE_USER),
    )
    op.create_index(
        "uq_users_username_live",
        "users",
        ["username"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(LIVE_USER),
    )
    op.create_index("ix_users_tier_code", "users", ["tier_code"], schema=SCHEMA)

    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "user_agent",
            sa.Text(),
            server_default=sa.text("''"),
            nullable=False,
            comment="User-Agent at log-in, shown by ListSessions",
        ),
        sa.Column(
            "ip_address",
            sa.Text(),
            server_default=sa.text("''"),
            nullable=False,
            comment="client address at log-in, shown by ListSessions",
        ),
        _timestamp("created_at", default_now=True),
        _timestamp(
            "last_used_at",
            default_now=True,
            comment="last log-in or refresh",
        ),
        _timestamp("expires_at"),
        _timestamp(
            "revoked_at",
            nullable=True,
            comment="when it ended early; NULL while it lasts",
        ),
        sa.Column(
            "revoked_reason",
            sa.Text(),
            nullable=True,
            comment=(
                "why it ended: log_out, revoked, password_changed, "
                "password_reset, refresh_token_reused"
            ),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{SCHEMA}.users.id"],
            name=op.f("fk_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        schema=SCHEMA,
        comment="Signed-in devices: one per log-in, ended by log-out, revocation or expiry",
    )
    op.create_index(
        "ix_sessions_user_id_created_at_id",
        "sessions",
        ["user_id", "created_at", "id"],
        schema=SCHEMA,
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"], schema=SCHEMA)

    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column(
            "parent_id",
            sa.Uuid(),
            nullable=True,
            comment="the token this one was exchanged for; NULL for a session's first token",
        ),
        sa.Column(
            "token_hash",
            sa.LargeBinary(),
            nullable=False,
            comment="SHA-256 of the opaque token; the token itself is never stored",
        ),
        _timestamp("issued_at", default_now=True),
        _timestamp("expires_at"),
        _timestamp(
            "rotated_at",
            nullable=True,
            comment="when it was exchanged for its child (spent); presenting it again is reuse",
        ),
        _timestamp(
            "revoked_at",
            nullable=True,
            comment="when its session was revoked",
        ),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_refresh_tokens_token_hash_is_sha256")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            [f"{SCHEMA}.refresh_tokens.id"],
            name=op.f("fk_refresh_tokens_parent_id_refresh_tokens"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            [f"{SCHEMA}.sessions.id"],
            name=op.f("fk_refresh_tokens_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
        schema=SCHEMA,
        comment=(
            "Rotating refresh tokens of a session, stored as SHA-256 only; "
            "presenting a spent one revokes the session"
        ),
    )
    op.create_index("ix_refresh_tokens_session_id", "refresh_tokens", ["session_id"], schema=SCHEMA)
    op.create_index("ix_refresh_tokens_parent_id", "refresh_tokens", ["parent_id"], schema=SCHEMA)
    op.create_index(
        "uq_refresh_tokens_live_per_session",
        "refresh_tokens",
        ["session_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(LIVE_REFRESH_TOKEN),
    )

    op.create_table(
        "signing_keys",
        sa.Column(
            "kid",
            sa.Uuid(),
            nullable=False,
            comment="key id, in the JWT header and the JWKS",
        ),
        sa.Column("algorithm", sa.Text(), server_default=sa.text("'EdDSA'"), nullable=False),
        sa.Column(
            "public_key",
            sa.Text(),
            nullable=False,
            comment="PEM SubjectPublicKeyInfo",
        ),
        sa.Column(
            "private_key",
            sa.Text(),
            nullable=True,
            comment="PEM PKCS#8; erased once the key retires",
        ),
        _timestamp("created_at", default_now=True),
        _timestamp(
            "activated_at",
            comment="signs from this moment (published before it signs)",
        ),
        _timestamp(
            "retired_at",
            nullable=True,
            comment="stops signing at this moment",
        ),
        sa.CheckConstraint("algorithm = 'EdDSA'", name=op.f("ck_signing_keys_algorithm_is_eddsa")),
        sa.CheckConstraint(
            "retired_at IS NULL OR retired_at >= activated_at",
            name=op.f("ck_signing_keys_retired_after_activated"),
        ),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
        schema=SCHEMA,
        comment=(
            "Ed25519 keys that sign access tokens; published in the JWKS "
            "until every token they signed has expired"
        ),
    )

    op.create_table(
        "one_time_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "token_hash",
            sa.LargeBinary(),
            nullable=False,
            comment="SHA-256 of the mailed token; the token itself is never stored",
        ),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "purpose",
            sa.Text(),
            nullable=False,
            comment="email_verification or password_reset",
        ),
        sa.Column(
            "email",
            sa.Text(),
            nullable=False,
            comment="the address the token was mailed to: verifying it proves this address only",
        ),
        _timestamp("created_at", default_now=True),
        _timestamp("expires_at"),
        _timestamp(
            "used_at",
            nullable=True,
            comment="when it was spent; NULL = unused",
        ),
        sa.CheckConstraint(
            "purpose IN ('email_verification', 'password_reset')",
            name=op.f("ck_one_time_tokens_purpose_is_known"),
        ),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32",
            name=op.f("ck_one_time_tokens_token_hash_is_sha256"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{SCHEMA}.users.id"],
            name=op.f("fk_one_time_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_one_time_tokens_token_hash")),
        schema=SCHEMA,
        comment="Single-use email verification and password reset tokens, stored as SHA-256 only",
    )
    op.create_index(
        "ix_one_time_tokens_user_id_purpose",
        "one_time_tokens",
        ["user_id", "purpose"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_one_time_tokens_expires_at", "one_time_tokens", ["expires_at"], schema=SCHEMA
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        _timestamp("created_at", default_now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("sequence", name=op.f("uq_outbox_sequence")),
        schema=SCHEMA,
    )

    op.create_table(
        "login_failures",
        sa.Column(
            "scope",
            sa.Text(),
            nullable=False,
            comment="account or ip",
        ),
        sa.Column(
            "subject_hash",
            sa.LargeBinary(),
            nullable=False,
            comment="SHA-256 of the account id, attempted login or client address (/64)",
        ),
        _timestamp(
            "bucket_start",
            comment="start of the counting window",
        ),
        sa.Column(
            "failures",
            sa.Integer(),
            nullable=False,
            comment="failed attempts in the bucket",
        ),
        sa.CheckConstraint(
            "scope IN ('account', 'ip')", name=op.f("ck_login_failures_scope_is_known")
        ),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_login_failures_failures_not_negative")),
        sa.PrimaryKeyConstraint(
            "scope", "subject_hash", "bucket_start", name=op.f("pk_login_failures")
        ),
        schema=SCHEMA,
        comment=(
            "Failed log-ins counted per time bucket and hashed subject "
            "(account or client address), shared by every replica"
        ),
    )
    op.create_index(
        "ix_login_failures_bucket_start", "login_failures", ["bucket_start"], schema=SCHEMA
    )


def downgrade() -> None:
    for table in (
        "login_failures",
        "outbox",
        "one_time_tokens",
        "signing_keys",
        "refresh_tokens",
        "sessions",
        "users",
        "tiers",
    ):
        op.drop_table(table, schema=SCHEMA)
