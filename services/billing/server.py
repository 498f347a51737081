"""Composition root of billing: builds every part explicitly and serves it.

`build` wires the database, identity (tiers, outbox), the Stripe adapter (only when
STRIPE_SECRET_KEY is set), the services and the workflows; `start` puts them behind a
gRPC server (tests call it with port 0, a clock and a tier lookup of their own); `main` is
`python -m services.billing` (serve, run one `sweep`, `set-tier` for development, or list and
replay parked events: `parked`, `replay-parked`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.clock import Clock, utc_now
from runtime.db import Database
from runtime.events import USER_DELETED, USER_TIER_CHANGED, CursorStore, OutboxFollower
from runtime.interceptors import AuthPolicy
from runtime.logs import configure_logging
from runtime.loop import run
from runtime.metrics import Metrics
from runtime.parked import PARKED_COMMANDS, add_parked_commands, run_parked_command_from
from runtime.peers.identity import CachedTierLookup, IdentityClient
from runtime.server import Registration, RunningServer, jwks_verifier, serve, start_server
from runtime.settings import SettingsError
from runtime.tombstones import Tombstones
from services.billing.api import BillingApi, BillingInternalApi
from services.billing.models import SCHEMA, deleted_users, event_cursors, parked_events
from services.billing.service import SubscriptionService, UsageService
from services.billing.settings import BillingSettings, load
from services.billing.stripe_api import StripeApi
from services.billing.workflows import BillingWorkflows

log = logging.getLogger("pixelshop.billing")

PUBLIC_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
INTERNAL_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingInternalService"].full_name
WEBHOOK_METHOD = f"/{PUBLIC_SERVICE}/HandleStripeWebhook"


@dataclass
class BillingComponents:
    """Everything `build` made; `close` releases it in reverse order."""

    settings: BillingSettings
    database: Database
    identity: IdentityClient
    tiers: CachedTierLookup
    tombstones: Tombstones
    usage: UsageService
    subscriptions: SubscriptionService
    workflows: BillingWorkflows
    metrics: Metrics
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def build(
    settings: BillingSettings,
    *,
    clock: Clock = utc_now,
    identity_tiers: Any | None = None,
) -> BillingComponents:
    """`identity_tiers` replaces identity as the receiver of tier changes (tests)."""
    tokens = ServiceTokens(settings.internal_secret.reveal(), settings.service_name)
    closers: list[Callable[[], Awaitable[None]]] = []
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    closers.append(database.close)
    identity_peer = PeerChannel(settings.identity_addr, tokens)
    closers.append(identity_peer.close)
    # The client's tier cache; billing forgets a user's entry the moment it changes it.
    identity = IdentityClient(identity_peer, tier_cache_seconds=settings.tier_cache_seconds)
    tiers = identity
    metrics = Metrics(settings.service_name)
    tombstones = Tombstones(database, deleted_users)
    usage = UsageService(
        tombstones=tombstones,
        clock=clock,
        default_ttl_seconds=settings.reservation_ttl_seconds,
        max_ttl_seconds=settings.reservation_max_ttl_seconds,
        metrics=metrics,
    )
    subscriptions = SubscriptionService(tier_prices=settings.tier_prices, clock=clock)
    workflows = BillingWorkflows(
        database=database,
        settings=settings,
        usage=usage,
        subscriptions=subscriptions,
        tiers=tiers,
        identity=identity_tiers if identity_tiers is not None else identity,
        tombstones=tombstones,
        stripe_api=StripeApi(settings) if settings.stripe_configured else None,
        metrics=metrics,
        clock=clock,
    )
    return BillingComponents(
        settings,
        database,
        identity,
        tiers,
        tombstones,
        usage,
        subscriptions,
        workflows,
        metrics,
        closers,
    )


def build_follower(components: BillingComponents, metrics: Metrics | None = None) -> OutboxFollower:
    """The leader follows identity's outbox: `user.deleted` records the tombstone and the
    purge follows outside any transaction; `user.tier_changed` forgets the cached tier. The
    `parked`/`replay-parked` commands use the same handlers and purge."""
    workflows = components.workflows
    return OutboxFollower(
        components.identity,
        components.database,
        CursorStore(components.database, event_cursors),
        parked_events,
        {USER_DELETED: workflows.user_deleted, USER_TIER_CHANGED: workflows.tier_changed},
        name=components.settings.service_name,
        after_round=workflows.purge_deleted_users,
        metrics=metrics,
        poll_seconds=components.settings.event_poll_seconds,
    )


async def start(
    settings: BillingSettings,
    *,
    port: int | None = None,
    clock: Clock = utc_now,
    identity_tiers: Any | None = None,
) -> RunningServer:
    components = build(settings, clock=clock, identity_tiers=identity_tiers)
    registrations = [
        Registration(
            PUBLIC_SERVICE,
            BillingApi(
                database=components.database,
                usage=components.usage,
                subscriptions=components.subscriptions,
                tiers=components.tiers,
                workflows=components.workflows,
                checkout_success_url=settings.checkout_success_url,
                checkout_cancel_url=settings.checkout_cancel_url,
                portal_return_url=settings.portal_return_url,
            ),
            billing_pb2_grpc.add_BillingServiceServicer_to_server,
        ),
        Registration(
            INTERNAL_SERVICE,
            BillingInternalApi(
                database=components.database,
                usage=components.usage,
                tiers=components.tiers,
                workflows=components.workflows,
                tombstones=components.tombstones,
            ),
            billing_pb2_grpc.add_BillingInternalServiceServicer_to_server,
        ),
    ]
    policy = AuthPolicy(
        user_services=frozenset({PUBLIC_SERVICE}),
        internal_services=frozenset({INTERNAL_SERVICE}),
        anonymous_methods=frozenset({WEBHOOK_METHOD}),
        refused_user=components.tombstones.is_deleted,
    )
    try:
        running = await start_server(
            settings,
            registrations,
            policy,
            jwks_verifier(settings, components.identity.jwks),
            port=port,
            metrics=components.metrics,
        )
    except BaseException:
        await components.close()
        raise
    running.on_close.append(components.close)
    follower = build_follower(components, components.metrics)
    running.background.append(asyncio.create_task(follower.run(), name="billing-events"))
    running.background.append(
        asyncio.create_task(components.tombstones.run(), name="billing-tombstones")
    )
    if settings.sweep_interval_seconds > 0:
        running.background.append(
            asyncio.create_task(
                components.workflows.run_periodically(settings.sweep_interval_seconds),
                name="billing-sweeper",
            )
        )
    return running


async def _serve(settings: BillingSettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


async def _sweep(settings: BillingSettings) -> None:
    components = build(settings)
    try:
        report = await components.workflows.sweep_once()
    finally:
        await components.close()
    print(json.dumps(asdict(report)))


async def _set_tier(settings: BillingSettings, user_id: uuid.UUID, tier_code: str) -> None:
    components = build(settings)
    try:
        await components.workflows.record_tier(user_id, tier_code)
    finally:
        await components.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.billing",
        description="The billing service. Settings come from PIXELSHOP_BILLING_* and STRIPE_*.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    commands.add_parser("sweep", help="expire reservations, relay tier changes, purge; once")
    tier = commands.add_parser(
        "set-tier", help="record a tier identity's set-tier command changed (no Stripe)"
    )
    tier.add_argument("user_id", help="the user's id")
    tier.add_argument("tier", help="tier code, e.g. free or pro")
    add_parked_commands(commands)
    options = parser.parse_args(argv)
    try:
        settings = load()
    except SettingsError as error:
        print(f"billing: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if options.command == "sweep":
        run(_sweep(settings))
    elif options.command == "set-tier":
        run(_set_tier(settings, uuid.UUID(options.user_id), options.tier))
    elif options.command in PARKED_COMMANDS:
        command = run_parked_command_from(partial(build, settings), build_follower, options)
        return run(command)
    else:
        run(_serve(settings))
    return 0
