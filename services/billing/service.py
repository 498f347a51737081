"""Billing's rules on plain values: periods, limits, reservations, subscriptions.

Methods take the caller's `AsyncSession` first and never commit (ADR 0011). Nothing here
calls a peer or Stripe: the tier (limits) is looked up before the unit of work opens and
passed in, and Stripe's answers arrive as plain dicts (workflows.py does the calling).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import Clock, utc_now
from runtime.errors import FailedPrecondition, InvalidArgument, QuotaExceeded
from runtime.metrics import Metrics
from runtime.peers.identity import TierInfo
from runtime.tombstones import Tombstones
from runtime.usage import Metric
from services.billing.models import (
    FINAL_STATUSES,
    FREE_TIER,
    GAUGE_PERIOD,
    MANUAL_STATUS,
    Counter,
    LedgerKind,
    Period,
    Reservation,
    ReservationState,
    Subscription,
)
from services.billing.repository import BillingRepository

log = logging.getLogger("pixelshop.billing")

RESERVATIONS_METRIC = "quota_reservations_total"
RESERVATIONS_HELP = "Usage reservations by metric and outcome (granted, denied, repeated)"

_LABELS = {
    Metric.AI_EDITS: "AI edits",
    Metric.STORAGE_BYTES: "storage",
    Metric.PROJECTS: "projects",
}


def calendar_month(now: datetime.datetime) -> Period:
    start = now.astimezone(datetime.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Period(start, end)


def limit_of(tier: TierInfo, metric: Metric) -> int:
    """The tier's limit for a metric; 0 means unlimited."""
    return {
        Metric.AI_EDITS: tier.ai_edits_per_month,
        Metric.STORAGE_BYTES: tier.storage_bytes,
        Metric.PROJECTS: tier.max_projects,
    }[metric]


def _amount(metric: Metric, value: int) -> str:
    if metric is Metric.STORAGE_BYTES:
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if abs(value) >= size:
                return f"{value / size:.2f} {unit}".replace(".00 ", " ")
        return f"{value} bytes"
    noun = {Metric.AI_EDITS: "AI edit", Metric.PROJECTS: "project"}[metric]
    return f"{value:,} {noun}{'' if value == 1 else 's'}"


def effective_subscription(subscriptions: list[Subscription]) -> Subscription | None:
    """What decides the user's tier: the most recently changed subscription that grants
    one (a paid Stripe subscription, or a tier set by `set-tier`); None means Free."""
    for subscription in subscriptions:  # newest first
        if subscription.grants_tier:
            return subscription
    return None


def effective_tier(subscriptions: list[Subscription]) -> str:
    chosen = effective_subscription(subscriptions)
    return chosen.tier_code if chosen else FREE_TIER


def usage_period(
    metric: Metric, subscriptions: list[Subscription], now: datetime.datetime
) -> Period:
    """Gauges never reset. AI edits count per period: the paid subscription's current
    period while it covers `now`, else the UTC calendar month."""
    if metric.is_gauge:
        return Period(GAUGE_PERIOD, None)
    chosen = effective_subscription(subscriptions)
    if (
        chosen is not None
        and chosen.stripe_subscription_id
        and chosen.current_period_start
        and chosen.current_period_end
        and chosen.current_period_start <= now < chosen.current_period_end
    ):
        return Period(chosen.current_period_start, chosen.current_period_end)
    return calendar_month(now)


@dataclass(frozen=True)
class UsageSummary:
    tier: str
    period: Period
    counters: list[Counter]


