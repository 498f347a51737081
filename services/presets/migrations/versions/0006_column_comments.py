"""Column comments for every non-obvious column of the presets schema (issue 11).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "presets"

# (table, column): comment; the same text is the column's `comment=` in the model.
COMMENTS: dict[tuple[str, str], str] = {
    ("parked_events", "event_id"): "the outbox event's id (its idempotency key)",
    ("parked_events", "type"): "the event type, e.g. user.deleted",
    ("parked_events", "user_id"): "the user the event is about, when it is about one",
    ("parked_events", "payload"): "the event's payload as the outbox held it (ids only)",
    ("parked_events", "parked_at"): "when the handler gave up and the cursor moved past it",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS {_quote(comment)}")


def downgrade() -> None:
    for table, column in COMMENTS:
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS NULL")
