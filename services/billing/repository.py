"""Every SQL statement of billing. Callers own the transaction; nothing here commits."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, any_, delete, func, insert, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.usage import Metric
from services.billing.models import (
    OPEN_RESERVATION,
    UNDELIVERED,
    LedgerKind,
    Reservation,
    ReservationState,
    Subscription,
    customers,
    stripe_events,
    subscriptions,
    tier_outbox,
    usage_counters,
    usage_ledger,
    usage_reservations,
)


def _reservation(row: Any) -> Reservation:
    return Reservation(
        id=row.id,
        user_id=row.user_id,
        metric=Metric(row.metric),
        period_start=row.period_start,
        idempotency_key=row.idempotency_key,
        amount=row.amount,
        state=ReservationState(row.state),
        expires_at=row.expires_at,
    )


def _subscription(row: Any) -> Subscription:
    return Subscription(
        user_id=row.user_id,
        stripe_subscription_id=row.stripe_subscription_id,
        tier_code=row.tier_code,
        status=row.status,
        current_period_start=row.current_period_start,
        current_period_end=row.current_period_end,
        cancel_at_period_end=row.cancel_at_period_end,
    )


class BillingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # --- usage -----------------------------------------------------------------------

    async def ensure_counter(
        self, user_id: uuid.UUID, metric: Metric, period_start: datetime.datetime
    ) -> bool:
        """Answers whether the counter was created now (False: it existed)."""
        result = await self._session.execute(
            pg_insert(usage_counters)
            .values(user_id=user_id, metric=metric.value, period_start=period_start)
            .on_conflict_do_nothing(index_elements=["user_id", "metric", "period_start"])
            .returning(usage_counters.c.id)
        )
        return result.first() is not None

    async def try_reserve(
        self,
        user_id: uuid.UUID,
        metric: Metric,
        period_start: datetime.datetime,
        amount: int,
        limit: int,
        now: datetime.datetime,
    ) -> bool:
        """The one conditional UPDATE: holds `amount` only if it fits under `limit`
        (0 = unlimited). Concurrent callers queue on the row lock and each re-checks the
        condition against the committed row, so the limit holds under any concurrency."""
        c = usage_counters.c
        condition: list[Any] = [
            c.user_id == user_id,
            c.metric == metric.value,
            c.period_start == period_start,
        ]
        if limit > 0:
            condition.append(c.used + c.reserved + amount <= limit)
        result = await self._session.execute(
            update(usage_counters)
            .where(*condition)
            .values(reserved=c.reserved + amount, updated_at=now)
            .returning(c.id)
        )
        return result.first() is not None

    async def counter(
        self, user_id: uuid.UUID, metric: Metric, period_start: datetime.datetime
    ) -> tuple[int, int]:
        c = usage_counters.c
        row = (
            await self._session.execute(
                select(c.used, c.reserved).where(
                    c.user_id == user_id, c.metric == metric.value, c.period_start == period_start
                )
            )
        ).first()
        return (int(row.used), int(row.reserved)) if row else (0, 0)

    async def move_counter(
        self,
        user_id: uuid.UUID,
        metric: Metric,
        period_start: datetime.datetime,
        *,
        used: int = 0,
        reserved: int = 0,
        now: datetime.datetime,
    ) -> None:
        c = usage_counters.c
        await self._session.execute(
            update(usage_counters)
            .where(c.user_id == user_id, c.metric == metric.value, c.period_start == period_start)
            .values(used=c.used + used, reserved=c.reserved + reserved, updated_at=now)
        )

    async def lock_used(
        self, user_id: uuid.UUID, metric: Metric, period_start: datetime.datetime
    ) -> int:
        c = usage_counters.c
        value = await self._session.scalar(
            select(c.used)
            .where(c.user_id == user_id, c.metric == metric.value, c.period_start == period_start)
            .with_for_update()
        )
        return int(value or 0)

    async def insert_reservation(
        self,
        *,
        user_id: uuid.UUID,
        metric: Metric,
        period_start: datetime.datetime,
        key: str,
        amount: int,
        expires_at: datetime.datetime,
        now: datetime.datetime,
    ) -> Reservation | None:
        """None when a reservation with this key exists already (ours or a concurrent one)."""
        result = await self._session.execute(
            pg_insert(usage_reservations)
            .values(
                id=uuid.uuid4(),
                user_id=user_id,
                metric=metric.value,
                period_start=period_start,
                idempotency_key=key,
                amount=amount,
                state=ReservationState.RESERVED.value,
                expires_at=expires_at,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "metric", "idempotency_key"])
            .returning(*usage_reservations.c)
        )
        row = result.first()
        return _reservation(row) if row else None

    async def reservation_by_key(
        self, user_id: uuid.UUID, metric: Metric, key: str
    ) -> Reservation | None:
        r = usage_reservations.c
        row = (
            await self._session.execute(
                select(usage_reservations).where(
                    r.user_id == user_id, r.metric == metric.value, r.idempotency_key == key
                )
            )
        ).first()
        return _reservation(row) if row else None

    async def reservation(self, reservation_id: uuid.UUID) -> Reservation | None:
        row = (
            await self._session.execute(
                select(usage_reservations).where(usage_reservations.c.id == reservation_id)
            )
        ).first()
        return _reservation(row) if row else None

    async def settle_reservation(
        self,
        reservation_id: uuid.UUID,
        state: ReservationState,
        now: datetime.datetime,
        *,
        unexpired: bool,
    ) -> Reservation | None:
        """Moves an open reservation to `state`; None when it was not open (any more)."""
        r = usage_reservations.c
        condition: list[Any] = [r.id == reservation_id, text(OPEN_RESERVATION)]
        if unexpired:
            condition.append(r.expires_at > now)
        row = (
            await self._session.execute(
                update(usage_reservations)
                .where(*condition)
                .values(state=state.value, settled_at=now)
                .returning(*usage_reservations.c)
            )
        ).first()
        return _reservation(row) if row else None

    async def claim_expired(self, now: datetime.datetime, limit: int) -> list[Reservation]:
        """Releases a batch of expired open reservations (skipping rows others hold)."""
        r = usage_reservations.c
        expired = (
            select(r.id)
            .where(text(OPEN_RESERVATION), r.expires_at <= now)
            .order_by(r.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._session.execute(
            update(usage_reservations)
            .where(r.id == any_(func.array(expired)))  # as claim_tier_changes
            .values(state=ReservationState.RELEASED.value, settled_at=now)
            .returning(*usage_reservations.c)
        )
        return [_reservation(row) for row in rows]

    async def append_ledger(
        self,
        *,
        user_id: uuid.UUID,
        metric: Metric,
        period_start: datetime.datetime,
        kind: LedgerKind,
        delta: int,
        now: datetime.datetime,
        reservation_id: uuid.UUID | None = None,
        key: str | None = None,
    ) -> bool:
        """False when this credit key (or reservation's commit) is in the ledger already."""
        result = await self._session.execute(
            pg_insert(usage_ledger)
            .values(
                user_id=user_id,
                metric=metric.value,
                period_start=period_start,
                kind=kind.value,
                delta=delta,
                reservation_id=reservation_id,
                idempotency_key=key,
                created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(usage_ledger.c.id)
        )
        return result.first() is not None

    async def counters(
        self, user_id: uuid.UUID, wanted: Sequence[tuple[Metric, datetime.datetime]]
    ) -> dict[Metric, tuple[int, int]]:
        c = usage_counters.c
        if not wanted:
            return {}
        clauses = [and_(c.metric == m.value, c.period_start == p) for m, p in wanted]
        rows = await self._session.execute(
            select(c.metric, c.used, c.reserved).where(c.user_id == user_id, or_(*clauses))
        )
        return {Metric(row.metric): (int(row.used), int(row.reserved)) for row in rows}

    async def purge_usage(self, user_id: uuid.UUID) -> None:
        await self._session.execute(
            delete(usage_reservations).where(usage_reservations.c.user_id == user_id)
        )
        await self._session.execute(
            delete(usage_counters).where(usage_counters.c.user_id == user_id)
        )

    # --- customers and subscriptions --------------------------------------------------

    async def customer_id(self, user_id: uuid.UUID) -> str | None:
        value = await self._session.scalar(
            select(customers.c.stripe_customer_id).where(customers.c.user_id == user_id)
        )
        return str(value) if value else None

    async def user_of_customer(self, stripe_customer_id: str) -> uuid.UUID | None:
        value = await self._session.scalar(
            select(customers.c.user_id).where(customers.c.stripe_customer_id == stripe_customer_id)
        )
        return value if isinstance(value, uuid.UUID) else None

    async def insert_customer(self, user_id: uuid.UUID, stripe_customer_id: str) -> None:
        await self._session.execute(
            pg_insert(customers)
            .values(user_id=user_id, stripe_customer_id=stripe_customer_id)
            .on_conflict_do_nothing()
        )

    async def subscriptions_of(self, user_id: uuid.UUID) -> list[Subscription]:
        s = subscriptions.c
        rows = await self._session.execute(
            select(subscriptions)
            .where(s.user_id == user_id)
            .order_by(s.updated_at.desc(), s.created_at.desc())
        )
        return [_subscription(row) for row in rows]

    async def lock_subscription(self, stripe_subscription_id: str) -> Subscription | None:
        row = (
            await self._session.execute(
                select(subscriptions)
                .where(subscriptions.c.stripe_subscription_id == stripe_subscription_id)
                .with_for_update()
            )
        ).first()
        return _subscription(row) if row else None

    async def upsert_subscription(self, subscription: Subscription, now: datetime.datetime) -> None:
        values = {
            "user_id": subscription.user_id,
            "tier_code": subscription.tier_code,
            "status": subscription.status,
            "current_period_start": subscription.current_period_start,
            "current_period_end": subscription.current_period_end,
            "cancel_at_period_end": subscription.cancel_at_period_end,
            "updated_at": now,
        }
        if subscription.stripe_subscription_id is None:
            statement = pg_insert(subscriptions).values(id=uuid.uuid4(), created_at=now, **values)
            statement = statement.on_conflict_do_update(
                index_elements=["user_id"],
                index_where=text("stripe_subscription_id IS NULL"),
                set_=values,
            )
        else:
            statement = pg_insert(subscriptions).values(
                id=uuid.uuid4(),
                stripe_subscription_id=subscription.stripe_subscription_id,
                created_at=now,
                **values,
            )
            statement = statement.on_conflict_do_update(
                index_elements=["stripe_subscription_id"], set_=values
            )
        await self._session.execute(statement)

    async def cancel_subscriptions(self, user_id: uuid.UUID, now: datetime.datetime) -> None:
        await self._session.execute(
            update(subscriptions)
            .where(subscriptions.c.user_id == user_id)
            .values(status="canceled", cancel_at_period_end=False, updated_at=now)
        )

    # --- Stripe events ----------------------------------------------------------------

    async def event_seen(self, event_id: str) -> bool:
        value = await self._session.scalar(select(literal(1)).where(stripe_events.c.id == event_id))
        return value is not None

    async def record_event(
        self,
        *,
        event_id: str,
        type_: str,
        outcome: str,
        stripe_subscription_id: str | None,
        received_at: datetime.datetime,
    ) -> bool:
        """False for a duplicate: the event was recorded (and applied) before."""
        result = await self._session.execute(
            pg_insert(stripe_events)
            .values(
                id=event_id,
                type=type_,
                outcome=outcome,
                stripe_subscription_id=stripe_subscription_id,
                received_at=received_at,
            )
            .on_conflict_do_nothing()
            .returning(stripe_events.c.id)
        )
        return result.first() is not None

    # --- tier outbox ------------------------------------------------------------------

    async def enqueue_tier(
        self, user_id: uuid.UUID, tier_code: str, now: datetime.datetime
    ) -> uuid.UUID:
        entry_id = uuid.uuid4()
        await self._session.execute(
            insert(tier_outbox).values(
                id=entry_id,
                user_id=user_id,
                tier_code=tier_code,
                created_at=now,
                next_attempt_at=now,
            )
        )
        return entry_id

    async def claim_tier_changes(
        self, now: datetime.datetime, retry_at: datetime.datetime, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        """Claims a batch of undelivered tier changes (oldest first) by pushing their next
        attempt to `retry_at`; the claim commits before any call to identity."""
        o = tier_outbox.c
        due = (
            select(o.id)
            .where(text(UNDELIVERED), o.next_attempt_at <= now)
            .order_by(o.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        # `= ANY(ARRAY(…))`, not `IN (…)`: the claimed ids are computed once and each is a
        # primary-key probe; with IN the planner may hash-join the subquery with a scan of
        # the whole table, which nothing prunes (docs/database.md, the scale check).
        rows = await self._session.execute(
            update(tier_outbox)
            .where(o.id == any_(func.array(due)))
            .values(next_attempt_at=retry_at, attempts=o.attempts + 1)
            .returning(o.id, o.user_id, o.tier_code, o.created_at)
        )
        return [(r.id, r.user_id, r.tier_code) for r in sorted(rows, key=lambda r: r.created_at)]

    async def superseded(self, entry_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether a newer tier change for the same user waits: only the latest matters."""
        o = tier_outbox.c
        mine = select(o.created_at).where(o.id == entry_id).scalar_subquery()
        value = await self._session.scalar(
            select(func.count())
            .select_from(tier_outbox)
            .where(o.user_id == user_id, o.id != entry_id, o.created_at > mine)
        )
        return bool(value)

    async def mark_delivered(self, entry_id: uuid.UUID, now: datetime.datetime) -> None:
        await self._session.execute(
            update(tier_outbox).where(tier_outbox.c.id == entry_id).values(delivered_at=now)
        )

    async def set_event_outcome(self, event_id: str, outcome: str) -> None:
        await self._session.execute(
            update(stripe_events).where(stripe_events.c.id == event_id).values(outcome=outcome)
        )
