"""Reservations against real Postgres over real gRPC: limits hold, keys are idempotent,
expiry and release give capacity back, and the counters always equal the ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pixelshop.billing.v1 import billing_pb2
from sqlalchemy import text

import runtime.server
from runtime.peers.identity import TierInfo
from services.billing.server import BillingComponents
from services.billing.settings import BillingSettings
from services.billing.tests.conftest import Billing, Clock, Metadata, StartBilling
from tests.support.fake_identity import FakeIdentity

AI = billing_pb2.USAGE_METRIC_AI_EDITS
STORAGE = billing_pb2.USAGE_METRIC_STORAGE_BYTES
PROJECTS = billing_pb2.USAGE_METRIC_PROJECTS
RESERVED = billing_pb2.RESERVATION_STATE_RESERVED
COMMITTED = billing_pb2.RESERVATION_STATE_COMMITTED
RELEASED = billing_pb2.RESERVATION_STATE_RELEASED


def reserve(user: uuid.UUID, metric: int, amount: int, key: str, ttl: int = 0) -> Any:
    return billing_pb2.ReserveUsageRequest(
        user_id=str(user), metric=metric, amount=amount, idempotency_key=key, ttl_seconds=ttl
    )


async def usage_of(billing: Billing, metadata: Metadata) -> dict[int, Any]:
    response = await billing.public.GetUsage(billing_pb2.GetUsageRequest(), metadata=metadata)
    return {value.metric: value for value in response.metrics}


async def assert_counters_match_ledger(components: BillingComponents) -> None:
    """`used` of every counter is the sum of its ledger rows; `reserved` the sum of its
    open reservations."""
    async with components.database.read() as session:
        used = await session.execute(
            text(
                "SELECT c.user_id, c.metric, c.period_start, c.used, "
                "COALESCE((SELECT sum(l.delta) FROM usage_ledger l WHERE l.user_id = c.user_id "
                "AND l.metric = c.metric AND l.period_start = c.period_start), 0) AS ledger, "
                "c.reserved, COALESCE((SELECT sum(r.amount) FROM usage_reservations r "
                "WHERE r.user_id = c.user_id AND r.metric = c.metric "
                "AND r.period_start = c.period_start AND r.state = 'reserved'), 0) AS held "
                "FROM usage_counters c"
            )
        )
        rows = list(used)
    assert rows
    for row in rows:
        assert row.used == row.ledger, row
        assert row.reserved == row.held, row


async def test_reserve_commit_release_and_the_limit(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
    components: BillingComponents,
) -> None:
    user, token = new_user("tiny")  # 2 AI edits
    internal = billing.internal
    first = await internal.ReserveUsage(reserve(user, AI, 1, "edit-1"), metadata=service_credential)
    assert first.state == RESERVED
    second = await internal.ReserveUsage(
        reserve(user, AI, 1, "edit-2"), metadata=service_credential
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await internal.ReserveUsage(reserve(user, AI, 1, "edit-3"), metadata=service_credential)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "AI edits limit reached" in (refused.value.details() or "")
    assert "2 AI edits" in (refused.value.details() or "")

    committed = await internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=first.reservation_id),
        metadata=service_credential,
    )
    assert committed.state == COMMITTED
    released = await internal.ReleaseUsage(
        billing_pb2.ReleaseUsageRequest(reservation_id=second.reservation_id),
        metadata=service_credential,
    )
    assert released.state == RELEASED
    # Released capacity is back: one more fits, then the limit holds again.
    await internal.ReserveUsage(reserve(user, AI, 1, "edit-4"), metadata=service_credential)
    with pytest.raises(grpc.aio.AioRpcError):
        await internal.ReserveUsage(reserve(user, AI, 1, "edit-5"), metadata=service_credential)

    usage = await usage_of(billing, token)
    assert (usage[AI].used, usage[AI].reserved, usage[AI].limit) == (1, 1, 2)
    assert usage[AI].HasField("period_start")
    assert usage[AI].HasField("period_end")
    assert not usage[STORAGE].HasField("period_start")
    # Committing or releasing again answers the same state and changes nothing.
    again = await internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=first.reservation_id),
        metadata=service_credential,
    )
    assert again.state == COMMITTED
    assert (await usage_of(billing, token))[AI].used == 1
    # Releasing what billing does not hold (never made, or purged with an account) is done.
    unknown = await internal.ReleaseUsage(
        billing_pb2.ReleaseUsageRequest(reservation_id=str(uuid.uuid4())),
        metadata=service_credential,
    )
    assert unknown.state == RELEASED
    # Committing one billing does not hold counts nothing, and the answer says so.
    missing = await internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=str(uuid.uuid4())),
        metadata=service_credential,
    )
    assert missing.state == RELEASED
    await assert_counters_match_ledger(components)


async def test_the_same_key_is_the_same_reservation(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    user, token = new_user("tiny")
    internal = billing.internal
    first = await internal.ReserveUsage(
        reserve(user, STORAGE, 600, "upload-a"), metadata=service_credential
    )
    repeated = await internal.ReserveUsage(
        reserve(user, STORAGE, 600, "upload-a"), metadata=service_credential
    )
    assert repeated.reservation_id == first.reservation_id
    assert (await usage_of(billing, token))[STORAGE].reserved == 600
    with pytest.raises(grpc.aio.AioRpcError) as other_amount:
        await internal.ReserveUsage(
            reserve(user, STORAGE, 700, "upload-a"), metadata=service_credential
        )
    assert other_amount.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in (other_amount.value.details() or "")
    # The same key, concurrently, still makes one reservation.
    answers = await asyncio.gather(
        *[
            internal.ReserveUsage(
                reserve(user, STORAGE, 100, "upload-b"), metadata=service_credential
            )
            for _ in range(20)
        ]
    )
    assert len({answer.reservation_id for answer in answers}) == 1
    assert (await usage_of(billing, token))[STORAGE].reserved == 700


async def test_concurrent_first_reservations_of_a_period_are_all_granted(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    # No counter exists before a user's first reservation of a metric in a period; the
    # requests that race to create it must all find room (the loser of the insert once
    # answered RESOURCE_EXHAUSTED, "would go -18 projects over").
    for round_ in range(10):
        user, token = new_user("free")
        answers = await asyncio.gather(
            *[
                billing.internal.ReserveUsage(
                    reserve(user, PROJECTS, 1, f"first-{round_}-{i}"),
                    metadata=service_credential,
                )
                for i in range(4)
            ],
            return_exceptions=True,
        )
        refused = [a for a in answers if isinstance(a, BaseException)]
        assert refused == [], f"round {round_}: {refused}"
        assert (await usage_of(billing, token))[PROJECTS].reserved == 4


async def test_two_thousand_concurrent_reservations_grant_exactly_the_limit(
    settings: BillingSettings,
    start_billing: StartBilling,
    connect: Callable[..., Billing],
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
    components: BillingComponents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gRPC core sheds calls beyond 1,000 waiting for the application on one server
    # (`grpc.server.max_pending_requests`), and calls still waiting after 30 s on a busy
    # machine, answering them CANCELLED before any handler runs: load shedding, not the
    # quota. Let all 2,000 in at once and wait for them.
    monkeypatch.setattr(
        runtime.server,
        "SERVER_OPTIONS",
        [
            *runtime.server.SERVER_OPTIONS,
            ("grpc.server.max_pending_requests", 4000),
            ("grpc.server.max_pending_requests_hard_limit", 8000),
            ("grpc.server_max_unrequested_time_in_server", 600),
        ],
    )
    # The production pool (10 + 10 overflow), not the tests' small one.
    billing = connect(await start_billing(dataclasses.replace(settings, db_pool_size=10)))
    user, token = new_user("thousand")  # 1,000 AI edits

    async def one(index: int) -> str | None:
        try:
            held = await billing.internal.ReserveUsage(
                reserve(user, AI, 1, f"burst-{index}"), metadata=service_credential, timeout=120
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return None
            raise
        return str(held.reservation_id)

    granted = [r for r in await asyncio.gather(*[one(i) for i in range(2000)]) if r]
    assert len(granted) == 1000
    usage = await usage_of(billing, token)
    assert (usage[AI].used, usage[AI].reserved) == (0, 1000)
    await assert_counters_match_ledger(components)

    # Then the same burst settles: half committed, half released, all at once, and the
    # counters still equal the ledger (a commit is a ledger row, a release is none).
    async def settle(index: int, reservation_id: str) -> None:
        if index % 2:
            await billing.internal.CommitUsage(
                billing_pb2.CommitUsageRequest(reservation_id=reservation_id),
                metadata=service_credential,
                timeout=120,
            )
        else:
            await billing.internal.ReleaseUsage(
                billing_pb2.ReleaseUsageRequest(reservation_id=reservation_id),
                metadata=service_credential,
                timeout=120,
            )

    await asyncio.gather(*[settle(i, r) for i, r in enumerate(granted)])
    usage = await usage_of(billing, token)
    assert (usage[AI].used, usage[AI].reserved) == (500, 0)
    await assert_counters_match_ledger(components)


async def test_expiry_returns_capacity_through_the_sweeper(
    settings: BillingSettings,
    start_billing: StartBilling,
    connect: Callable[..., Billing],
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    from services.billing.server import build

    clock = Clock()
    billing = connect(await start_billing(settings, clock=clock))
    user, token = new_user("tiny")
    held = await billing.internal.ReserveUsage(
        reserve(user, AI, 2, "abandoned", ttl=60), metadata=service_credential
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await billing.internal.ReserveUsage(
            reserve(user, AI, 1, "next"), metadata=service_credential
        )
    sweeper = build(settings, clock=clock)
    try:
        assert (await sweeper.workflows.sweep_once()).expired_reservations == 0
        clock.advance(seconds=61)
        # Past its expiry a reservation can no longer be committed, only swept.
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await billing.internal.CommitUsage(
                billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
                metadata=service_credential,
            )
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await sweeper.workflows.sweep_once()).expired_reservations >= 1
    finally:
        await sweeper.close()
    assert (await usage_of(billing, token))[AI].reserved == 0
    await billing.internal.ReserveUsage(reserve(user, AI, 1, "next"), metadata=service_credential)


async def test_ai_edits_of_last_month_do_not_count_this_month(
    settings: BillingSettings,
    start_billing: StartBilling,
    connect: Callable[..., Billing],
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    import datetime

    clock = Clock(datetime.datetime(2026, 1, 31, 23, 59, tzinfo=datetime.UTC))
    billing = connect(await start_billing(settings, clock=clock))
    user, token = new_user("tiny")
    for key in ("jan-1", "jan-2"):
        held = await billing.internal.ReserveUsage(
            reserve(user, AI, 1, key), metadata=service_credential
        )
        await billing.internal.CommitUsage(
            billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
            metadata=service_credential,
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await billing.internal.ReserveUsage(
            reserve(user, AI, 1, "jan-3"), metadata=service_credential
        )
    clock.advance(minutes=2)  # February, UTC
    usage = await usage_of(billing, token)
    assert usage[AI].used == 0
    assert usage[AI].period_start.ToDatetime(datetime.UTC) == datetime.datetime(
        2026, 2, 1, tzinfo=datetime.UTC
    )
    await billing.internal.ReserveUsage(reserve(user, AI, 1, "feb-1"), metadata=service_credential)


async def test_credit_gives_a_gauge_back_once(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
    components: BillingComponents,
) -> None:
    user, token = new_user("tiny")  # 1,000 bytes
    held = await billing.internal.ReserveUsage(
        reserve(user, STORAGE, 900, "asset-1"), metadata=service_credential
    )
    await billing.internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
        metadata=service_credential,
    )
    credit = billing_pb2.CreditUsageRequest(
        user_id=str(user), metric=STORAGE, amount=900, idempotency_key="delete-asset-1"
    )
    await billing.internal.CreditUsage(credit, metadata=service_credential)
    await billing.internal.CreditUsage(credit, metadata=service_credential)  # a retry
    assert (await usage_of(billing, token))[STORAGE].used == 0
    await billing.internal.ReserveUsage(
        reserve(user, STORAGE, 1000, "asset-2"), metadata=service_credential
    )
    with pytest.raises(grpc.aio.AioRpcError) as edits:
        await billing.internal.CreditUsage(
            billing_pb2.CreditUsageRequest(
                user_id=str(user), metric=AI, amount=1, idempotency_key="x"
            ),
            metadata=service_credential,
        )
    assert edits.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_counters_match_ledger(components)


async def test_the_ledger_is_append_only(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
    components: BillingComponents,
) -> None:
    from sqlalchemy.exc import DBAPIError

    user, _ = new_user("tiny")
    held = await billing.internal.ReserveUsage(
        reserve(user, AI, 1, "one"), metadata=service_credential
    )
    await billing.internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
        metadata=service_credential,
    )
    for statement in (
        "UPDATE usage_ledger SET delta = 0 WHERE user_id = :u",
        "DELETE FROM usage_ledger WHERE user_id = :u",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with components.database.transaction() as session:
                await session.execute(text(statement), {"u": user})


async def test_a_downgrade_keeps_everything_and_refuses_only_new_usage(
    billing: Billing,
    identity: FakeIdentity,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
    components: BillingComponents,
) -> None:
    user, token = new_user("thousand")  # 10,000 bytes
    held = await billing.internal.ReserveUsage(
        reserve(user, STORAGE, 5000, "big"), metadata=service_credential
    )
    await billing.internal.CommitUsage(
        billing_pb2.CommitUsageRequest(reservation_id=held.reservation_id),
        metadata=service_credential,
    )
    identity.user_tiers[str(user)] = "tiny"  # 1,000 bytes
    # The tier is cached; billing forgets it when identity's user.tier_changed arrives.
    identity.add_event("user.tier_changed", user, to="tiny", set_by="operator")
    deadline = time.monotonic() + 20
    while (await usage_of(billing, token))[STORAGE].limit != 1000:
        assert time.monotonic() < deadline, "the tier change never reached billing"
        await asyncio.sleep(0.05)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await billing.internal.ReserveUsage(
            reserve(user, STORAGE, 100, "more"), metadata=service_credential
        )
    message = refused.value.details() or ""
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "storage limit reached" in message
    assert "the Tiny plan allows 1000 bytes" in message
    assert "you have used 4.88 KiB" in message
    assert "this 100 bytes would go 4 KiB over the limit" in message
    usage = await usage_of(billing, token)
    assert (usage[STORAGE].used, usage[STORAGE].limit) == (5000, 1000)
    # Giving space back still works, and nothing was deleted.
    await billing.internal.CreditUsage(
        billing_pb2.CreditUsageRequest(
            user_id=str(user), metric=STORAGE, amount=4500, idempotency_key="cleanup"
        ),
        metadata=service_credential,
    )
    await billing.internal.ReserveUsage(
        reserve(user, STORAGE, 400, "fits-now"), metadata=service_credential
    )
    await assert_counters_match_ledger(components)


async def test_internal_rpcs_need_the_service_credential(
    billing: Billing, new_user: Callable[..., tuple[uuid.UUID, Metadata]]
) -> None:
    user, token = new_user()
    calls = [
        billing.internal.ReserveUsage(reserve(user, AI, 1, "k"), metadata=token),
        billing.internal.CommitUsage(
            billing_pb2.CommitUsageRequest(reservation_id=str(uuid.uuid4()))
        ),
        billing.internal.ReleaseUsage(
            billing_pb2.ReleaseUsageRequest(reservation_id=str(uuid.uuid4())), metadata=token
        ),
        billing.internal.CreditUsage(
            billing_pb2.CreditUsageRequest(
                user_id=str(user), metric=STORAGE, amount=1, idempotency_key="k"
            ),
            metadata=(("x-pixelshop-service-token", "forged"),),
        ),
        billing.internal.PurgeUser(billing_pb2.PurgeUserRequest(user_id=str(user))),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_users_token_sees_only_their_own_usage(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    mine, my_token = new_user("tiny")
    _, their_token = new_user("tiny")
    await billing.internal.ReserveUsage(reserve(mine, AI, 2, "mine"), metadata=service_credential)
    assert (await usage_of(billing, my_token))[AI].reserved == 2
    theirs = await usage_of(billing, their_token)
    assert all(value.used == 0 and value.reserved == 0 for value in theirs.values())
    subscription = await billing.public.GetSubscription(
        billing_pb2.GetSubscriptionRequest(), metadata=their_token
    )
    assert subscription.subscription.tier == "free"
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await billing.public.GetUsage(billing_pb2.GetUsageRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (billing_pb2.ReserveUsageRequest(metric=AI, amount=1, idempotency_key="k"), "user_id"),
        (
            billing_pb2.ReserveUsageRequest(
                user_id=str(uuid.uuid4()), amount=1, idempotency_key="k"
            ),
            "metric",
        ),
        (
            billing_pb2.ReserveUsageRequest(
                user_id=str(uuid.uuid4()), metric=99, amount=1, idempotency_key="k"
            ),
            "metric",
        ),
        (
            billing_pb2.ReserveUsageRequest(
                user_id=str(uuid.uuid4()), metric=AI, amount=0, idempotency_key="k"
            ),
            "amount",
        ),
        (
            billing_pb2.ReserveUsageRequest(user_id=str(uuid.uuid4()), metric=AI, amount=1),
            "idempotency_key",
        ),
        (
            billing_pb2.ReserveUsageRequest(
                user_id=str(uuid.uuid4()), metric=AI, amount=1, idempotency_key="k\x00"
            ),
            "idempotency_key",
        ),
        (
            billing_pb2.ReserveUsageRequest(
                user_id=str(uuid.uuid4()), metric=AI, amount=1, idempotency_key="k" * 256
            ),
            "idempotency_key",
        ),
    ],
)
async def test_bad_reservations_name_the_field(
    billing: Billing, service_credential: Metadata, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await billing.internal.ReserveUsage(request_, metadata=service_credential)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(field)


async def test_reservation_and_credit_keys_are_taken_whole_and_as_sent(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    """One rule for every idempotency key (runtime.validation.idempotency_key): up to
    255 printable ASCII characters, never cut short or trimmed, so keys that differ
    anywhere (past character 200, or by a space) are different reservations."""
    user, _ = new_user()
    internal = billing.internal
    prefix = "edit:" + "0" * 195
    keys = [prefix + "-one", prefix + "-two", "k" * 255, "edit-1", " edit-1"]
    held = [
        await internal.ReserveUsage(reserve(user, AI, 1, key), metadata=service_credential)
        for key in keys
    ]
    assert len({r.reservation_id for r in held}) == len(keys)
    again = await internal.ReserveUsage(reserve(user, AI, 1, keys[0]), metadata=service_credential)
    assert again.reservation_id == held[0].reservation_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await internal.CreditUsage(
            billing_pb2.CreditUsageRequest(
                user_id=str(user), metric=STORAGE, amount=1, idempotency_key="k" * 256
            ),
            metadata=service_credential,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == ("idempotency_key: must be 1-255 printable ASCII characters")


async def test_metrics_count_grants_and_denials(
    billing: Billing,
    new_user: Callable[..., tuple[uuid.UUID, Metadata]],
    service_credential: Metadata,
) -> None:
    user, _ = new_user("tiny")
    await billing.internal.ReserveUsage(
        reserve(user, PROJECTS, 1, "p1"), metadata=service_credential
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await billing.internal.ReserveUsage(
            reserve(user, PROJECTS, 1, "p2"), metadata=service_credential
        )
    rendered = billing.server.metrics.render()
    assert 'pixelshop_quota_reservations_total{metric="projects",outcome="granted"}' in rendered
    assert 'pixelshop_quota_reservations_total{metric="projects",outcome="denied"}' in rendered


def test_tier_info_limits_are_what_billing_enforces() -> None:
    from runtime.usage import Metric
    from services.billing.service import limit_of

    tier = TierInfo(code="t", ai_edits_per_month=3, storage_bytes=4, max_projects=5)
    assert [limit_of(tier, m) for m in Metric] == [3, 4, 5]
