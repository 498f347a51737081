"""Composition root of presets: builds everything explicitly and serves it.

start(settings) -> RunningServer   (tests pass port=0)
main()                             (python -m services.presets)
"""

from __future__ import annotations

import asyncio
import uuid

from pixelshop.presets.v1 import presets_pb2, presets_pb2_grpc

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.db import Database
from runtime.errors import NotFound
from runtime.events import USER_DELETED, CursorStore, OutboxFollower
from runtime.interceptors import AuthPolicy
from runtime.logs import configure_logging
from runtime.pagination import PageTokens
from runtime.peers.identity import IdentityClient
from runtime.server import Registration, RunningServer, jwks_verifier, serve, start_server
from services.presets.api import PresetApi, PresetInternalApi
from services.presets.models import SCHEMA, event_cursors
from services.presets.repository import PresetRepository
from services.presets.service import PresetCatalog
from services.presets.settings import PresetsSettings, load

PUBLIC_SERVICE = presets_pb2.DESCRIPTOR.services_by_name["PresetService"].full_name
INTERNAL_SERVICE = presets_pb2.DESCRIPTOR.services_by_name["PresetInternalService"].full_name

# SPEC section 6: every public method needs a user token; internal ones the service credential.
AUTH_POLICY = AuthPolicy(
    user_services=frozenset({PUBLIC_SERVICE}),
    internal_services=frozenset({INTERNAL_SERVICE}),
)


class IdentityTierFeatures:
    """Tier feature flags from identity (its failures arrive as domain errors)."""

    def __init__(self, identity: IdentityClient) -> None:
        self._identity = identity

    async def allows(self, user_id: uuid.UUID, feature: str) -> bool:
        try:
            tier = await self._identity.user_tier(user_id)
        except NotFound:
            return False  # a user identity does not know has no plan at all
        return tier.allows(feature)


async def start(settings: PresetsSettings, *, port: int | None = None) -> RunningServer:
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    identity_channel = PeerChannel(
        settings.identity_addr, ServiceTokens(settings.internal_secret.reveal(), "presets")
    )
    try:
        identity = IdentityClient(identity_channel, tier_cache_seconds=settings.tier_cache_seconds)
        tiers = IdentityTierFeatures(identity)
        registrations = [
            Registration(
                PUBLIC_SERVICE,
                PresetApi(
                    database,
                    tiers,
                    PageTokens.for_service(
                        settings.service_name, settings.internal_secret.reveal()
                    ),
                ),
                presets_pb2_grpc.add_PresetServiceServicer_to_server,
            ),
            Registration(
                INTERNAL_SERVICE,
                PresetInternalApi(database, tiers),
                presets_pb2_grpc.add_PresetInternalServiceServicer_to_server,
            ),
        ]
        running = await start_server(
            settings,
            registrations,
            AUTH_POLICY,
            jwks_verifier(settings, identity.jwks),
            port=port,
        )
    except BaseException:
        await identity_channel.close()
        await database.close()
        raise
    running.on_close += [database.close, identity_channel.close]
    follower = OutboxFollower(
        identity,
        CursorStore(database, event_cursors),
        {USER_DELETED: lambda event: purge_user(database, tiers, event.user_id)},
        poll_seconds=settings.event_poll_seconds,
    )
    running.background.append(asyncio.create_task(follower.run()))
    return running


async def purge_user(database: Database, tiers: IdentityTierFeatures, user_id: uuid.UUID) -> None:
    """A deleted account's presets and likes go (identity's `user.deleted` event)."""
    async with database.transaction() as session:
        await PresetCatalog(PresetRepository(session), tiers).purge_user(user_id)


async def _serve(settings: PresetsSettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


def main() -> None:
    settings = load()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(_serve(settings))
