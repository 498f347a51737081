"""Billing's operations with side effects outside its database, as committed steps.

    checkout:  [read: customer?] -> create Stripe customer (key customer:<user>)
               -> [commit: customers row] -> create Checkout Session (keyed) -> url
    webhook:   verify signature on the raw bytes -> [read: seen?] -> fetch the latest
               subscription from Stripe -> [commit, under the user's tombstone lock:
               event id + new state + tier outbox] -> relay the tier change to identity
               -> [commit: delivered]
               (the user's tombstone committed first: cancel at Stripe (key cancel:<sub>)
               -> [commit: event id + the subscription, ended])
    deletion:  [commit: tombstone] -> cancel Stripe subscriptions (keyed)
               -> [commit: counters and reservations dropped; tombstone purged]

No step calls Stripe or a peer with a transaction open (ADR 0011). The sweeper resumes
each recorded state: open reservations past their expiry, undelivered tier changes,
tombstones whose purge is owed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import Clock, utc_now
from runtime.db import Database
from runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtime.events import TIER_SET_BY_OPERATOR, Event
from runtime.metrics import Metrics
from runtime.peers.identity import CachedTierLookup
from runtime.periodic import every
from runtime.tombstones import MalformedEvent, Tombstones
from runtime.workflow import checkpoint
from services.billing.errors import BadWebhook, BillingNotConfigured
from services.billing.models import FREE_TIER
from services.billing.repository import BillingRepository
from services.billing.service import StripeSubscriptionState, SubscriptionService, UsageService
from services.billing.settings import BillingSettings
from services.billing.stripe_api import StripeApi

log = logging.getLogger("pixelshop.billing.workflows")

WEBHOOK_METRIC = "stripe_webhook_events_total"
WEBHOOK_HELP = "Stripe webhook events by type and outcome"
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
INVOICE_EVENTS = ("invoice.paid", "invoice.payment_failed")
CHECKOUT_COMPLETED = "checkout.session.completed"
HANDLED_EVENTS = (CHECKOUT_COMPLETED, *SUBSCRIPTION_EVENTS, *INVOICE_EVENTS)
RELAY_RETRY = datetime.timedelta(seconds=30)


def _reference(value: Any) -> str:
    """A Stripe reference is an id string, or the object itself when expanded."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def subscription_reference(event: dict[str, Any]) -> tuple[str, str]:
    """The subscription an event is about, and a user id it names (checkout only)."""
    kind = event.get("type")
    obj = (event.get("data") or {}).get("object") or {}
    if kind == CHECKOUT_COMPLETED:
        user = str(
            obj.get("client_reference_id") or (obj.get("metadata") or {}).get("user_id") or ""
        )
        return _reference(obj.get("subscription")), user
    if kind in SUBSCRIPTION_EVENTS:
        return _reference(obj.get("id")), ""
    if kind in INVOICE_EVENTS:
        # API 2025-03-31 and later: invoice.parent.subscription_details.subscription.
        details = ((obj.get("parent") or {}).get("subscription_details")) or {}
        return _reference(details.get("subscription") or obj.get("subscription")), ""
    return "", ""


@dataclass(frozen=True)
class SweepReport:
    expired_reservations: int
    tier_changes_relayed: int
    users_purged: int


