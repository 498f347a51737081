"""Column comments for every non-obvious column of the identity schema (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "identity"

# (table, column): comment; the same text is the column's `comment=` in the model.
COMMENTS: dict[tuple[str, str], str] = {
    (
        "mail_requests",
        "requested_at",
    ): "when the mail was asked for (the worker handles oldest first)",
    (
        "mail_sends",
        "sent_at",
    ): "when the mail was sent; the cooldown and the daily cap count from it",
    ("outbox", "type"): "the event type, e.g. user.deleted or user.tier_changed",
    ("outbox", "user_id"): "the user the event is about, when it is about one",
    ("outbox", "payload"): "the event's payload (ids and codes, no personal data)",
    ("refresh_tokens", "issued_at"): "when the token was issued (created or rotated to)",
    ("signing_keys", "algorithm"): "the JWT signing algorithm; only EdDSA (Ed25519)",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS {_quote(comment)}")


def downgrade() -> None:
    for table, column in COMMENTS:
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS NULL")
