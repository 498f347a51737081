"""Tables of the `billing` schema, and the values stored in and read from them.

Usage is counted per (user, metric, period) in `usage_counters`: `used` is committed
usage, `reserved` what open reservations hold. A reservation raises `reserved` with one
conditional UPDATE (`used + reserved + amount <= limit`), so no concurrency can push a
counter past its limit. Every committed change and every credit appends a row to
`usage_ledger`, which is append-only (a trigger refuses UPDATE and DELETE): the sum of a
counter's ledger rows is its `used`. Gauges (storage bytes, projects) never reset: their
period starts at `GAUGE_PERIOD`.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from runtime.db import schema_metadata
from runtime.events import event_cursor_table, parked_event_table
from runtime.tombstones import tombstone_table
from runtime.usage import Metric

SCHEMA = "billing"
metadata = schema_metadata(SCHEMA)

# The period of a gauge: one counter for all time.
GAUGE_PERIOD = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
FREE_TIER = "free"
# Stripe statuses under which a subscription grants its tier (past_due: Stripe is still
# retrying the payment, so the user keeps the plan meanwhile).
GRANTING_STATUSES = ("active", "trialing", "past_due")
# Nothing comes back from these: a late event never resurrects the subscription.
FINAL_STATUSES = ("canceled", "incomplete_expired")
# A tier set by identity's `set-tier` command, not bought through Stripe.
MANUAL_STATUS = "manual"

OPEN_RESERVATION = "state = 'reserved'"
UNDELIVERED = "delivered_at IS NULL"


class ReservationState(enum.StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    RELEASED = "released"


class LedgerKind(enum.StrEnum):
    COMMIT = "commit"
    CREDIT = "credit"


customers = Table(
    "customers",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True, comment="our user (identity)"),
    Column("stripe_customer_id", Text, nullable=False, comment="cus_..., created on first use"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("stripe_customer_id"),
    comment="The Stripe customer of each user who ever started a checkout (ids only).",
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column(
        "stripe_subscription_id",
        Text,
        nullable=True,
        comment="sub_...; NULL for a tier set by identity's set-tier command",
    ),
    Column("tier_code", Text, nullable=False, comment="the tier it grants while it grants one"),
    Column("status", Text, nullable=False, comment="Stripe's status, or 'manual'"),
    Column(
        "current_period_start",
        DateTime(timezone=True),
        nullable=True,
        comment="start of the current Stripe billing period; NULL for manual",
    ),
    Column(
        "current_period_end",
        DateTime(timezone=True),
        nullable=True,
        comment="end of the current Stripe billing period; NULL for manual",
    ),
    Column(
        "cancel_at_period_end",
        Boolean,
        nullable=False,
        server_default=false(),
        comment="Stripe cancels it at the period's end",
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("stripe_subscription_id"),
    CheckConstraint(
        "current_period_end IS NULL OR current_period_end >= current_period_start",
        name="period_ordered",
    ),
    Index("ix_subscriptions_user_id", "user_id"),
    Index(
        "uq_subscriptions_user_id_manual",
        "user_id",
        unique=True,
        postgresql_where=text("stripe_subscription_id IS NULL"),
    ),
    comment="Subscriptions as Stripe last told us (each webhook re-reads the latest state).",
)

usage_counters = Table(
    "usage_counters",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("user_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("metric", Text, nullable=False, comment="ai_edits, storage_bytes or projects"),
    Column(
        "period_start",
        DateTime(timezone=True),
        nullable=False,
        comment="start of the billing period; 1970-01-01 for gauges, which never reset",
    ),
    Column(
        "used",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="committed usage in the period",
    ),
    Column(
        "reserved",
        BigInteger,
        nullable=False,
        server_default=text("0"),
        comment="open reservations in the period, not yet committed or released",
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("user_id", "metric", "period_start"),
    CheckConstraint("metric IN ('ai_edits', 'storage_bytes', 'projects')", name="metric_known"),
    CheckConstraint("used >= 0 AND reserved >= 0", name="not_negative"),
    comment="Usage per user, metric and period: committed (used) and held (reserved).",
)

usage_reservations = Table(
    "usage_reservations",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("metric", Text, nullable=False, comment="ai_edits, storage_bytes or projects"),
    Column(
        "period_start",
        DateTime(timezone=True),
        nullable=False,
        comment="the counter's period; 1970-01-01 for gauges",
    ),
    Column("idempotency_key", Text, nullable=False, comment="the caller's key"),
    Column("amount", BigInteger, nullable=False, comment="units reserved"),
    Column("state", Text, nullable=False, comment="reserved, committed or released"),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "settled_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when it was committed or released; NULL while reserved",
    ),
    UniqueConstraint("user_id", "metric", "idempotency_key"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("state IN ('reserved', 'committed', 'released')", name="state_known"),
    Index(
        "ix_usage_reservations_expires_at_open",
        "expires_at",
        postgresql_where=text(OPEN_RESERVATION),
    ),
    comment="Capacity held before a side effect, then committed or released (or expired).",
)

usage_ledger = Table(
    "usage_ledger",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("user_id", UUID(as_uuid=True), nullable=False, comment="identity user id"),
    Column("metric", Text, nullable=False, comment="ai_edits, storage_bytes or projects"),
    Column(
        "period_start",
        DateTime(timezone=True),
        nullable=False,
        comment="the counter's period; 1970-01-01 for gauges",
    ),
    Column("kind", Text, nullable=False, comment="commit or credit"),
    Column("delta", BigInteger, nullable=False, comment="change of `used`: + commit, - credit"),
    Column(
        "reservation_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the committed reservation; NULL for credits",
    ),
    Column("idempotency_key", Text, nullable=True, comment="a credit's caller key"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('commit', 'credit')", name="kind_known"),
    Index("ix_usage_ledger_user_id_metric_period_start", "user_id", "metric", "period_start"),
    Index(
        "uq_usage_ledger_credit_key",
        "user_id",
        "metric",
        "idempotency_key",
        unique=True,
        postgresql_where=text("kind = 'credit'"),
    ),
    Index(
        "uq_usage_ledger_reservation_id",
        "reservation_id",
        unique=True,
        postgresql_where=text("kind = 'commit'"),
    ),
    comment="Append-only record of every committed usage and credit; counters rebuild from it.",
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", Text, primary_key=True, comment="Stripe's event id (evt_...)"),
    Column(
        "type",
        Text,
        nullable=False,
        comment="Stripe's event type, e.g. customer.subscription.updated",
    ),
    Column("outcome", Text, nullable=False, comment="applied, ignored or unmatched"),
    Column(
        "stripe_subscription_id",
        Text,
        nullable=True,
        comment="the Stripe subscription (sub_...) the event is about, if any",
    ),
    Column(
        "received_at",
        DateTime(timezone=True),
        nullable=False,
        comment="when our webhook received the event",
    ),
    Column(
        "processed_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        comment="when the event was recorded as handled",
    ),
    comment="Every Stripe event applied, recorded in the same transaction (duplicates skip).",
)

tier_outbox = Table(
    "tier_outbox",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "user_id", UUID(as_uuid=True), nullable=False, comment="identity user id whose tier changed"
    ),
    Column("tier_code", Text, nullable=False, comment="the tier to set in identity"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column(
        "attempts",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="delivery attempts so far",
    ),
    Column(
        "next_attempt_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=func.now(),
        comment="the relay claims it only from then on; each claim pushes it to the retry time",
    ),
    Column(
        "delivered_at",
        DateTime(timezone=True),
        nullable=True,
        comment="when identity accepted it; NULL while undelivered",
    ),
    Index(
        "ix_tier_outbox_undelivered_created_at", "created_at", postgresql_where=text(UNDELIVERED)
    ),
    Index("ix_tier_outbox_user_id_created_at", "user_id", "created_at"),
    comment="Tier changes for identity (SetUserTier), written with the change, relayed after.",
)

event_cursors = event_cursor_table(metadata)
parked_events = parked_event_table(metadata)
deleted_users = tombstone_table(metadata)


@dataclass(frozen=True)
class Period:
    start: datetime.datetime
    end: datetime.datetime | None  # None for a gauge


@dataclass(frozen=True)
class Counter:
    metric: Metric
    period: Period
    used: int
    reserved: int
    limit: int  # 0 = unlimited


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    user_id: uuid.UUID
    metric: Metric
    period_start: datetime.datetime
    idempotency_key: str
    amount: int
    state: ReservationState
    expires_at: datetime.datetime


@dataclass(frozen=True)
class Subscription:
    user_id: uuid.UUID
    stripe_subscription_id: str | None
    tier_code: str
    status: str
    current_period_start: datetime.datetime | None
    current_period_end: datetime.datetime | None
    cancel_at_period_end: bool

    @property
    def grants_tier(self) -> bool:
        return self.status in GRANTING_STATUSES or self.status == MANUAL_STATUS

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES
