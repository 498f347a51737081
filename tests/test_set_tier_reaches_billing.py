"""identity's `set-tier` command reaches billing through the outbox alone (ADR 0021).

Real Postgres, a real identity server and a real billing server on port 0; billing's own
OutboxFollower reads identity's ListEvents. The command runs as an operator runs it, as a
process, with a billing address where nothing listens: there is no second channel, and
billing still records the plan (its manual subscription) from `user.tier_changed`.
Events are handled in outbox order, so once a later change is visible in billing, every
earlier one has been handled too: that is how the tests know a change was *not* recorded.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime.db import Database
from runtime.events import USER_TIER_CHANGED
from runtime.server import RunningServer
from services.billing.server import start as start_billing
from services.billing.settings import BillingSettings
from services.identity.models import SCHEMA as IDENTITY
from services.identity.repository import IdentityRepository
from services.identity.server import start as start_identity
from services.identity.settings import IdentitySettings
from services.identity.tests.cli import run_cli
from services.identity.tests.conftest import AdjustableClock, identity_settings_for
from services.identity.tests.support import PASSWORD, Account, bearer, sign_up, unique_name
from tests.support.settings import service_credential, service_settings


@dataclass
class Stack:
    identity_settings: IdentitySettings
    identity: identity_pb2_grpc.IdentityServiceStub
    identity_internal: identity_pb2_grpc.IdentityInternalServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    admin: asyncpg.Connection
    admin_url: str


def nobody_listening() -> str:
    """An address where no billing answers: a port the OS handed out and took back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
async def admin(migrated_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(migrated_db)
    yield connection
    await connection.close()


@pytest.fixture
async def billing_cursor_kept(admin: asyncpg.Connection) -> AsyncIterator[None]:
    """Billing's cursor as it was before: billing's own tests follow a FakeIdentity whose
    positions are small numbers, which a cursor moved along the real outbox would skip."""
    saved = await admin.fetch(
        "SELECT source, xact_id, sequence, updated_at FROM billing.event_cursors"
    )
    yield
    async with admin.transaction():
        await admin.execute("DELETE FROM billing.event_cursors")
        await admin.executemany(
            "INSERT INTO billing.event_cursors (source, xact_id, sequence, updated_at)"
            " VALUES ($1, $2, $3, $4)",
            [tuple(row) for row in saved],
        )


@pytest.fixture
async def stack(
    migrated_db: str,
    tmp_path: pathlib.Path,
    admin: asyncpg.Connection,
    billing_cursor_kept: None,
) -> AsyncIterator[Stack]:
    identity_settings = identity_settings_for(migrated_db, tmp_path / "mailbox")
    identity_server = await start_identity(identity_settings, port=0, clock=AdjustableClock())
    billing_server: RunningServer | None = None
    try:
        billing_server = await start_billing(
            service_settings(
                BillingSettings,
                migrated_db,
                identity_addr=f"127.0.0.1:{identity_server.port}",
                sweep_interval_seconds=0,
                event_poll_seconds=0.05,
            ),
            port=0,
        )
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{identity_server.port}") as to_identity,
            grpc.aio.insecure_channel(f"127.0.0.1:{billing_server.port}") as to_billing,
        ):
            yield Stack(
                identity_settings,
                identity_pb2_grpc.IdentityServiceStub(to_identity),
                identity_pb2_grpc.IdentityInternalServiceStub(to_identity),
                billing_pb2_grpc.BillingServiceStub(to_billing),
                admin,
                migrated_db,
            )
    finally:
        if billing_server is not None:
            await billing_server.stop(0)
        await identity_server.stop(0)


