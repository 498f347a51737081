"""Fixtures of the billing tests: a FakeIdentity, a fake Stripe API, billing servers.

Servers run in process on port 0 and are called over a real grpc.aio channel; Stripe is
the real stripe client against tests/support/fake_stripe.py. A test that needs a clock
of its own passes one (`Clock`) to `start_billing`.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from pixelshop.billing.v1 import billing_pb2_grpc
from pixelshop.identity.v1 import identity_pb2

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.server import RunningServer
from runtime.settings import Secret
from services.billing.server import BillingComponents, build, start
from services.billing.settings import BillingSettings
from tests.support.fake_identity import FakeIdentity
from tests.support.fake_stripe import (
    PRICE_PRO,
    SECRET_KEY,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET_PREVIOUS,
    FakeStripe,
)
from tests.support.settings import INTERNAL_SECRET, service_settings

Metadata = tuple[tuple[str, str], ...]

# A tier with round limits, for concurrency and downgrade tests.
THOUSAND = identity_pb2.Tier(
    code="thousand",
    name="Thousand",
    limits=identity_pb2.TierLimits(
        ai_edits_per_month=1000, storage_bytes=10_000, max_projects=3, max_upload_bytes=10_000
    ),
)
TINY = identity_pb2.Tier(
    code="tiny",
    name="Tiny",
    limits=identity_pb2.TierLimits(
        ai_edits_per_month=2, storage_bytes=1_000, max_projects=1, max_upload_bytes=1_000
    ),
)


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: datetime.datetime | None = None) -> None:
        self.now = now or datetime.datetime(2026, 3, 14, 12, 0, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


@pytest.fixture(scope="session")
async def identity() -> AsyncIterator[FakeIdentity]:
    fake = await FakeIdentity().start()
    fake.tiers["thousand"] = THOUSAND
    fake.tiers["tiny"] = TINY
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture
def stripe_api(fake_stripe: FakeStripe) -> FakeStripe:
    fake_stripe.reset()
    return fake_stripe


@pytest.fixture
def settings(migrated_db: str, identity: FakeIdentity) -> BillingSettings:
    """Billing with Stripe off (the embedded default)."""
    return service_settings(
        BillingSettings,
        migrated_db,
        identity_addr=identity.address,
        sweep_interval_seconds=0,
        tier_cache_seconds=30,
        event_poll_seconds=0.05,
    )


@pytest.fixture
def stripe_settings(
    migrated_db: str, identity: FakeIdentity, stripe_api: FakeStripe
) -> BillingSettings:
    return service_settings(
        BillingSettings,
        migrated_db,
        identity_addr=identity.address,
        sweep_interval_seconds=0,
        event_poll_seconds=0.05,
        stripe_secret_key=Secret(SECRET_KEY),
        stripe_webhook_secret=Secret(WEBHOOK_SECRET),
        stripe_webhook_secret_previous=Secret(WEBHOOK_SECRET_PREVIOUS),
        stripe_price_pro=PRICE_PRO,
        stripe_api_base=stripe_api.base_url,
        stripe_max_retries=0,
        stripe_timeout_seconds=1.0,
    )


StartBilling = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def start_billing() -> AsyncIterator[StartBilling]:
    running: list[RunningServer] = []

    async def starter(settings: BillingSettings, **options: Any) -> RunningServer:
        server = await start(settings, port=0, **options)
        running.append(server)
        return server

    yield starter
    for server in running:
        await server.stop(0)


@dataclass
class Billing:
    """A running billing server and stubs on a real channel."""

    server: RunningServer
    channel: grpc.aio.Channel
    public: billing_pb2_grpc.BillingServiceStub
    internal: billing_pb2_grpc.BillingInternalServiceStub


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[RunningServer], Billing]]:
    channels: list[grpc.aio.Channel] = []

    def make(server: RunningServer) -> Billing:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return Billing(
            server,
            channel,
            billing_pb2_grpc.BillingServiceStub(channel),
            billing_pb2_grpc.BillingInternalServiceStub(channel),
        )

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
async def billing(
    settings: BillingSettings,
    start_billing: StartBilling,
    connect: Callable[[RunningServer], Billing],
) -> Billing:
    return connect(await start_billing(settings))


@pytest.fixture
async def components(settings: BillingSettings) -> AsyncIterator[BillingComponents]:
    """A second set of billing's parts on the same database, to look at rows directly."""
    built = build(settings)
    yield built
    await built.close()


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def new_user(identity: FakeIdentity) -> Callable[..., tuple[uuid.UUID, Metadata]]:
    def make(tier: str = "free") -> tuple[uuid.UUID, Metadata]:
        user_id, token = identity.new_user(tier)
        return user_id, bearer(token)

    return make


@pytest.fixture
def service_credential() -> Metadata:
    """What assets or projects send to internal RPCs (a fresh token: they live 5 minutes)."""
    return ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "assets").token()),)


@pytest.fixture
async def paid(
    stripe_settings: BillingSettings,
    start_billing: StartBilling,
    connect: Callable[[RunningServer], Billing],
) -> Billing:
    """Billing with Stripe on (the local fake Stripe)."""
    return connect(await start_billing(stripe_settings))
