"""Fixtures of the projects tests: FakeIdentity, in-memory assets and presets, a recording
quota, and projects servers in process on port 0, called over real grpc.aio channels."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2, projects_pb2_grpc

from runtime.server import RunningServer
from services.projects.models import Edit, EditAction
from services.projects.repository import ProjectReads
from services.projects.server import ProjectsComponents, build, build_engine, start
from services.projects.settings import ProjectsSettings
from services.projects.tests.fakes import CountingEngine, FakeAssets, FakePresets, RecordingQuota
from services.projects.workflows import EditRequest
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import service_settings

Metadata = tuple[tuple[str, str], ...]


def warm() -> EditRequest:
    """A local-engine filter request with a fresh request id (for calling the workflows
    directly, e.g. under `crash_at`)."""
    return EditRequest(request_id=str(uuid.uuid4()), action=EditAction.FILTER, prompt="warmer")


@pytest.fixture(scope="session")
async def identity() -> AsyncIterator[FakeIdentity]:
    fake = await FakeIdentity().start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(migrated_db: str, identity: FakeIdentity) -> ProjectsSettings:
    return service_settings(
        ProjectsSettings,
        migrated_db,
        identity_addr=identity.address,
        sweep_interval_seconds=0,
        tier_cache_seconds=0,
        duplicate_wait_seconds=5,
    )


@dataclass
class Stack:
    """A running projects server and the fakes behind it."""

    server: RunningServer
    stub: projects_pb2_grpc.ProjectServiceStub
    internal: projects_pb2_grpc.ProjectInternalServiceStub
    assets: FakeAssets
    presets: FakePresets
    quota: RecordingQuota
    engine: CountingEngine
    components: ProjectsComponents
    identity: FakeIdentity

    def user(self, tier: str = "free") -> tuple[uuid.UUID, Metadata]:
        user_id, token = self.identity.new_user(tier)
        return user_id, (("authorization", f"Bearer {token}"),)

    async def project(
        self, metadata: Metadata, user_id: uuid.UUID, data: bytes, name: str = "Holiday"
    ) -> projects_pb2.Project:
        asset_id = self.assets.upload(user_id, data)
        response = await self.stub.CreateProject(
            projects_pb2.CreateProjectRequest(
                project=projects_pb2.Project(name=name, original_asset_id=str(asset_id))
            ),
            metadata=metadata,
        )
        return response.project

    async def apply(
        self, metadata: Metadata, project_id: str, request_id: str | None = None, **params: Any
    ) -> projects_pb2.ApplyEditResponse:
        return await self.stub.ApplyEdit(
            projects_pb2.ApplyEditRequest(
                project_id=project_id, request_id=request_id or str(uuid.uuid4()), **params
            ),
            metadata=metadata,
        )

    async def stored_edit(self, project_id: uuid.UUID, request_id: str) -> Edit:
        """The edit as the database holds it, by its request id."""
        async with self.components.database.reader() as reader:
            edit = await ProjectReads(reader).find_by_request_id(project_id, request_id)
        assert edit is not None
        return edit


@pytest.fixture
async def stack_factory(
    settings: ProjectsSettings, identity: FakeIdentity
) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[RunningServer, grpc.aio.Channel, ProjectsComponents]] = []

    async def make(*, peers_of: Stack | None = None, **overrides: Any) -> Stack:
        """A server on the same database; with `peers_of`, a replica beside that stack's
        server: the same assets, presets and billing."""
        chosen = settings if not overrides else _with(settings, **overrides)
        if peers_of is None:
            quota = RecordingQuota()
            assets, presets = FakeAssets(quota=quota), FakePresets()
        else:
            quota, assets, presets = peers_of.quota, peers_of.assets, peers_of.presets
        engine = CountingEngine(build_engine(chosen))
        server = await start(
            chosen, port=0, quota=quota, engine=engine, assets=assets, presets=presets
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        components = build(chosen, quota=quota, engine=engine, assets=assets, presets=presets)
        started.append((server, channel, components))
        return Stack(
            server,
            projects_pb2_grpc.ProjectServiceStub(channel),
            projects_pb2_grpc.ProjectInternalServiceStub(channel),
            assets,
            presets,
            quota,
            engine,
            components,
            identity,
        )

    yield make
    for server, channel, components in started:
        await channel.close()
        await server.stop(0)
        await components.close()


def _with(settings: ProjectsSettings, **overrides: Any) -> ProjectsSettings:
    import dataclasses

    return dataclasses.replace(settings, **overrides)


@pytest.fixture
async def stack(stack_factory: Callable[..., Any]) -> Stack:
    made: Stack = await stack_factory()
    return made
