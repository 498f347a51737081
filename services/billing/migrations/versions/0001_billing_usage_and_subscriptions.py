"""Billing: customers, subscriptions, usage counters, reservations, the append-only
ledger, processed Stripe events, the tier outbox, outbox following and tombstones.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "billing"

APPEND_ONLY = """
CREATE FUNCTION billing.usage_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'usage_ledger is append-only';
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("user_id", sa.UUID(), nullable=False, comment="our user (identity)"),
        sa.Column(
            "stripe_customer_id", sa.Text(), nullable=False, comment="cus_..., created on first use"
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_customers")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_customers_stripe_customer_id")),
        schema="billing",
        comment="The Stripe customer of each user who ever started a checkout (ids only).",
    )
    op.create_table(
        "deleted_users",
        sa.Column("user_id", sa.UUID(), nullable=False, comment="the deleted account"),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when this service recorded the deletion (and began refusing the user)",
        ),
        sa.Column(
            "purged_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the purge of the user's data finished; NULL while it is owed",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_deleted_users")),
        schema="billing",
        comment="Accounts deleted in identity: refused from recording on, their data purged.",
    )
    op.create_table(
        "event_cursors",
        sa.Column("source", sa.Text(), nullable=False, comment="whose outbox, e.g. identity"),
        sa.Column(
            "sequence",
            sa.BigInteger(),
            nullable=False,
            comment="with xact_id: the last position handled",
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "xact_id",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="with sequence: the last position handled (the writing transaction)",
        ),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_event_cursors")),
        schema="billing",
        comment="How far this service has followed another service's outbox.",
    )
    op.create_table(
        "parked_events",
        sa.Column("source", sa.Text(), nullable=False, comment="whose outbox, e.g. identity"),
        sa.Column("xact_id", sa.BigInteger(), nullable=False, comment="the event's position"),
        sa.Column("sequence", sa.BigInteger(), nullable=False, comment="the event's position"),
        sa.Column("event_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, comment="how often the handler failed"),
        sa.Column(
            "last_error", sa.Text(), nullable=False, comment="the last failure's exception type"
        ),
        sa.Column(
            "parked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("source", "xact_id", "sequence", name=op.f("pk_parked_events")),
        schema="billing",
        comment="Events this service's handler failed on repeatedly; the cursor moved past them.",
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.Text(), nullable=False, comment="Stripe's event id (evt_...)"),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False, comment="applied, ignored or unmatched"),
        sa.Column("stripe_subscription_id", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
        schema="billing",
        comment="Every Stripe event applied, recorded in the same transaction (duplicates skip).",
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "stripe_subscription_id",
            sa.Text(),
            nullable=True,
            comment="sub_...; NULL for a tier set by identity's set-tier command",
        ),
        sa.Column(
            "tier_code", sa.Text(), nullable=False, comment="the tier it grants while it grants one"
        ),
        sa.Column("status", sa.Text(), nullable=False, comment="Stripe's status, or 'manual'"),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "cancel_at_period_end", sa.Boolean(), server_default=sa.text("false"), nullable=False
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
        sa.CheckConstraint(
            "current_period_end IS NULL OR current_period_end >= current_period_start",
            name=op.f("ck_subscriptions_period_ordered"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")
        ),
        schema="billing",
        comment="Subscriptions as Stripe last told us (each webhook re-reads the latest state).",
    )
    op.create_index(
        "ix_subscriptions_user_id", "subscriptions", ["user_id"], unique=False, schema="billing"
    )
    op.create_index(
        "uq_subscriptions_user_id_manual",
        "subscriptions",
        ["user_id"],
        unique=True,
        schema="billing",
        postgresql_where=sa.text("stripe_subscription_id IS NULL"),
    )
    op.create_table(
        "tier_outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("tier_code", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_outbox")),
        schema="billing",
        comment="Tier changes for identity (SetUserTier), written with the change, relayed after.",
    )
    op.create_index(
        "ix_tier_outbox_next_attempt_at",
        "tier_outbox",
        ["next_attempt_at"],
        unique=False,
        schema="billing",
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "usage_counters",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column(
            "period_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="start of the billing period; 1970-01-01 for gauges, which never reset",
        ),
        sa.Column("used", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("reserved", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "metric IN ('ai_edits', 'storage_bytes', 'projects')",
            name=op.f("ck_usage_counters_metric_known"),
        ),
        sa.CheckConstraint(
            "used >= 0 AND reserved >= 0", name=op.f("ck_usage_counters_not_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_counters")),
        sa.UniqueConstraint(
            "user_id",
            "metric",
            "period_start",
            name=op.f("uq_usage_counters_user_id_metric_period_start"),
        ),
        schema="billing",
        comment="Usage per user, metric and period: committed (used) and held (reserved).",
    )
    op.create_table(
        "usage_ledger",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column(
            "delta", sa.BigInteger(), nullable=False, comment="change of `used`: + commit, - credit"
        ),
        sa.Column("reservation_id", sa.UUID(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True, comment="a credit's caller key"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('commit', 'credit')", name=op.f("ck_usage_ledger_kind_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
        schema="billing",
        comment="Append-only record of every committed usage and credit; counters rebuild from it.",
    )
    op.create_index(
        "ix_usage_ledger_user_id_metric_period_start",
        "usage_ledger",
        ["user_id", "metric", "period_start"],
        unique=False,
        schema="billing",
    )
    op.create_index(
        "uq_usage_ledger_credit_key",
        "usage_ledger",
        ["user_id", "metric", "idempotency_key"],
        unique=True,
        schema="billing",
        postgresql_where=sa.text("kind = 'credit'"),
    )
    op.create_index(
        "uq_usage_ledger_reservation_id",
        "usage_ledger",
        ["reservation_id"],
        unique=True,
        schema="billing",
        postgresql_where=sa.text("kind = 'commit'"),
    )
    op.create_table(
        "usage_reservations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False, comment="the caller's key"),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('reserved', 'committed', 'released')",
            name=op.f("ck_usage_reservations_state_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_usage_reservations_amount_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_reservations")),
        sa.UniqueConstraint(
            "user_id",
            "metric",
            "idempotency_key",
            name=op.f("uq_usage_reservations_user_id_metric_idempotency_key"),
        ),
        schema="billing",
        comment="Capacity held before a side effect, then committed or released (or expired).",
    )
    op.create_index(
        "ix_usage_reservations_expires_at_open",
        "usage_reservations",
        ["expires_at"],
        unique=False,
        schema="billing",
        postgresql_where=sa.text("state = 'reserved'"),
    )
    op.execute(APPEND_ONLY)
    op.execute(
        "CREATE TRIGGER usage_ledger_append_only BEFORE UPDATE OR DELETE ON billing.usage_ledger "
        "FOR EACH ROW EXECUTE FUNCTION billing.usage_ledger_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER usage_ledger_append_only ON billing.usage_ledger")
    op.execute("DROP FUNCTION billing.usage_ledger_append_only()")
    op.drop_index(
        "ix_usage_reservations_expires_at_open",
        table_name="usage_reservations",
        schema="billing",
        postgresql_where=sa.text("state = 'reserved'"),
    )
    op.drop_table("usage_reservations", schema="billing")
    op.drop_index(
        "uq_usage_ledger_reservation_id",
        table_name="usage_ledger",
        schema="billing",
        postgresql_where=sa.text("kind = 'commit'"),
    )
    op.drop_index(
        "uq_usage_ledger_credit_key",
        table_name="usage_ledger",
        schema="billing",
        postgresql_where=sa.text("kind = 'credit'"),
    )
    op.drop_index(
        "ix_usage_ledger_user_id_metric_period_start", table_name="usage_ledger", schema="billing"
    )
    op.drop_table("usage_ledger", schema="billing")
    op.drop_table("usage_counters", schema="billing")
    op.drop_index(
        "ix_tier_outbox_next_attempt_at",
        table_name="tier_outbox",
        schema="billing",
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.drop_table("tier_outbox", schema="billing")
    op.drop_index(
        "uq_subscriptions_user_id_manual",
        table_name="subscriptions",
        schema="billing",
        postgresql_where=sa.text("stripe_subscription_id IS NULL"),
    )
    op.drop_index("ix_subscriptions_user_id", table_name="subscriptions", schema="billing")
    op.drop_table("subscriptions", schema="billing")
    op.drop_table("stripe_events", schema="billing")
    op.drop_table("parked_events", schema="billing")
    op.drop_table("event_cursors", schema="billing")
    op.drop_table("deleted_users", schema="billing")
    op.drop_table("customers", schema="billing")