async def subscription(stack: Stack, account: Account) -> tuple[str, str]:
    """(tier, status) as billing answers the user."""
    response = await stack.billing.GetSubscription(
        billing_pb2.GetSubscriptionRequest(), metadata=bearer(account.access_token)
    )
    return response.subscription.tier, response.subscription.status


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> bool:
    """Polls until `check` holds or `timeout` passes (delivery takes a poll or two)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def set_tier_as_an_operator(stack: Stack, account: Account, tier: str) -> str:
    code, out, err = await run_cli(
        stack.identity_settings,
        "set-tier",
        account.username,
        tier,
        env={"PIXELSHOP_BILLING_ADDR": nobody_listening()},
    )
    assert code == 0, err
    return out


async def reaches_billing(stack: Stack, account: Account, tier: str) -> bool:
    async def seen() -> bool:
        return await subscription(stack, account) == (tier, "active")

    return await eventually(seen)


async def manual_subscriptions(stack: Stack, user_id: str) -> list[str]:
    rows = await stack.admin.fetch(
        "SELECT tier_code FROM billing.subscriptions"
        " WHERE user_id = $1 AND stripe_subscription_id IS NULL",
        uuid.UUID(user_id),
    )
    return [row["tier_code"] for row in rows]


async def test_a_set_tier_reaches_billing_through_the_outbox_alone(stack: Stack) -> None:
    account = await sign_up(stack.identity, username=unique_name("plan"))
    assert await subscription(stack, account) == ("free", "none")

    out = await set_tier_as_an_operator(stack, account, "pro")
    assert "billing follows through the outbox" in out
    assert await reaches_billing(stack, account, "pro")
    assert await manual_subscriptions(stack, account.user_id) == ["pro"]
    usage = await stack.billing.GetUsage(
        billing_pb2.GetUsageRequest(), metadata=bearer(account.access_token)
    )
    assert usage.tier == "pro"
    limits = {value.metric: value.limit for value in usage.metrics}
    assert limits[billing_pb2.USAGE_METRIC_AI_EDITS] == 1000

    # Back to Free the same way; the manual subscription follows, no second row.
    await set_tier_as_an_operator(stack, account, "free")

    async def back_on_free() -> bool:
        return await manual_subscriptions(stack, account.user_id) == ["free"]

    assert await eventually(back_on_free)
    assert (await subscription(stack, account))[0] == "free"


async def test_a_change_billing_relayed_itself_is_not_recorded_again(stack: Stack) -> None:
    """SetUserTier from billing (relaying Stripe) writes `set_by: billing`: billing's
    subscriptions already say so, and a manual row would outlive a canceled Stripe plan."""
    relayed = await sign_up(stack.identity, username=unique_name("relayed"))
    await stack.identity_internal.SetUserTier(
        identity_pb2.SetUserTierRequest(user_id=relayed.user_id, tier_code="pro"),
        metadata=service_credential("billing"),
    )
    later = await sign_up(stack.identity, username=unique_name("later"))
    await set_tier_as_an_operator(stack, later, "pro")
    assert await reaches_billing(stack, later, "pro")  # so the relayed event was handled
    assert await manual_subscriptions(stack, relayed.user_id) == []


async def test_an_operators_change_that_arrives_after_the_deletion_records_nothing(
    stack: Stack,
) -> None:
    """A tier change whose transaction got a later id than the deletion's is ordered after
    `user.deleted` in the outbox: billing has the tombstone by then and records nothing
    (nor parks the event)."""
    deleted = await sign_up(stack.identity, username=unique_name("gone"))
    await stack.identity.DeleteCurrentUser(
        identity_pb2.DeleteCurrentUserRequest(password=PASSWORD),
        metadata=bearer(deleted.access_token),
    )

    async def tombstoned() -> bool:
        found = await stack.admin.fetchval(
            "SELECT count(*) FROM billing.deleted_users WHERE user_id = $1",
            uuid.UUID(deleted.user_id),
        )
        return bool(found)

    assert await eventually(tombstoned)
    database = Database.connect(stack.admin_url, IDENTITY, pool_size=1)
    try:
        async with database.transaction() as session:
            await IdentityRepository(session).append_event(
                event_type=USER_TIER_CHANGED,
                user_id=uuid.UUID(deleted.user_id),
                payload={
                    "user_id": deleted.user_id,
                    "from": "free",
                    "to": "pro",
                    "set_by": "operator",
                },
                now=AdjustableClock()(),
            )
    finally:
        await database.close()

    later = await sign_up(stack.identity, username=unique_name("later"))
    await set_tier_as_an_operator(stack, later, "pro")
    assert await reaches_billing(stack, later, "pro")
    assert await manual_subscriptions(stack, deleted.user_id) == []
    parked = await stack.admin.fetchval(
        "SELECT count(*) FROM billing.parked_events WHERE user_id = $1",
        uuid.UUID(deleted.user_id),
    )
    assert parked == 0
