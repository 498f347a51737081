"""Composition root of presets: builds every part explicitly and serves it.

`build` wires the database, the identity client (JWKS, tiers, outbox), the tombstones of
deleted accounts, the catalog and the publish workflow; `start` puts them behind a gRPC
server (tests call it with port 0 and may pass their own tier lookup); `main` is
`python -m services.presets` (serve, or list and replay parked events: `parked`,
`replay-parked`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc

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
from runtime.peers.identity import IdentityClient, TierLookup
from runtime.server import Registration, RunningServer, jwks_verifier, serve, start_server
from runtime.tombstones import Tombstones, deletion_follower
from services.presets.api import PresetApi, PresetInternalApi
from services.presets.models import SCHEMA, deleted_users, event_cursors, parked_events
from services.presets.service import PresetCatalog
from services.presets.settings import PresetsSettings, load
from services.presets.workflows import PresetPublishing

PUBLIC_SERVICE = presets_pb2.DESCRIPTOR.services_by_name["PresetService"].full_name
INTERNAL_SERVICE = presets_pb2.DESCRIPTOR.services_by_name["PresetInternalService"].full_name

# SPEC section 6: every public method needs a user token; internal ones the service credential.
AUTH_POLICY = AuthPolicy(
    user_services=frozenset({PUBLIC_SERVICE}),
    internal_services=frozenset({INTERNAL_SERVICE}),
)


@dataclass
class PresetsComponents:
    """Everything `build` made; `close` releases it in reverse order."""

    settings: PresetsSettings
    database: Database
    identity: IdentityClient
    tombstones: Tombstones
    catalog: PresetCatalog
    publishing: PresetPublishing
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def build(settings: PresetsSettings, *, tiers: TierLookup | None = None) -> PresetsComponents:
    """`tiers` replaces identity as the source of users' plans (tests)."""
    tokens = ServiceTokens(settings.internal_secret.reveal(), settings.service_name)
    closers: list[Callable[[], Awaitable[None]]] = []
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    closers.append(database.close)
    identity_peer = PeerChannel(settings.identity_addr, tokens)
    closers.append(identity_peer.close)
    identity = IdentityClient(identity_peer, tier_cache_seconds=settings.tier_cache_seconds)
    tombstones = Tombstones(database, deleted_users)
    catalog = PresetCatalog(tombstones)
    publishing = PresetPublishing(database, catalog, tiers if tiers is not None else identity)
    return PresetsComponents(settings, database, identity, tombstones, catalog, publishing, closers)


async def start(
    settings: PresetsSettings, *, port: int | None = None, tiers: TierLookup | None = None
) -> RunningServer:
    components = build(settings, tiers=tiers)
    database, catalog = components.database, components.catalog
    registrations = [
        Registration(
            PUBLIC_SERVICE,
            PresetApi(
                database=database,
                catalog=catalog,
                publishing=components.publishing,
                page_tokens=PageTokens.for_service(
                    settings.service_name, settings.internal_secret.reveal()
                ),
            ),
            presets_pb2_grpc.add_PresetServiceServicer_to_server,
        ),
        Registration(
            INTERNAL_SERVICE,
            PresetInternalApi(database=database, catalog=catalog),
            presets_pb2_grpc.add_PresetInternalServiceServicer_to_server,
        ),
    ]
    try:
        await components.tombstones.load()
        running = await start_server(
            settings,
            registrations,
            dataclasses.replace(AUTH_POLICY, refused_user=components.tombstones.is_deleted),
            jwks_verifier(settings, components.identity.jwks),
            port=port,
        )
    except BaseException:
        await components.close()
        raise
    running.on_close.append(components.close)
    tombstones = components.tombstones
    follower = build_follower(components, running.metrics)
    running.background.append(asyncio.create_task(follower.run(), name="presets-events"))
    running.background.append(asyncio.create_task(tombstones.run(), name="presets-tombstones"))
    return running


def build_follower(components: PresetsComponents, metrics: Metrics | None = None) -> OutboxFollower:
    """`user.deleted` → the tombstone, then the user's presets and likes go
    (runtime.tombstones)."""
    database, catalog = components.database, components.catalog
    return deletion_follower(
        components.identity,
        database,
        components.tombstones,
        lambda user_id: purge_user(database, catalog, user_id),
        cursors=event_cursors,
        parked=parked_events,
        name=components.settings.service_name,
        poll_seconds=components.settings.event_poll_seconds,
        metrics=metrics,
    )


async def purge_user(database: Database, catalog: PresetCatalog, user_id: uuid.UUID) -> None:
    """A deleted account's presets and likes go (identity's `user.deleted` event)."""
    async with database.transaction() as session:
        await catalog.purge_user(session, user_id)


async def _serve(settings: PresetsSettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.presets",
        description="The presets service. Settings come from PIXELSHOP_PRESETS_* variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    add_parked_commands(commands)
    options = parser.parse_args(argv)
    settings = load()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if options.command in PARKED_COMMANDS:
        command = run_parked_command_from(partial(build, settings), build_follower, options)
        return run(command)
    run(_serve(settings))
    return 0
