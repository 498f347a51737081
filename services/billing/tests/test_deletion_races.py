"""A Stripe webhook racing the account's deletion never leaves a subscription charging.

The webhook takes the user's tombstone lock (shared) in the transaction that records
the subscription (`Tombstones.is_recorded`), so it either commits before the tombstone,
and the purge that follows cancels what it recorded, or it sees the tombstone and
cancels the subscription at Stripe itself. The interleavings are forced with Postgres
locks (a row lock the webhook's INSERT queues on, the tombstone's own advisory lock held
open) and observed in pg_locks; nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from google.api import httpbody_pb2
from sqlalchemy import text

from runtime.errors import Unauthenticated
from runtime.tombstones import user_lock_key
from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.billing.server import BillingComponents, build
from services.billing.settings import BillingSettings
from services.billing.tests.conftest import Billing, Metadata
from tests.support.fake_identity import FakeIdentity
from tests.support.fake_stripe import (
    FakeStripe,
    checkout_completed,
    signature,
    subscription_event,
)
from tests.support.waiting import eventually

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


@pytest.fixture
async def parts(stripe_settings: BillingSettings) -> AsyncIterator[BillingComponents]:
    """Billing's parts with Stripe on; their in-memory tombstones are never loaded, so
    only what the database says under the lock can refuse anything."""
    built = build(stripe_settings)
    yield built
    await built.close()


def new_subscription_id() -> str:
    return f"sub_{uuid.uuid4().hex[:14]}"


def _lock_ids(user_id: uuid.UUID) -> dict[str, int]:
    """pg_locks shows a bigint advisory key as classid (high half) and objid (low)."""
    key = user_lock_key(user_id) & 0xFFFF_FFFF_FFFF_FFFF
    return {"hi": key >> 32, "lo": key & 0xFFFF_FFFF}


async def tombstone_lock(
    parts: BillingComponents, user_id: uuid.UUID, mode: str, granted: bool
) -> bool:
    async with parts.database.read() as session:
        found = await session.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
                " AND classid = :hi AND objid = :lo AND mode = :mode AND granted = :granted"
            ),
            {**_lock_ids(user_id), "mode": mode, "granted": granted},
        )
    return bool(found)


async def waits_for_the_lock(
    parts: BillingComponents, user_id: uuid.UUID, mode: str, task: asyncio.Task[object]
) -> bool:
    """Whether someone waits for the user's tombstone lock in `mode`, or `task` is over
    (then it did not wait: what the test is there to catch)."""
    return task.done() or await tombstone_lock(parts, user_id, mode, granted=False)


async def blocked_by(parts: BillingComponents, pid: int) -> bool:
    async with parts.database.read() as session:
        found = await session.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid},
        )
    return bool(found)


async def subscription_status(parts: BillingComponents, subscription_id: str) -> str | None:
    async with parts.database.read() as session:
        status = await session.scalar(
            text("SELECT status FROM subscriptions WHERE stripe_subscription_id = :s"),
            {"s": subscription_id},
        )
    return None if status is None else str(status)


async def event_outcomes(parts: BillingComponents, subscription_id: str) -> list[str]:
    async with parts.database.read() as session:
        rows = await session.scalars(
            text("SELECT outcome FROM stripe_events WHERE stripe_subscription_id = :s"),
            {"s": subscription_id},
        )
        return [str(row) for row in rows]


def cancels(stripe_api: FakeStripe, subscription_id: str) -> list[str]:
    return [
        c.idempotency_key
        for c in stripe_api.calls("DELETE", f"/v1/subscriptions/{subscription_id}")
    ]


async def test_a_webhook_that_wins_the_race_is_seen_and_canceled_by_the_purge(
    parts: BillingComponents, stripe_api: FakeStripe, new_user: NewUser
) -> None:
    """The webhook checked the user before the deletion and is still recording the
    subscription when the deletion comes: the tombstone waits for it, so the purge that
    follows finds the subscription and cancels it at Stripe."""
    user, _ = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", subscription)

    # An uncommitted row with the same Stripe id: the webhook's INSERT queues behind it
    # after the webhook has decided the user is not deleted, and before it commits.
    async with parts.database.engine.connect() as blocker:
        holding = await blocker.begin()
        pid = int(await blocker.scalar(text("SELECT pg_backend_pid()")) or 0)
        await blocker.execute(
            text(
                "INSERT INTO subscriptions (id, user_id, stripe_subscription_id, tier_code,"
                " status) VALUES (:id, :user, :sub, 'pro', 'incomplete')"
            ),
            {"id": uuid.uuid4(), "user": uuid.uuid4(), "sub": sub_id},
        )
        webhook = asyncio.create_task(parts.workflows.handle_webhook(payload, signature(payload)))
        await eventually(lambda: blocked_by(parts, pid), "the webhook blocked on the lock")

        deletion = asyncio.create_task(parts.workflows.delete_account(user))
        await eventually(
            lambda: waits_for_the_lock(parts, user, "ExclusiveLock", deletion),
            "the deletion waiting for the tombstone lock",
        )
        deletion_waited_for_the_webhook = not deletion.done()
        await holding.rollback()
    assert await webhook is True
    await deletion
    await parts.workflows.sweep_once()

    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert cancels(stripe_api, sub_id) == [f"cancel:{sub_id}"]
    assert await subscription_status(parts, sub_id) == "canceled"
    assert deletion_waited_for_the_webhook


async def test_a_webhook_that_loses_the_race_waits_for_the_tombstone_and_cancels_at_stripe(
    parts: BillingComponents,
    stripe_api: FakeStripe,
    identity: FakeIdentity,
    new_user: NewUser,
) -> None:
    """The tombstone is being recorded (its lock held, not yet committed) when the
    webhook arrives: the webhook waits for it, sees it, and cancels the subscription
    at Stripe itself; identity is told of no new tier."""
    user, _ = new_user()
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", subscription)
    recorded, commit = asyncio.Event(), asyncio.Event()

    async def record_the_tombstone() -> None:
        async with parts.database.transaction() as session:
            await parts.tombstones.record(session, user)
            recorded.set()
            await commit.wait()

    recorder = asyncio.create_task(record_the_tombstone())
    await recorded.wait()
    webhook = asyncio.create_task(parts.workflows.handle_webhook(payload, signature(payload)))
    await eventually(
        lambda: waits_for_the_lock(parts, user, "ShareLock", webhook),
        "the webhook waiting for the tombstone lock",
    )
    webhook_waited_for_the_tombstone = not webhook.done()
    commit.set()
    await recorder
    assert await webhook is True
    await parts.workflows.purge_deleted_users()

    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert cancels(stripe_api, sub_id)
    assert await subscription_status(parts, sub_id) == "canceled"
    assert await event_outcomes(parts, sub_id) == ["deleted_user"]
    assert identity.user_tiers[str(user)] == "free"
    assert webhook_waited_for_the_tombstone


async def test_a_subscription_paid_after_the_deletion_is_canceled_at_stripe(
    paid: Billing,
    parts: BillingComponents,
    stripe_api: FakeStripe,
    new_user: NewUser,
) -> None:
    """A checkout page opened before the deletion and paid after it: the purge ran long
    ago, so the webhook is what cancels the subscription (and only once)."""
    user, _ = new_user()
    await parts.workflows.delete_account(user)
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    completed = checkout_completed(str(user), sub_id, subscription["customer"])

    assert await deliver(paid, completed) is True
    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert cancels(stripe_api, sub_id) == [f"cancel:{sub_id}"]
    assert await subscription_status(parts, sub_id) == "canceled"

    # A redelivery is a duplicate; Stripe's own "deleted" event that follows the cancel
    # finds nothing left to cancel.
    assert await deliver(paid, completed) is False
    ended = subscription_event("customer.subscription.deleted", stripe_api.subscriptions[sub_id])
    assert await deliver(paid, ended) is True
    assert cancels(stripe_api, sub_id) == [f"cancel:{sub_id}"]
    assert await subscription_status(parts, sub_id) == "canceled"
    assert sorted(await event_outcomes(parts, sub_id)) == ["deleted_user", "deleted_user"]
    assert (
        'pixelshop_stripe_webhook_events_total{outcome="deleted_user",'
        'type="checkout.session.completed"}'
    ) in paid.server.metrics.render()


async def deliver(billing: Billing, payload: bytes) -> bool:
    response = await billing.public.HandleStripeWebhook(
        httpbody_pb2.HttpBody(content_type="application/json", data=payload),
        metadata=(("stripe-signature", signature(payload)),),
    )
    return response.processed


async def test_stripe_down_while_canceling_for_a_deleted_user_is_503_and_a_redelivery_cancels(
    paid: Billing,
    parts: BillingComponents,
    stripe_api: FakeStripe,
    new_user: NewUser,
) -> None:
    user, _ = new_user()
    await parts.workflows.delete_account(user)
    sub_id = new_subscription_id()
    subscription = stripe_api.put_subscription(sub_id, status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", subscription)
    original_handle = stripe_api.handle

    def failing_cancels(method: str, path: str, params: dict[str, str], key: str) -> object:
        if method == "DELETE":
            return 503, {"error": {"type": "api_error", "message": "the fake Stripe is down"}}
        return original_handle(method, path, params, key)

    stripe_api.handle = failing_cancels  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await deliver(paid, payload)
    finally:
        stripe_api.handle = original_handle  # type: ignore[method-assign]
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await event_outcomes(parts, sub_id) == []  # nothing recorded: Stripe redelivers
    assert await deliver(paid, payload) is True
    assert stripe_api.subscriptions[sub_id]["status"] == "canceled"
    assert await subscription_status(parts, sub_id) == "canceled"


async def test_a_crash_while_ending_a_deleted_users_subscription_ends_canceled(
    stripe_settings: BillingSettings,
    parts: BillingComponents,
    stripe_api: FakeStripe,
    new_user: NewUser,
) -> None:
    """Crash at every step of the webhook for a deleted account; Stripe's redelivery
    (the event got no 2xx) ends with the subscription canceled and the event recorded."""
    user, _ = new_user()
    await parts.workflows.delete_account(user)
    first = stripe_api.put_subscription(new_subscription_id(), status="active", user_id=str(user))
    payload = subscription_event("customer.subscription.created", first)
    with record_checkpoints() as steps:
        await parts.workflows.handle_webhook(payload, signature(payload))
    assert "webhook.deleted_user_canceled" in steps
    for step in steps:
        crashing, _ = new_user()
        await parts.workflows.delete_account(crashing)
        sub_id = new_subscription_id()
        fresh = stripe_api.put_subscription(sub_id, status="active", user_id=str(crashing))
        payload = subscription_event("customer.subscription.created", fresh)
        run = build(stripe_settings)
        try:
            with crash_at(step), pytest.raises(SimulatedCrash):
                await run.workflows.handle_webhook(payload, signature(payload))
            await run.workflows.handle_webhook(payload, signature(payload))
        finally:
            await run.close()
        assert stripe_api.subscriptions[sub_id]["status"] == "canceled", step
        assert await subscription_status(parts, sub_id) == "canceled", step
        assert await event_outcomes(parts, sub_id) == ["deleted_user"], step


async def test_checkout_and_portal_are_refused_once_the_tombstone_is_recorded(
    stripe_settings: BillingSettings,
    parts: BillingComponents,
    stripe_api: FakeStripe,
    new_user: NewUser,
) -> None:
    """Decided under the tombstone's lock, not by a replica's memory (which learns of a
    deletion a refresh later): these parts never loaded theirs."""
    user, _ = new_user()
    urls = {"success_url": "https://a.example/ok", "cancel_url": "https://a.example/no"}
    await parts.workflows.checkout(user, "pro", request_key="", **urls)
    deleting = build(stripe_settings)
    try:
        await deleting.workflows.delete_account(user)
    finally:
        await deleting.close()
    assert not parts.tombstones.is_deleted(user)
    with pytest.raises(Unauthenticated):
        await parts.workflows.checkout(user, "pro", request_key="", **urls)
    with pytest.raises(Unauthenticated):
        await parts.workflows.portal(user, "https://a.example/billing")
    assert len(calls_of(stripe_api, "/v1/checkout/sessions", client_reference_id=user)) == 1
    assert (
        calls_of(stripe_api, "/v1/billing_portal/sessions", customer=customer_of(stripe_api, user))
        == []
    )

    # A user who never had a customer is refused before one is made at Stripe.
    other, _ = new_user()
    await parts.workflows.delete_account(other)
    with pytest.raises(Unauthenticated):
        await parts.workflows.checkout(other, "pro", request_key="", **urls)
    assert calls_of(stripe_api, "/v1/customers", **{"metadata[user_id]": other}) == []


def calls_of(stripe_api: FakeStripe, path: str, **params: object) -> list[object]:
    """The POSTs to `path` carrying these parameters (other tests' late calls aside)."""
    return [
        call
        for call in stripe_api.calls("POST", path)
        if all(call.params.get(name) == str(value) for name, value in params.items())
    ]


def customer_of(stripe_api: FakeStripe, user: uuid.UUID) -> str:
    (found,) = [
        c["id"] for c in stripe_api.customers.values() if c["metadata"] == {"user_id": str(user)}
    ]
    return str(found)
