"""Composition root of assets: builds every part explicitly and serves it.

`build` wires the database, object store, quota, identity client, tombstones, the service
(rules, inside a caller's transaction), the workflows (uploads, deletion, purges) and the
sweeper;
`start` puts them behind a gRPC server (tests call it with port 0 and their own store);
`main` is `python -m services.assets` (serve, run one `sweep`, or list and replay parked
events: `parked`, `replay-parked`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial

from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.db import Database
from runtime.events import OutboxFollower
from runtime.interceptors import AuthPolicy
from runtime.logs import configure_logging
from runtime.loop import run
from runtime.metrics import Metrics
from runtime.pagination import PageTokens
from runtime.parked import PARKED_COMMANDS, add_parked_commands, run_parked_command_from
from runtime.peers.billing import BillingQuota, Quota, UnlimitedQuota
from runtime.peers.identity import IdentityClient, TierLookup
from runtime.server import Registration, RunningServer, jwks_verifier, serve, start_server
from runtime.tombstones import Tombstones, deletion_follower
from services.assets.api import AssetApi, AssetInternalApi
from services.assets.models import SCHEMA, deleted_users, event_cursors, parked_events
from services.assets.service import AssetService
from services.assets.settings import AssetsSettings, load
from services.assets.storage import ObjectStore, build_store
from services.assets.workflows import AssetSweeper, AssetWorkflows

log = logging.getLogger("pixelshop.assets")

ASSET_SERVICE = assets_pb2.DESCRIPTOR.services_by_name["AssetService"].full_name
ASSET_INTERNAL_SERVICE = assets_pb2.DESCRIPTOR.services_by_name["AssetInternalService"].full_name


@dataclass
class AssetsComponents:
    """Everything `build` made; `close` releases it in reverse order."""

    settings: AssetsSettings
    database: Database
    store: ObjectStore
    identity: IdentityClient
    tombstones: Tombstones
    service: AssetService
    workflows: AssetWorkflows
    sweeper: AssetSweeper
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def build(
    settings: AssetsSettings,
    *,
    store: ObjectStore | None = None,
    quota: Quota | None = None,
    tiers: TierLookup | None = None,
) -> AssetsComponents:
    """`store`, `quota` and `tiers` replace the configured ones (tests)."""
    tokens = ServiceTokens(settings.internal_secret.reveal(), settings.service_name)
    closers: list[Callable[[], Awaitable[None]]] = []
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    closers.append(database.close)
    identity_peer = PeerChannel(settings.identity_addr, tokens)
    closers.append(identity_peer.close)
    identity = IdentityClient(identity_peer, tier_cache_seconds=settings.tier_cache_seconds)
    if quota is None:
        if settings.quota == "billing":
            billing_peer = PeerChannel(settings.billing_addr, tokens)
            closers.append(billing_peer.close)
            quota = BillingQuota(billing_peer)
        else:
            quota = UnlimitedQuota()
    store = store if store is not None else build_store(settings)
    tombstones = Tombstones(database, deleted_users)
    service = AssetService(store=store, settings=settings, guard=tombstones)
    workflows = AssetWorkflows(
        database=database,
        service=service,
        store=store,
        quota=quota,
        tiers=tiers if tiers is not None else identity,
        settings=settings,
    )
    sweeper = AssetSweeper(workflows=workflows, settings=settings)
    return AssetsComponents(
        settings, database, store, identity, tombstones, service, workflows, sweeper, closers
    )


def build_follower(components: AssetsComponents, metrics: Metrics | None = None) -> OutboxFollower:
    """`user.deleted` → the tombstone, then the purge workflow (runtime.tombstones)."""
    return deletion_follower(
        components.identity,
        components.database,
        components.tombstones,
        components.workflows.purge_user,
        cursors=event_cursors,
        parked=parked_events,
        name=components.settings.service_name,
        poll_seconds=components.settings.event_poll_seconds,
        metrics=metrics,
    )


async def start(
    settings: AssetsSettings,
    *,
    port: int | None = None,
    store: ObjectStore | None = None,
    quota: Quota | None = None,
) -> RunningServer:
    components = build(settings, store=store, quota=quota)
    registrations = [
        Registration(
            ASSET_SERVICE,
            AssetApi(
                database=components.database,
                service=components.service,
                workflows=components.workflows,
                page_tokens=PageTokens.for_service(
                    settings.service_name, settings.internal_secret.reveal()
                ),
                content_cache_seconds=settings.content_cache_seconds,
            ),
            assets_pb2_grpc.add_AssetServiceServicer_to_server,
        ),
        Registration(
            ASSET_INTERNAL_SERVICE,
            AssetInternalApi(
                database=components.database,
                service=components.service,
                workflows=components.workflows,
            ),
            assets_pb2_grpc.add_AssetInternalServiceServicer_to_server,
        ),
    ]
    policy = AuthPolicy(
        user_services=frozenset({ASSET_SERVICE}),
        internal_services=frozenset({ASSET_INTERNAL_SERVICE}),
        # A deleted account's still-valid token is refused on every call (ADR 0015).
        refused_user=components.tombstones.is_deleted,
    )
    try:
        await components.tombstones.load()
        running = await start_server(
            settings,
            registrations,
            policy,
            jwks_verifier(settings, components.identity.jwks),
            port=port,
        )
    except BaseException:
        await components.close()
        raise
    running.on_close.append(components.close)
    tombstones = components.tombstones
    follower = build_follower(components, running.metrics)
    running.background.append(asyncio.create_task(follower.run(), name="assets-events"))
    running.background.append(asyncio.create_task(tombstones.run(), name="assets-tombstones"))
    if settings.sweep_interval_seconds > 0:
        running.background.append(
            asyncio.create_task(
                components.sweeper.run_periodically(settings.sweep_interval_seconds),
                name="assets-sweeper",
            )
        )
    return running


async def _serve(settings: AssetsSettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


async def _sweep(settings: AssetsSettings) -> None:
    components = build(settings)
    try:
        report = await components.sweeper.sweep_once()
    finally:
        await components.close()
    print(json.dumps(asdict(report)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.assets",
        description="The assets service. Settings come from PIXELSHOP_ASSETS_* variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    commands.add_parser("sweep", help="run one sweep of leftovers and exit")
    add_parked_commands(commands)
    options = parser.parse_args(argv)
    settings = load()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if options.command == "sweep":
        run(_sweep(settings))
    elif options.command in PARKED_COMMANDS:
        command = run_parked_command_from(partial(build, settings), build_follower, options)
        return run(command)
    else:
        run(_serve(settings))
    return 0
