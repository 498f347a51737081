"""Column comments for every non-obvious column of the billing schema (issue 11).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "billing"

# (table, column): comment; the same text is the column's `comment=` in the model.
COMMENTS: dict[tuple[str, str], str] = {
    ("parked_events", "event_id"): "the outbox event's id (its idempotency key)",
    ("parked_events", "type"): "the event type, e.g. user.deleted",
    ("parked_events", "user_id"): "the user the event is about, when it is about one",
    ("parked_events", "payload"): "the event's payload as the outbox held it (ids only)",
    ("parked_events", "parked_at"): "when the handler gave up and the cursor moved past it",
    ("stripe_events", "type"): "Stripe's event type, e.g. customer.subscription.updated",
    (
        "stripe_events",
        "stripe_subscription_id",
    ): "the Stripe subscription (sub_...) the event is about, if any",
    ("stripe_events", "received_at"): "when our webhook received the event",
    ("stripe_events", "processed_at"): "when the event was recorded as handled",
    ("subscriptions", "user_id"): "identity user id",
    (
        "subscriptions",
        "current_period_start",
    ): "start of the current Stripe billing period; NULL for manual",
    (
        "subscriptions",
        "current_period_end",
    ): "end of the current Stripe billing period; NULL for manual",
    ("subscriptions", "cancel_at_period_end"): "Stripe cancels it at the period's end",
    ("tier_outbox", "user_id"): "identity user id whose tier changed",
    ("tier_outbox", "tier_code"): "the tier to set in identity",
    ("tier_outbox", "attempts"): "delivery attempts so far",
    (
        "tier_outbox",
        "next_attempt_at",
    ): "the relay claims it only from then on; each claim pushes it to the retry time",
    ("tier_outbox", "delivered_at"): "when identity accepted it; NULL while undelivered",
    ("usage_counters", "user_id"): "identity user id",
    ("usage_counters", "metric"): "ai_edits, storage_bytes or projects",
    ("usage_counters", "used"): "committed usage in the period",
    (
        "usage_counters",
        "reserved",
    ): "open reservations in the period, not yet committed or released",
    ("usage_ledger", "user_id"): "identity user id",
    ("usage_ledger", "metric"): "ai_edits, storage_bytes or projects",
    ("usage_ledger", "period_start"): "the counter's period; 1970-01-01 for gauges",
    ("usage_ledger", "kind"): "commit or credit",
    ("usage_ledger", "reservation_id"): "the committed reservation; NULL for credits",
    ("usage_reservations", "user_id"): "identity user id",
    ("usage_reservations", "metric"): "ai_edits, storage_bytes or projects",
    ("usage_reservations", "period_start"): "the counter's period; 1970-01-01 for gauges",
    ("usage_reservations", "amount"): "units reserved",
    ("usage_reservations", "state"): "reserved, committed or released",
    ("usage_reservations", "settled_at"): "when it was committed or released; NULL while reserved",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    for (table, column), comment in COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS {_quote(comment)}")


def downgrade() -> None:
    for table, column in COMMENTS:
        op.execute(f"COMMENT ON COLUMN {SCHEMA}.{table}.{column} IS NULL")