class UsageService:
    def __init__(
        self,
        *,
        tombstones: Tombstones,
        clock: Clock = utc_now,
        default_ttl_seconds: int = 900,
        max_ttl_seconds: int = 86_400,
        metrics: Metrics | None = None,
    ) -> None:
        self._tombstones = tombstones
        self._clock = clock
        self._default_ttl = default_ttl_seconds
        self._max_ttl = max_ttl_seconds
        self._metrics = metrics

    def _count(self, metric: Metric, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.increment(
                RESERVATIONS_METRIC, RESERVATIONS_HELP, metric=metric.value, outcome=outcome
            )

    async def reserve(
        self,
        session: AsyncSession,
        *,
        user_id: uuid.UUID,
        metric: Metric,
        amount: int,
        key: str,
        tier: TierInfo,
        ttl_seconds: int = 0,
    ) -> Reservation:
        """Holds `amount` of `metric` under the tier's limit, or raises QuotaExceeded.

        The same key answers the same reservation (in whatever state it is now); the same
        key with another amount is refused."""
        if amount <= 0:
            raise InvalidArgument("amount", "must be positive")
        ttl = ttl_seconds or self._default_ttl
        if not 1 <= ttl <= self._max_ttl:
            raise InvalidArgument("ttl_seconds", f"must be 1-{self._max_ttl}")
        await self._tombstones.guard_write(session, user_id)
        repository = BillingRepository(session)
        now = self._clock()
        subscriptions = [] if metric.is_gauge else await repository.subscriptions_of(user_id)
        period = usage_period(metric, subscriptions, now)
        reservation = await repository.insert_reservation(
            user_id=user_id,
            metric=metric,
            period_start=period.start,
            key=key,
            amount=amount,
            expires_at=now + datetime.timedelta(seconds=ttl),
            now=now,
        )
        if reservation is None:
            existing = await repository.reservation_by_key(user_id, metric, key)
            assert existing is not None
            if existing.amount != amount:
                raise InvalidArgument(
                    "idempotency_key",
                    f"was used for a reservation of {existing.amount}, not {amount}",
                    reason="IDEMPOTENCY_KEY_REUSED",
                )
            self._count(metric, "repeated")
            return existing
        limit = limit_of(tier, metric)
        granted = await repository.try_reserve(user_id, metric, period.start, amount, limit, now)
        if not granted:
            # Perhaps the period's first usage: the counter exists once this insert, or a
            # concurrent first reservation's (which the insert waits for), has made it;
            # then ask again. Only the limit can refuse the second time.
            await repository.ensure_counter(user_id, metric, period.start)
            granted = await repository.try_reserve(
                user_id, metric, period.start, amount, limit, now
            )
        if not granted:
            used, reserved = await repository.counter(user_id, metric, period.start)
            self._count(metric, "denied")
            raise self._exceeded(tier, metric, limit, used, reserved, amount)
        self._count(metric, "granted")
        return reservation

    @staticmethod
    def _exceeded(
        tier: TierInfo, metric: Metric, limit: int, used: int, reserved: int, amount: int
    ) -> QuotaExceeded:
        over = used + reserved + amount - limit
        held = (
            f" and {_amount(metric, reserved)} held by uploads or edits in flight"
            if reserved
            else ""
        )
        message = (
            f"{_LABELS[metric]} limit reached: the {tier.name or tier.code} plan allows "
            f"{_amount(metric, limit)}; you have used {_amount(metric, used)}{held}, so this "
            f"{_amount(metric, amount)} would go {_amount(metric, over)} over the limit"
        )
        return QuotaExceeded(
            message,
            metadata={
                "metric": metric.value,
                "limit": str(limit),
                "used": str(used),
                "reserved": str(reserved),
                "requested": str(amount),
                "over_by": str(over),
                "tier": tier.code,
            },
        )

    async def commit(self, session: AsyncSession, reservation_id: uuid.UUID) -> Reservation | None:
        """Turns an open reservation into usage; None when billing holds no such
        reservation (it went with its account)."""
        repository = BillingRepository(session)
        now = self._clock()
        settled = await repository.settle_reservation(
            reservation_id, ReservationState.COMMITTED, now, unexpired=True
        )
        if settled is None:
            current = await repository.reservation(reservation_id)
            if current is None:
                # Dropped with a deleted account (or never made): nothing is counted, and
                # the answer's RELEASED state says so; the caller's clean-up can finish.
                return None
            if current.state is ReservationState.COMMITTED:
                return current
            raise FailedPrecondition(
                "the reservation expired or was released; reserve again",
                reason="RESERVATION_EXPIRED",
            )
        await repository.move_counter(
            settled.user_id,
            settled.metric,
            settled.period_start,
            used=settled.amount,
            reserved=-settled.amount,
            now=now,
        )
        await repository.append_ledger(
            user_id=settled.user_id,
            metric=settled.metric,
            period_start=settled.period_start,
            kind=LedgerKind.COMMIT,
            delta=settled.amount,
            reservation_id=settled.id,
            now=now,
        )
        return settled

    async def release(self, session: AsyncSession, reservation_id: uuid.UUID) -> Reservation | None:
        """Gives an open reservation back; None when there is no such reservation."""
        repository = BillingRepository(session)
        now = self._clock()
        settled = await repository.settle_reservation(
            reservation_id, ReservationState.RELEASED, now, unexpired=False
        )
        if settled is None:
            current = await repository.reservation(reservation_id)
            if current is None:
                # Never made, or dropped with a deleted account: nothing is held, which is
                # all a release asks for (callers clean up without special cases).
                return None
            return current  # already released (or committed: a credit gives that back)
        await repository.move_counter(
            settled.user_id,
            settled.metric,
            settled.period_start,
            reserved=-settled.amount,
            now=now,
        )
        return settled

    async def credit(
        self, session: AsyncSession, *, user_id: uuid.UUID, metric: Metric, amount: int, key: str
    ) -> int:
        """Lowers a gauge (a deleted asset's bytes, a deleted project), once per key;
        answers what was taken off (never below zero)."""
        if not metric.is_gauge:
            raise InvalidArgument("metric", "only storage_bytes and projects can be credited")
        if amount <= 0:
            raise InvalidArgument("amount", "must be positive")
        repository = BillingRepository(session)
        now = self._clock()
        if await self._tombstones.is_recorded(session, user_id):
            return 0  # the account and its counters are gone: nothing to give back
        await repository.ensure_counter(user_id, metric, GAUGE_PERIOD)
        used = await repository.lock_used(user_id, metric, GAUGE_PERIOD)
        applied = min(amount, used)
        inserted = await repository.append_ledger(
            user_id=user_id,
            metric=metric,
            period_start=GAUGE_PERIOD,
            kind=LedgerKind.CREDIT,
            delta=-applied,
            key=key,
            now=now,
        )
        if not inserted:
            return 0
        await repository.move_counter(user_id, metric, GAUGE_PERIOD, used=-applied, now=now)
        return applied

    async def expire(self, session: AsyncSession, limit: int) -> int:
        """Releases a batch of reservations past their expiry; answers how many."""
        repository = BillingRepository(session)
        now = self._clock()
        expired = await repository.claim_expired(now, limit)
        for reservation in expired:
            await repository.move_counter(
                reservation.user_id,
                reservation.metric,
                reservation.period_start,
                reserved=-reservation.amount,
                now=now,
            )
        return len(expired)

    async def summary(
        self, session: AsyncSession, user_id: uuid.UUID, tier: TierInfo
    ) -> UsageSummary:
        repository = BillingRepository(session)
        now = self._clock()
        subscriptions = await repository.subscriptions_of(user_id)
        periods = {metric: usage_period(metric, subscriptions, now) for metric in Metric}
        values = await repository.counters(
            user_id, [(metric, period.start) for metric, period in periods.items()]
        )
        counters = [
            Counter(
                metric=metric,
                period=periods[metric],
                used=values.get(metric, (0, 0))[0],
                reserved=values.get(metric, (0, 0))[1],
                limit=limit_of(tier, metric),
            )
            for metric in Metric
        ]
        return UsageSummary(tier.code, periods[Metric.AI_EDITS], counters)


@dataclass(frozen=True)
class SubscriptionView:
    tier: str
    status: str
    current_period_start: datetime.datetime | None
    current_period_end: datetime.datetime | None
    cancel_at_period_end: bool


@dataclass(frozen=True)
class StripeSubscriptionState:
    """What a webhook decides from: the subscription as Stripe answers it now."""

    id: str
    customer_id: str
    status: str
    price_ids: tuple[str, ...]
    metadata: Mapping[str, str]
    current_period_start: datetime.datetime | None
    current_period_end: datetime.datetime | None
    cancel_at_period_end: bool

    @property
    def final(self) -> bool:
        """Ended for good at Stripe: nothing is left to cancel."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_stripe(cls, data: Mapping[str, Any]) -> StripeSubscriptionState:
        """Periods from the items first (API 2025-03-31 and later), the top level after."""
        items = (data.get("items") or {}).get("data") or []
        starts = [i["current_period_start"] for i in items if i.get("current_period_start")]
        ends = [i["current_period_end"] for i in items if i.get("current_period_end")]
        start = min(starts) if starts else data.get("current_period_start")
        end = max(ends) if ends else data.get("current_period_end")
        prices = tuple(
            str((item.get("price") or {}).get("id") or "")
            for item in items
            if (item.get("price") or {}).get("id")
        )
        customer = data.get("customer") or ""
        if isinstance(customer, Mapping):
            customer = customer.get("id") or ""
        return cls(
            id=str(data["id"]),
            customer_id=str(customer),
            status=str(data.get("status") or ""),
            price_ids=prices,
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            current_period_start=_from_epoch(start),
            current_period_end=_from_epoch(end),
            cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        )


def _from_epoch(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromtimestamp(int(value), datetime.UTC)


@dataclass(frozen=True)
class TierChange:
    user_id: uuid.UUID
    tier_code: str


class SubscriptionService:
    def __init__(self, *, tier_prices: Mapping[str, str], clock: Clock = utc_now) -> None:
        self._tier_of_price = {price: tier for tier, price in tier_prices.items()}
        self._clock = clock

    async def view(self, session: AsyncSession, user_id: uuid.UUID) -> SubscriptionView:
        subscriptions = await BillingRepository(session).subscriptions_of(user_id)
        chosen = effective_subscription(subscriptions) or next(iter(subscriptions), None)
        if chosen is None or not chosen.grants_tier:
            latest = chosen
            return SubscriptionView(
                FREE_TIER,
                latest.status if latest else "none",
                None,
                None,
                False,
            )
        return SubscriptionView(
            chosen.tier_code,
            "active" if chosen.status == MANUAL_STATUS else chosen.status,
            chosen.current_period_start,
            chosen.current_period_end,
            chosen.cancel_at_period_end,
        )

    async def current_tier(self, session: AsyncSession, user_id: uuid.UUID) -> str:
        return effective_tier(await BillingRepository(session).subscriptions_of(user_id))

    async def customer_id(self, session: AsyncSession, user_id: uuid.UUID) -> str | None:
        return await BillingRepository(session).customer_id(user_id)

    async def record_customer(
        self, session: AsyncSession, user_id: uuid.UUID, stripe_customer_id: str
    ) -> str:
        """Keeps the first customer recorded for the user; answers the one kept."""
        repository = BillingRepository(session)
        await repository.insert_customer(user_id, stripe_customer_id)
        kept = await repository.customer_id(user_id)
        assert kept is not None
        return kept

    async def user_of(
        self, session: AsyncSession, state: StripeSubscriptionState, fallback: str
    ) -> uuid.UUID | None:
        """Our user: the subscription's metadata, else the customer we created, else the
        checkout session's client_reference_id."""
        for candidate in (state.metadata.get("user_id", ""), fallback):
            try:
                return uuid.UUID(candidate)
            except ValueError:
                continue
        return await BillingRepository(session).user_of_customer(state.customer_id)

    async def apply(
        self, session: AsyncSession, user_id: uuid.UUID, state: StripeSubscriptionState
    ) -> tuple[str, TierChange | None]:
        """Records Stripe's latest state of one subscription; answers the outcome and the
        user's tier change, if any (the caller puts it in the outbox in this transaction).
        A canceled subscription stays canceled whatever arrives later."""
        repository = BillingRepository(session)
        before = effective_tier(await repository.subscriptions_of(user_id))
        existing = await repository.lock_subscription(state.id)
        if existing is not None and existing.final:
            return "final", None
        await repository.upsert_subscription(
            Subscription(
                user_id=user_id,
                stripe_subscription_id=state.id,
                tier_code=self._tier_of(state, existing),
                status=state.status,
                current_period_start=state.current_period_start,
                current_period_end=state.current_period_end,
                cancel_at_period_end=state.cancel_at_period_end,
            ),
            self._clock(),
        )
        after = effective_tier(await repository.subscriptions_of(user_id))
        change = None
        if after != before:
            await repository.enqueue_tier(user_id, after, self._clock())
            change = TierChange(user_id, after)
        return "applied", change

    def _tier_of(self, state: StripeSubscriptionState, existing: Subscription | None) -> str:
        return next(
            (self._tier_of_price[p] for p in state.price_ids if p in self._tier_of_price),
            state.metadata.get("tier") or (existing.tier_code if existing else FREE_TIER),
        )

    async def record_ended(
        self, session: AsyncSession, user_id: uuid.UUID, state: StripeSubscriptionState
    ) -> None:
        """A deleted account's subscription, after billing canceled it at Stripe: kept as
        ended (final, so nothing later records it live again), with no tier change (the
        account is gone from identity)."""
        repository = BillingRepository(session)
        existing = await repository.lock_subscription(state.id)
        if existing is not None and existing.final:
            return
        await repository.upsert_subscription(
            Subscription(
                user_id=user_id,
                stripe_subscription_id=state.id,
                tier_code=self._tier_of(state, existing),
                status=state.status if state.final else "canceled",
                current_period_start=state.current_period_start,
                current_period_end=state.current_period_end,
                cancel_at_period_end=False,
            ),
            self._clock(),
        )

    async def record_manual_tier(
        self, session: AsyncSession, user_id: uuid.UUID, tier_code: str
    ) -> None:
        """A tier identity's `set-tier` command set: identity has it already (no outbox)."""
        await BillingRepository(session).upsert_subscription(
            Subscription(
                user_id=user_id,
                stripe_subscription_id=None,
                tier_code=tier_code,
                status=MANUAL_STATUS,
                current_period_start=None,
                current_period_end=None,
                cancel_at_period_end=False,
            ),
            self._clock(),
        )

    async def forget_user(self, session: AsyncSession, user_id: uuid.UUID) -> list[str]:
        """Account deletion, after Stripe canceled: drops counters and reservations, marks
        subscriptions canceled; the ledger and processed events stay."""
        repository = BillingRepository(session)
        await repository.purge_usage(user_id)
        await repository.cancel_subscriptions(user_id, self._clock())
        return []

    async def cancellable(self, session: AsyncSession, user_id: uuid.UUID) -> list[str]:
        return [
            s.stripe_subscription_id
            for s in await BillingRepository(session).subscriptions_of(user_id)
            if s.stripe_subscription_id and not s.final
        ]
