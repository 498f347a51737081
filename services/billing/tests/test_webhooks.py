"""Stripe webhooks over real gRPC (the HTTP path is in tests/e2e): each event is a trigger
to read the subscription's latest state from the fake Stripe; duplicates, disorder,
failures and crashes between the steps all end consistent."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.api import httpbody_pb2
from pixelshop.billing.v1 import billing_pb2
from sqlalchemy import text

from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.billing.server import build
from services.billing.settings import BillingSettings
from services.billing.tests.conftest import Billing, Clock, Metadata
from tests.support.fake_identity import FakeIdentity
from tests.support.fake_stripe import (
    WEBHOOK_SECRET_PREVIOUS,
    FakeStripe,
    checkout_completed,
    event,
    invoice_event,
    signature,
    subscription_event,
)


async def deliver(billing: Billing, payload: bytes, header: str | None = None) -> bool:
    signed = signature(payload) if header is None else header
    response = await billing.public.HandleStripeWebhook(
        httpbody_pb2.HttpBody(content_type="application/json", data=payload),
        metadata=(("stripe-signature", signed),),
    )
    return response.processed


async def subscription_of(billing: Billing, token: Metadata) -> billing_pb2.Subscription:
    response = await billing.public.GetSubscription(
        billing_pb2.GetSubscriptionRequest(), metadata=token
    )
    return response.subscription


async def events_recorded(settings: BillingSettings) -> int:
    components = build(settings)
    try:
        async with components.database.read() as session:
            return int(await session.scalar(text("SELECT count(*) FROM stripe_events")) or 0)
    finally:
        await components.close()


def new_subscription_id() -> str:
    return f"sub_{uuid.uuid4().hex[:14]}"


async def test_checkout_then_subscription_events_end_on_pro_and_tell_identity(
    paid: Billing,
    stripe_api: FakeStripe,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    start = int(time.time()) - 60
    subscription = stripe_api.put_subscription(
        sub_id, status="active", user_id=str(user), period_start=start, period_end=start + 2_592_000
    )
    assert await deliver(paid, checkout_completed(str(user), sub_id, subscription["customer"]))
    seen = await subscription_of(paid, token)
    assert (seen.tier, seen.status) == ("pro", "active")
    # The period comes from the subscription's items (API 2025-03-31 and later).
    assert seen.current_period_start.ToSeconds() == start
    assert seen.current_period_end.ToSeconds() == start + 2_592_000
    # The tier reached identity after the commit, through the outbox.
    assert identity.user_tiers[str(user)] == "pro"
    # AI edits now count in the subscription's period.
    usage = await paid.public.GetUsage(billing_pb2.GetUsageRequest(), metadata=token)
    assert usage.period_start.ToSeconds() == start
    assert usage.tier == "pro"


async def test_the_same_event_twice_applies_once(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, _ = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", subscription)
    before = await events_recorded(stripe_settings)
    assert await deliver(paid, payload) is True
    retrievals = len(stripe_api.calls("GET", f"/v1/subscriptions/{sub_id}"))
    assert await deliver(paid, payload) is False
    assert await events_recorded(stripe_settings) == before + 1
    # A duplicate is acknowledged without asking Stripe again.
    assert len(stripe_api.calls("GET", f"/v1/subscriptions/{sub_id}")) == retrievals
    rendered = paid.server.metrics.render()
    for outcome in ("applied", "duplicate"):
        assert (
            "pixelshop_stripe_webhook_events_total"
            f'{{outcome="{outcome}",type="customer.subscription.created"}}'
        ) in rendered


async def test_subscription_created_before_checkout_completed_still_ends_on_pro(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    await deliver(paid, subscription_event("customer.subscription.created", subscription))
    assert (await subscription_of(paid, token)).tier == "pro"
    await deliver(paid, checkout_completed(str(user), sub_id, subscription["customer"]))
    assert (await subscription_of(paid, token)).tier == "pro"


async def test_deleted_then_a_late_update_stays_canceled(
    paid: Billing,
    stripe_api: FakeStripe,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    active = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    late_update = subscription_event("customer.subscription.updated", dict(active))
    await deliver(paid, subscription_event("customer.subscription.created", active))
    assert identity.user_tiers[str(user)] == "pro"
    canceled = stripe_api.put_subscription(
        sub_id, status="canceled", user_id=str(user), customer=active["customer"]
    )
    await deliver(paid, subscription_event("customer.subscription.deleted", canceled))
    assert (await subscription_of(paid, token)).tier == "free"
    assert identity.user_tiers[str(user)] == "free"
    # Even if Stripe's answer came back active (a stale read), canceled is final.
    stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    await deliver(paid, late_update)
    seen = await subscription_of(paid, token)
    assert (seen.tier, seen.status) == ("free", "canceled")
    assert identity.user_tiers[str(user)] == "free"


async def test_past_due_shows_as_past_due_and_keeps_the_plan(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    active = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    await deliver(paid, subscription_event("customer.subscription.created", active))
    stripe_api.put_subscription(
        sub_id, status="past_due", user_id=str(user), customer=active["customer"]
    )
    # invoice.payment_failed names its subscription only under parent.subscription_details.
    await deliver(paid, invoice_event("invoice.payment_failed", sub_id, active["customer"]))
    seen = await subscription_of(paid, token)
    assert (seen.tier, seen.status) == ("pro", "past_due")
    stripe_api.put_subscription(
        sub_id, status="active", user_id=str(user), customer=active["customer"]
    )
    await deliver(paid, invoice_event("invoice.paid", sub_id, active["customer"]))
    assert (await subscription_of(paid, token)).status == "active"


async def test_the_period_falls_back_to_the_top_level_fields(
    paid: Billing,
    stripe_api: FakeStripe,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    old_style = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    start = int(time.time()) - 10
    for item in old_style["items"]["data"]:
        del item["current_period_start"], item["current_period_end"]
    old_style["current_period_start"], old_style["current_period_end"] = start, start + 86_400
    await deliver(paid, subscription_event("customer.subscription.updated", old_style))
    seen = await subscription_of(paid, token)
    assert seen.current_period_start.ToSeconds() == start


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong-secret", "too-old", "missing", "malformed", "not-json"],
)
async def test_unverifiable_webhooks_are_refused_and_change_nothing(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    tamper: str,
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", subscription)
    header = signature(payload)
    if tamper == "body":
        payload = payload.replace(b'"active"', b'"trialing"')
    elif tamper == "wrong-secret":
        header = signature(payload, "whsec_someone_else")
    elif tamper == "too-old":
        header = signature(payload, timestamp=int(time.time()) - 301)
    elif tamper == "missing":
        header = ""
    elif tamper == "malformed":
        header = "v1=abc,t=notanumber"
    else:
        payload = b"this is not json"
        header = signature(payload)
    before = await events_recorded(stripe_settings)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await deliver(paid, payload, header)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await events_recorded(stripe_settings) == before
    assert stripe_api.calls("GET", "/v1/subscriptions") == []
    assert (await subscription_of(paid, token)).tier == "free"


async def test_the_previous_secret_is_accepted_during_rotation(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    user, token = new_user()
    subscription = stripe_api.put_subscription(
        new_subscription_id(), status="active", user_id=str(user)
    )
    payload = subscription_event("customer.subscription.created", subscription)
    assert await deliver(paid, payload, signature(payload, WEBHOOK_SECRET_PREVIOUS))
    assert (await subscription_of(paid, token)).tier == "pro"


async def test_stripe_down_while_applying_is_503_and_a_redelivery_applies(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    user, token = new_user()
    subscription = stripe_api.put_subscription(
        new_subscription_id(), status="active", user_id=str(user)
    )
    payload = subscription_event("customer.subscription.created", subscription)
    before = await events_recorded(stripe_settings)
    stripe_api.failing = 503
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await deliver(paid, payload)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await events_recorded(stripe_settings) == before
    stripe_api.failing = 0
    assert await deliver(paid, payload)
    assert (await subscription_of(paid, token)).tier == "pro"


async def test_unhandled_event_types_are_acknowledged(paid: Billing) -> None:
    assert await deliver(paid, event("customer.created", {"id": "cus_x", "object": "customer"}))


async def test_a_crash_between_any_two_steps_ends_consistent(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
) -> None:
    """Stripe redelivers what was not acknowledged; the sweeper relays tier changes."""
    user, _ = new_user()
    subscription = stripe_api.put_subscription(
        new_subscription_id(), status="active", user_id=str(user)
    )
    first = subscription_event("customer.subscription.created", subscription)
    recorder = build(stripe_settings)
    try:
        with record_checkpoints() as steps:
            await recorder.workflows.handle_webhook(first, signature(first))
    finally:
        await recorder.close()
    assert "webhook.subscription_fetched" in steps
    assert "tier.relayed" in steps
    for step in steps:
        crashing_user, token = new_user()
        identity.user_tiers[str(crashing_user)] = "free"
        fresh = stripe_api.put_subscription(
            new_subscription_id(), status="active", user_id=str(crashing_user)
        )
        payload = subscription_event("customer.subscription.created", fresh)
        components = build(stripe_settings)
        try:
            with crash_at(step), pytest.raises(SimulatedCrash):
                await components.workflows.handle_webhook(payload, signature(payload))
            # Stripe redelivers what got no 2xx: applied now, or acknowledged as a duplicate.
            await components.workflows.handle_webhook(payload, signature(payload))
            await components.workflows.sweep_once()
        finally:
            await components.close()
        assert (await subscription_of(paid, token)).tier == "pro", step
        assert identity.user_tiers[str(crashing_user)] == "pro", step


async def tier_changes_owed(settings: BillingSettings, user: uuid.UUID) -> int:
    components = build(settings)
    try:
        async with components.database.read() as session:
            owed = await session.scalar(
                text(
                    "SELECT count(*) FROM tier_outbox"
                    " WHERE user_id = :user AND delivered_at IS NULL"
                ),
                {"user": user},
            )
            return int(owed or 0)
    finally:
        await components.close()


@pytest.mark.parametrize("refusal", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND])
async def test_a_tier_change_identity_refuses_is_relayed_later_or_dropped(
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    refusal: grpc.StatusCode,
) -> None:
    """Identity down: the change stays owed and a later sweep delivers it. Identity not
    knowing the user (deleted) or the tier: dropped, never retried forever."""
    user, _ = new_user()
    subscription = stripe_api.put_subscription(
        new_subscription_id(), status="active", user_id=str(user)
    )
    payload = subscription_event("customer.subscription.created", subscription)
    clock = Clock(datetime.datetime.now(datetime.UTC))
    components = build(stripe_settings, clock=clock)
    identity.set_tier_refusal = refusal
    try:
        # Billing's own record is the truth: the event is acknowledged either way.
        assert await components.workflows.handle_webhook(payload, signature(payload))
        assert identity.user_tiers[str(user)] == "free"
        retried = refusal == grpc.StatusCode.UNAVAILABLE
        assert await tier_changes_owed(stripe_settings, user) == (1 if retried else 0)

        identity.set_tier_refusal = None
        clock.advance(minutes=5)  # past the relay's retry delay
        await components.workflows.sweep_once()
    finally:
        identity.set_tier_refusal = None
        await components.close()
    assert await tier_changes_owed(stripe_settings, user) == 0
    assert identity.user_tiers[str(user)] == ("pro" if retried else "free")


async def test_account_deletion_cancels_stripe_and_drops_usage_but_keeps_the_ledger(
    paid: Billing,
    stripe_api: FakeStripe,
    stripe_settings: BillingSettings,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    await deliver(paid, subscription_event("customer.subscription.created", subscription))
    held = await paid.internal.ReserveUsage(
        billing_pb2.ReserveUsageRequest(
            user_id=str(user),
            metric=billing_pb2.USAGE_METRIC_AI_EDITS,
            amount=1,
            idempotency_key="edit",
        ),
        metadata=service_credential,
    )
    await paid.internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
        metadata=service_credential,
    )
    in_flight = await paid.internal.ReserveUsage(
        billing_pb2.ReserveUsageRequest(
            user_id=str(user),
            metric=billing_pb2.USAGE_METRIC_STORAGE_BYTES,
            amount=10,
            idempotency_key="upload-in-flight",
        ),
        metadata=service_credential,
    )
    identity.add_event("user.deleted", user)
    components = build(stripe_settings)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with components.database.read() as session:
                purged = await session.scalar(
                    text("SELECT purged_at FROM deleted_users WHERE user_id = :u"), {"u": user}
                )
            if purged is not None:
                break
            await _sleep()
        assert purged is not None
        async with components.database.read() as session:
            counts = {
                table: await session.scalar(
                    text(f"SELECT count(*) FROM {table} WHERE user_id = :u"),
                    {"u": user},
                )
                for table in ("usage_counters", "usage_reservations", "usage_ledger")
            }
            status = await session.scalar(
                text("SELECT status FROM subscriptions WHERE user_id = :u"), {"u": user}
            )
    finally:
        await components.close()
    assert counts == {"usage_counters": 0, "usage_reservations": 0, "usage_ledger": 1}
    assert status == "canceled"
    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert stripe_api.calls("DELETE", f"/v1/subscriptions/{sub_id}")
    # The deleted user's still-valid token is refused, and so are new reservations.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await paid.public.GetUsage(billing_pb2.GetUsageRequest(), metadata=token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as reserve:
        await paid.internal.ReserveUsage(
            billing_pb2.ReserveUsageRequest(
                user_id=str(user),
                metric=billing_pb2.USAGE_METRIC_AI_EDITS,
                amount=1,
                idempotency_key="after",
            ),
            metadata=service_credential,
        )
    assert reserve.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The callers' own clean-up of the deleted account finishes (nothing is counted) and
    # recreates nothing.
    settled = await paid.internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=in_flight.reservation_id),
        metadata=service_credential,
    )
    assert settled.state == billing_pb2.RESERVATION_STATE_RELEASED
    await paid.internal.CreditUsage(
        billing_pb2.CreditUsageRequest(
            user_id=str(user),
            metric=billing_pb2.USAGE_METRIC_STORAGE_BYTES,
            amount=10,
            idempotency_key="asset-purged",
        ),
        metadata=service_credential,
    )
    components = build(stripe_settings)
    try:
        async with components.database.read() as session:
            left = await session.scalar(
                text("SELECT count(*) FROM usage_counters WHERE user_id = :u"), {"u": user}
            )
    finally:
        await components.close()
    assert left == 0


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.1)


def test_periods_are_utc_calendar_months() -> None:
    from services.billing.service import calendar_month

    period = calendar_month(datetime.datetime(2026, 12, 31, 23, 0, tzinfo=datetime.UTC))
    assert period.start == datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert period.end == datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


async def test_cancel_at_period_end_shows_and_keeps_the_plan_until_then(
    paid: Billing, stripe_api: FakeStripe, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    user, token = new_user()
    sub_id = new_subscription_id()
    active = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    await deliver(paid, subscription_event("customer.subscription.created", active))
    ending = stripe_api.put_subscription(
        sub_id,
        status="active",
        user_id=str(user),
        customer=active["customer"],
        cancel_at_period_end=True,
    )
    await deliver(paid, subscription_event("customer.subscription.updated", ending))
    seen = await subscription_of(paid, token)
    assert (seen.tier, seen.status, seen.cancel_at_period_end) == ("pro", "active", True)
