"""Deferred mail (mail_requests) with per-address and per-user rate limits (mail_sends);
usernames unique by their UTS #39 skeleton; pending addresses (ADR 0013).

Live users get their skeleton computed here; where two existing usernames already share
one, the younger keeps its name without a skeleton (it cannot be made unique after the
fact) and every new look-alike of either is refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.identity.skeleton import skeleton

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "identity"
LIVE_USER = "deleted_at IS NULL"
OLD_COMPLETE = (
    "deleted_at IS NOT NULL "
    "OR (email IS NOT NULL AND username IS NOT NULL AND password_hash IS NOT NULL)"
)
NEW_COMPLETE = (
    "deleted_at IS NOT NULL OR ((email IS NOT NULL OR pending_email IS NOT NULL) "
    "AND username IS NOT NULL AND password_hash IS NOT NULL)"
)


def _timestamp(name: str, comment: str | None = None) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, comment=comment)


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column(
            "username_skeleton",
            sa.Text(),
            nullable=True,
            comment="UTS #39 confusable skeleton of the username, unique among live users",
        ),
        schema=SCHEMA,
    )
    op.add_column(
        "users",
        sa.Column(
            "pending_email",
            sa.Text(),
            nullable=True,
            comment="an address asked for and not yet confirmed by its link (ADR 0013)",
        ),
        schema=SCHEMA,
    )
    connection = op.get_bind()
    seen: set[str] = set()
    rows = connection.execute(
        sa.text(
            "SELECT id, username FROM identity.users WHERE deleted_at IS NULL"
            " ORDER BY created_at, id"
        )
    )
    for user_id, username in rows.all():
        key = skeleton(username)
        if key in seen:
            continue
        seen.add(key)
        connection.execute(
            sa.text("UPDATE identity.users SET username_skeleton = :key WHERE id = :id"),
            {"key": key, "id": user_id},
        )
    op.create_index(
        "uq_users_username_skeleton_live",
        "users",
        ["username_skeleton"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text(LIVE_USER),
    )
    op.create_index(
        "ix_users_pending_email",
        "users",
        ["pending_email"],
        schema=SCHEMA,
        postgresql_where=sa.text(LIVE_USER),
    )
    op.drop_constraint("ck_users_live_user_is_complete", "users", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_users_live_user_is_complete"), "users", NEW_COMPLETE, schema=SCHEMA
    )
    op.drop_constraint("ck_one_time_tokens_purpose_is_known", "one_time_tokens", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_one_time_tokens_purpose_is_known"),
        "one_time_tokens",
        "purpose IN ('email_verification', 'password_reset', 'email_change')",
        schema=SCHEMA,
    )

    op.create_table(
        "mail_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "purpose",
            sa.Text(),
            nullable=False,
            comment="what to mail; the mail worker decides to whom and whether",
        ),
        sa.Column(
            "address",
            sa.Text(),
            nullable=True,
            comment="the address to resolve or to write to; the row is deleted once handled",
        ),
        sa.Column(
            "user_id",
            sa.Uuid(),
            nullable=True,
            comment="the account the mail is about, when the request names one",
        ),
        _timestamp("requested_at"),
        _timestamp(
            "next_attempt_at",
            "a worker's claim lasts until then; a crashed worker's row is retried after it",
        ),
        sa.Column(
            "attempts",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="how often a worker has claimed it",
        ),
        sa.CheckConstraint(
            "purpose IN ('password_reset', 'email_verification', 'email_change', 'email_changed')",
            name=op.f("ck_mail_requests_purpose_is_known"),
        ),
        sa.CheckConstraint(
            "address IS NOT NULL OR user_id IS NOT NULL",
            name=op.f("ck_mail_requests_has_recipient"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{SCHEMA}.users.id"],
            name=op.f("fk_mail_requests_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_requests")),
        schema=SCHEMA,
        comment=(
            "Mail asked for and not yet handled: requests only write this row, the mail worker "
            "resolves the address and sends later (ADR 0013)"
        ),
    )
    op.create_index(
        "ix_mail_requests_next_attempt_at", "mail_requests", ["next_attempt_at"], schema=SCHEMA
    )
    op.create_index("ix_mail_requests_user_id", "mail_requests", ["user_id"], schema=SCHEMA)
    op.create_table(
        "mail_sends",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "subject_hash",
            sa.LargeBinary(),
            nullable=False,
            comment="SHA-256 of address:<address> or user:<id>; no address is stored",
        ),
        sa.Column(
            "template",
            sa.Text(),
            nullable=False,
            comment="the kind of mail; the cooldown counts each kind, the daily cap all kinds",
        ),
        _timestamp("sent_at"),
        sa.CheckConstraint(
            "octet_length(subject_hash) = 32", name=op.f("ck_mail_sends_subject_hash_is_sha256")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_sends")),
        schema=SCHEMA,
        comment="Mails sent per address and per user, for the cooldown and the daily cap",
    )
    op.create_index(
        "ix_mail_sends_subject_hash_sent_at",
        "mail_sends",
        ["subject_hash", "sent_at"],
        schema=SCHEMA,
    )
    op.create_index("ix_mail_sends_sent_at", "mail_sends", ["sent_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("mail_sends", schema=SCHEMA)
    op.drop_table("mail_requests", schema=SCHEMA)
    op.execute(sa.text("DELETE FROM identity.one_time_tokens WHERE purpose = 'email_change'"))
    op.drop_constraint("ck_one_time_tokens_purpose_is_known", "one_time_tokens", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_one_time_tokens_purpose_is_known"),
        "one_time_tokens",
        "purpose IN ('email_verification', 'password_reset')",
        schema=SCHEMA,
    )
    # An account whose only address is pending cannot be represented before this revision.
    op.execute(
        sa.text(
            "UPDATE identity.users SET email = pending_email"
            " WHERE email IS NULL AND deleted_at IS NULL"
        )
    )
    op.drop_constraint("ck_users_live_user_is_complete", "users", schema=SCHEMA)
    op.create_check_constraint(
        op.f("ck_users_live_user_is_complete"), "users", OLD_COMPLETE, schema=SCHEMA
    )
    op.drop_index("ix_users_pending_email", table_name="users", schema=SCHEMA)
    op.drop_index("uq_users_username_skeleton_live", table_name="users", schema=SCHEMA)
    op.drop_column("users", "pending_email", schema=SCHEMA)
    op.drop_column("users", "username_skeleton", schema=SCHEMA)
