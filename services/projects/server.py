"""Composition root of projects: builds every part explicitly and serves it.

`build` wires the database, the peers (identity, assets, presets, billing), the engine,
the service, the workflows and the sweeper; `start` puts them behind a gRPC server (tests
call it with port 0 and their own fakes); `main` is `python -m services.projects` (serve,
run one `sweep`, or list and replay parked events: `parked`, `replay-parked`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from pixelshop.projects.v1 import projects_pb2, projects_pb2_grpc

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
from runtime.peers.assets import AssetsClient
from runtime.peers.billing import BillingQuota, Quota, UnlimitedQuota
from runtime.peers.identity import IdentityClient
from runtime.peers.presets import PresetsClient
from runtime.server import Registration, RunningServer, jwks_verifier, serve, start_server
from runtime.tombstones import Tombstones, deletion_follower
from services.projects.api import EncodedEdits, ProjectApi, ProjectInternalApi
from services.projects.engines import EditEngine
from services.projects.engines.gemini import GeminiEngine
from services.projects.engines.local import LocalEngine
from services.projects.models import SCHEMA, deleted_users, event_cursors, parked_events
from services.projects.service import ProjectService
from services.projects.settings import ProjectsSettings, load
from services.projects.workflows import Assets, EditWorkflows, Presets, ProjectSweeper

log = logging.getLogger("pixelshop.projects")

PROJECT_SERVICE = projects_pb2.DESCRIPTOR.services_by_name["ProjectService"].full_name
PROJECT_INTERNAL_SERVICE = projects_pb2.DESCRIPTOR.services_by_name[
    "ProjectInternalService"
].full_name


def build_engine(settings: ProjectsSettings) -> EditEngine:
    if settings.engine_name == "gemini":
        return GeminiEngine(
            api_key=settings.gemini_api_key.reveal(),
            model=settings.gemini_model,
            base_url=settings.gemini_base_url,
            max_attempts=settings.gemini_max_attempts,
            backoff_seconds=settings.gemini_backoff_seconds,
        )
    return LocalEngine()


@dataclass
class ProjectsComponents:
    """Everything `build` made; `close` releases it in reverse order."""

    settings: ProjectsSettings
    database: Database
    identity: IdentityClient
    tombstones: Tombstones
    service: ProjectService
    workflows: EditWorkflows
    sweeper: ProjectSweeper
    metrics: Metrics
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def build(
    settings: ProjectsSettings,
    *,
    quota: Quota | None = None,
    engine: EditEngine | None = None,
    assets: Assets | None = None,
    presets: Presets | None = None,
    metrics: Metrics | None = None,
) -> ProjectsComponents:
    tokens = ServiceTokens(settings.internal_secret.reveal(), settings.service_name)
    closers: list[Callable[[], Awaitable[None]]] = []
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    closers.append(database.close)

    def peer(address: str) -> PeerChannel:
        channel = PeerChannel(address, tokens)
        closers.append(channel.close)
        return channel

    identity = IdentityClient(
        peer(settings.identity_addr), tier_cache_seconds=settings.tier_cache_seconds
    )
    if quota is None:
        quota = (
            BillingQuota(peer(settings.billing_addr))
            if settings.quota == "billing"
            else UnlimitedQuota()
        )
    assets = assets or AssetsClient(peer(settings.assets_addr))
    presets = presets or PresetsClient(peer(settings.presets_addr))
    metrics = metrics or Metrics(settings.service_name)
    tombstones = Tombstones(database, deleted_users)
    service = ProjectService()
    workflows = EditWorkflows(
        database=database,
        service=service,
        assets=assets,
        presets=presets,
        quota=quota,
        tiers=identity,
        engine=engine or build_engine(settings),
        settings=settings,
        metrics=metrics,
        guard_write=tombstones.guard_write,
    )
    sweeper = ProjectSweeper(
        database=database, workflows=workflows, assets=assets, settings=settings
    )
    return ProjectsComponents(
        settings, database, identity, tombstones, service, workflows, sweeper, metrics, closers
    )


def build_follower(
    components: ProjectsComponents, metrics: Metrics | None = None
) -> OutboxFollower:
    """`user.deleted` → the tombstone, then the purge of the user's projects and result
    images (runtime.tombstones)."""
    return deletion_follower(
        components.identity,
        components.database,
        components.tombstones,
        components.sweeper.purge_user,
        cursors=event_cursors,
        parked=parked_events,
        name=components.settings.service_name,
        poll_seconds=components.settings.event_poll_seconds,
        metrics=metrics,
    )


async def start(
    settings: ProjectsSettings,
    *,
    port: int | None = None,
    quota: Quota | None = None,
    engine: EditEngine | None = None,
    assets: Assets | None = None,
    presets: Presets | None = None,
) -> RunningServer:
    components = build(settings, quota=quota, engine=engine, assets=assets, presets=presets)
    registrations = [
        Registration(
            PROJECT_SERVICE,
            ProjectApi(
                database=components.database,
                service=components.service,
                workflows=components.workflows,
                page_tokens=PageTokens.for_service(
                    settings.service_name, settings.internal_secret.reveal()
                ),
                max_reapply_steps=settings.max_reapply_steps,
                encoded_edits=EncodedEdits(settings.edit_cache_size),
            ),
            projects_pb2_grpc.add_ProjectServiceServicer_to_server,
        ),
        Registration(
            PROJECT_INTERNAL_SERVICE,
            ProjectInternalApi(sweeper=components.sweeper),
            projects_pb2_grpc.add_ProjectInternalServiceServicer_to_server,
        ),
    ]
    policy = AuthPolicy(
        user_services=frozenset({PROJECT_SERVICE}),
        internal_services=frozenset({PROJECT_INTERNAL_SERVICE}),
    )
    tombstones = components.tombstones
    try:
        await tombstones.load()
        policy = dataclasses.replace(policy, refused_user=tombstones.is_deleted)
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

    # Run before the pools close (on_close runs last first): an edit whose caller went
    # away is no open call, so the server's own grace does not wait for it.
    async def drain_edits() -> None:
        await components.workflows.drain(settings.shutdown_grace_seconds)

    running.on_close.append(drain_edits)
    follower = build_follower(components, running.metrics)
    running.background.append(asyncio.create_task(follower.run(), name="projects-events"))
    running.background.append(asyncio.create_task(tombstones.run(), name="projects-tombstones"))
    if settings.sweep_interval_seconds > 0:
        running.background.append(
            asyncio.create_task(
                components.sweeper.run_periodically(settings.sweep_interval_seconds),
                name="projects-sweeper",
            )
        )
    log.info("engine", extra={"engine": components.workflows.engine.name})
    return running


async def _serve(settings: ProjectsSettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


async def _sweep(settings: ProjectsSettings) -> None:
    components = build(settings)
    try:
        report = await components.sweeper.sweep_once()
    finally:
        await components.close()
    print(json.dumps(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.projects",
        description="The projects service. Settings come from PIXELSHOP_PROJECTS_* variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    commands.add_parser("sweep", help="run one sweep of stuck edits and deleted projects")
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