class BillingWorkflows:
    def __init__(
        self,
        *,
        database: Database,
        settings: BillingSettings,
        usage: UsageService,
        subscriptions: SubscriptionService,
        tiers: CachedTierLookup,
        identity: Any,
        tombstones: Tombstones,
        stripe_api: StripeApi | None,
        metrics: Metrics | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._database = database
        self._settings = settings
        self._usage = usage
        self._subscriptions = subscriptions
        self._tiers = tiers
        self._identity = identity
        self._tombstones = tombstones
        self._stripe = stripe_api
        self._metrics = metrics
        self._clock = clock

    def _stripe_or_refuse(self) -> StripeApi:
        if self._stripe is None:
            raise BillingNotConfigured()
        return self._stripe

    # --- checkout and portal ----------------------------------------------------------

    async def checkout(
        self,
        user_id: uuid.UUID,
        tier: str,
        *,
        success_url: str,
        cancel_url: str,
        request_key: str,
    ) -> str:
        stripe_api = self._stripe_or_refuse()
        prices = self._settings.tier_prices
        known = sorted({FREE_TIER, *prices})
        if tier not in known:
            raise InvalidArgument("tier", f"unknown tier {tier!r}; one of: {', '.join(known)}")
        price = prices.get(tier)
        if not price:
            raise InvalidArgument("tier", f"the {tier} tier cannot be bought")
        identity_tier = (await self._tiers.tier(user_id)).code
        async with self._database.transaction() as session:
            # Refused once the tombstone is recorded (not only once this replica's memory
            # knows it). A checkout paid after a deletion still ends canceled: the webhook
            # cancels a deleted account's subscription (`_end_for_deleted_user`).
            await self._tombstones.guard_write(session, user_id)
            billing_tier = await self._subscriptions.current_tier(session, user_id)
            customer_id = await self._subscriptions.customer_id(session, user_id)
        if tier in (identity_tier, billing_tier):
            raise InvalidArgument("tier", f"you are already on the {tier} tier")
        if customer_id is None:
            created = await stripe_api.create_customer(str(user_id), f"customer:{user_id}")
            await checkpoint("checkout.customer_created")
            async with self._database.transaction() as session:
                await self._tombstones.guard_write(session, user_id)
                customer_id = await self._subscriptions.record_customer(session, user_id, created)
            await checkpoint("checkout.customer_recorded")
        key_source = "|".join([str(user_id), tier, price, success_url, cancel_url, request_key])
        key = (
            "checkout:" + hashlib.sha256(key_source.encode()).hexdigest()
            if request_key
            else f"checkout:{uuid.uuid4()}"
        )
        return await stripe_api.create_checkout_session(
            customer_id=customer_id,
            user_id=str(user_id),
            tier=tier,
            price_id=price,
            success_url=success_url,
            cancel_url=cancel_url,
            idempotency_key=key,
        )

    async def portal(self, user_id: uuid.UUID, return_url: str) -> str:
        stripe_api = self._stripe_or_refuse()
        async with self._database.transaction() as session:
            await self._tombstones.guard_write(session, user_id)  # as checkout's
            customer_id = await self._subscriptions.customer_id(session, user_id)
        if customer_id is None:
            raise FailedPrecondition(
                "there is no subscription to manage yet; start with a checkout",
                reason="NO_BILLING_ACCOUNT",
            )
        return await stripe_api.create_portal_session(
            customer_id=customer_id, return_url=return_url, idempotency_key=f"portal:{uuid.uuid4()}"
        )

    # --- webhooks ---------------------------------------------------------------------

    def _count_event(self, type_: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.increment(WEBHOOK_METRIC, WEBHOOK_HELP, type=type_, outcome=outcome)

    def verify(self, payload: bytes, header: str) -> dict[str, Any]:
        """The signature first, on the raw bytes; only then is the body parsed."""
        secrets = self._settings.webhook_secrets
        if self._stripe is None or not secrets:
            raise BillingNotConfigured()
        if not header:
            raise BadWebhook("stripe-signature", "the Stripe-Signature header is missing")
        for secret in secrets:
            try:
                stripe.WebhookSignature.verify_header(
                    payload, header, secret, tolerance=self._settings.webhook_tolerance_seconds
                )
                break
            except (stripe.SignatureVerificationError, ValueError):
                continue
        else:
            raise BadWebhook(
                "stripe-signature",
                "does not verify: wrong signing secret, altered body, or a timestamp outside "
                f"{self._settings.webhook_tolerance_seconds} s",
            )
        try:
            event = json.loads(payload)
        except ValueError as error:
            raise BadWebhook("body", "is not JSON") from error
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)
            or not isinstance(event.get("data"), dict)
        ):
            raise BadWebhook("body", "is not a Stripe event (id, type and data are required)")
        return event

    async def handle_webhook(self, payload: bytes, header: str) -> bool:
        """Answers False for a duplicate delivery (acknowledged, nothing changes)."""
        try:
            event = self.verify(payload, header)
        except BadWebhook:
            self._count_event("unverified", "rejected")
            raise
        try:
            return await self._apply_event(event)
        except BaseException:
            self._count_event(event["type"], "failed")
            raise

    async def _apply_event(self, event: dict[str, Any]) -> bool:
        event_id, type_ = event["id"], event["type"]
        async with self._database.read() as session:
            if await BillingRepository(session).event_seen(event_id):
                self._count_event(type_, "duplicate")
                return False
        received = self._clock()
        subscription_id, named_user = subscription_reference(event)
        state: StripeSubscriptionState | None = None
        if subscription_id:
            # A trigger, not a statement of fact: events come late, early and twice, so
            # the subscription's latest state decides.
            assert self._stripe is not None
            latest = await self._stripe.subscription(subscription_id)
            if latest is None and type_ in SUBSCRIPTION_EVENTS:
                latest = (event.get("data") or {}).get("object")
            if latest is not None:
                state = StripeSubscriptionState.from_stripe(latest)
        await checkpoint("webhook.subscription_fetched")
        change = None
        user_id: uuid.UUID | None = None
        deleted = False
        async with self._database.transaction() as session:
            repository = BillingRepository(session)
            if state is not None:
                user_id = await self._subscriptions.user_of(session, state, named_user)
            # The user's tombstone lock (shared) before anything is written: this
            # transaction commits either before the account's tombstone, and the purge
            # that follows it cancels what is recorded here, or after it, and then it
            # records nothing (the subscription is canceled below first).
            if user_id is not None:
                deleted = await self._tombstones.is_recorded(session, user_id)
            if not deleted:
                if not await repository.record_event(
                    event_id=event_id,
                    type_=type_,
                    outcome="applied",
                    stripe_subscription_id=subscription_id or None,
                    received_at=received,
                ):
                    self._count_event(type_, "duplicate")
                    return False
                outcome = "ignored"
                if state is not None:
                    if user_id is None:
                        outcome = "unmatched"
                        log.warning(
                            "stripe subscription of no known user", extra={"event": event_id}
                        )
                    else:
                        outcome, change = await self._subscriptions.apply(session, user_id, state)
                if outcome != "applied":
                    await repository.set_event_outcome(event_id, outcome)
        if deleted and state is not None and user_id is not None:
            return await self._end_for_deleted_user(event_id, type_, received, user_id, state)
        self._count_event(type_, outcome)
        await checkpoint("webhook.applied")
        if change is not None:
            self._tiers.forget_tier(change.user_id)
            try:
                await self.relay_tier_changes()
            except Exception:  # the sweeper relays it later
                log.warning("relaying a tier change failed; will retry", exc_info=True)
        return True

    async def _end_for_deleted_user(
        self,
        event_id: str,
        type_: str,
        received: datetime.datetime,
        user_id: uuid.UUID,
        state: StripeSubscriptionState,
    ) -> bool:
        """A subscription of an account whose tombstone committed first (a checkout paid
        after the deletion, or an event that lost the race with it): the purge has looked
        for subscriptions already, so it would never be canceled and keep charging.
        Canceled at Stripe first (key `cancel:<sub>`, the purge's), with nothing
        recorded: a failure is a 503 and Stripe's redelivery is the retry. Then the event
        and the subscription, as ended, in one transaction; no tier goes to identity."""
        assert self._stripe is not None
        if not state.final:
            await self._stripe.cancel_subscription(state.id, f"cancel:{state.id}")
        await checkpoint("webhook.deleted_user_canceled")
        async with self._database.transaction() as session:
            if not await BillingRepository(session).record_event(
                event_id=event_id,
                type_=type_,
                outcome="deleted_user",
                stripe_subscription_id=state.id,
                received_at=received,
            ):
                self._count_event(type_, "duplicate")
                return False
            await self._subscriptions.record_ended(session, user_id, state)
        self._count_event(type_, "deleted_user")
        log.info("canceled the subscription of a deleted account", extra={"event": event_id})
        await checkpoint("webhook.applied")
        return True

    # --- tier changes to identity -----------------------------------------------------

    async def relay_tier_changes(self) -> int:
        """Delivers the tier outbox to identity (SetUserTier is idempotent); oldest first,
        and a change a newer one supersedes is skipped."""
        now = self._clock()
        async with self._database.transaction() as session:
            batch = await BillingRepository(session).claim_tier_changes(
                now, now + RELAY_RETRY, self._settings.sweep_batch_size
            )
        delivered = 0
        for entry_id, user_id, tier_code in batch:
            async with self._database.read() as session:
                superseded = await BillingRepository(session).superseded(entry_id, user_id)
            if not superseded:
                try:
                    await self._identity.set_user_tier(user_id, tier_code)
                except Unavailable:
                    log.warning("identity did not take a tier change; will retry")
                    continue
                except NotFound:
                    log.warning("identity knows no such user or tier; dropping the change")
                await checkpoint("tier.relayed")
            async with self._database.transaction() as session:
                await BillingRepository(session).mark_delivered(entry_id, self._clock())
            self._tiers.forget_tier(user_id)
            delivered += 1
        return delivered

    async def record_tier(self, user_id: uuid.UUID, tier_code: str) -> None:
        """Billing's own `set-tier` command (development, Stripe off): the billing half
        only. identity's `set-tier` reaches billing through the outbox (`tier_changed`)."""
        async with self._database.transaction() as session:
            await self._tombstones.guard_write(session, user_id)
            await self._subscriptions.record_manual_tier(session, user_id, tier_code)
        self._tiers.forget_tier(user_id)

    # --- account deletion -------------------------------------------------------------

    async def user_deleted(self, session: AsyncSession, event: Event) -> None:
        """identity's `user.deleted`, in the follower's transaction: the tombstone (the user
        is refused from then on); the purge follows in `purge_deleted_users`."""
        await self._tombstones.record(session, event.user_id)

    async def tier_changed(self, session: AsyncSession, event: Event) -> None:
        """identity's `user.tier_changed`: the next reservation reads the new limits. A tier
        identity's `set-tier` command set (`set_by` "operator") is recorded here, in the
        follower's transaction, as the user's manual subscription: the outbox is the one
        way it reaches billing (ADR 0021). A change billing relayed itself is its own
        already; a user deleted meanwhile gets nothing recorded."""
        self._tiers.forget_tier(event.user_id)
        if event.payload.get("set_by") != TIER_SET_BY_OPERATOR:
            return
        tier_code = event.payload.get("to")
        if not isinstance(tier_code, str) or not tier_code:
            raise MalformedEvent(f"user.tier_changed event {event.id} names no tier")
        if await self._tombstones.is_recorded(session, event.user_id):
            return
        await self._subscriptions.record_manual_tier(session, event.user_id, tier_code)

    async def purge_deleted_users(self) -> int:
        """After each follower round, with no transaction open: the purges owed."""
        return await self._tombstones.purge_pending(self.purge_user)

    async def delete_account(self, user_id: uuid.UUID) -> None:
        async with self._database.transaction() as session:
            await self._tombstones.record(session, user_id)
        await checkpoint("deletion.tombstoned")
        await self._tombstones.purge_pending(self.purge_user)

    async def purge_user(self, user_id: uuid.UUID) -> None:
        async with self._database.read() as session:
            cancellable = await self._subscriptions.cancellable(session, user_id)
        for subscription_id in cancellable:
            if self._stripe is None:
                log.warning("a deleted user has a Stripe subscription but Stripe is off")
                continue
            await self._stripe.cancel_subscription(subscription_id, f"cancel:{subscription_id}")
        await checkpoint("deletion.stripe_canceled")
        async with self._database.transaction() as session:
            await self._subscriptions.forget_user(session, user_id)
        self._tiers.forget_tier(user_id)

    # --- sweeper ----------------------------------------------------------------------

    async def expire_reservations(self) -> int:
        total = 0
        while True:
            async with self._database.transaction() as session:
                count = await self._usage.expire(session, self._settings.sweep_batch_size)
            total += count
            if count < self._settings.sweep_batch_size:
                return total

    async def sweep_once(self) -> SweepReport:
        expired = await self.expire_reservations()
        relayed = await self.relay_tier_changes()
        purged = await self._tombstones.purge_pending(self.purge_user)
        return SweepReport(expired, relayed, purged)

    async def run_periodically(self, interval: float) -> None:
        """Sweeps every `interval` seconds until cancelled; a failed round is logged and
        the next one tries again."""
        await every(interval, self.sweep_once, name="billing sweep")
