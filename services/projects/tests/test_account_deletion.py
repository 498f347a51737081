"""Account deletion: identity's `user.deleted` (followed through runtime.events) records a
tombstone, the user's still-valid token is refused, and every project, edit and result
image of the user goes; other users keep theirs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb
from sqlalchemy import func, select

from services.projects.models import edits, projects
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo


async def _rows(stack: Stack, owner_id: uuid.UUID) -> tuple[int, int]:
    async with stack.components.database.read() as session:
        owned = await session.scalar(
            select(func.count()).select_from(projects).where(projects.c.owner_id == owner_id)
        )
        history = await session.scalar(
            select(func.count()).select_from(edits).where(edits.c.owner_id == owner_id)
        )
    return int(owned or 0), int(history or 0)


async def test_user_deleted_purges_projects_edits_and_results(
    stack_factory: Callable[..., Any],
) -> None:
    stack: Stack = await stack_factory(event_poll_seconds=0.05)
    user_id, auth = stack.user()
    keeper_id, keeper = stack.user()
    project = await stack.project(auth, user_id, photo())
    done = await stack.apply(auth, project.id, filter=pb.FilterParams(prompt="sepia"))
    kept = await stack.project(keeper, keeper_id, photo())
    assert await _rows(stack, user_id) == (1, 1)

    stack.identity.add_event("user.deleted", user_id)
    for _ in range(200):
        if await _rows(stack, user_id) == (0, 0):
            break
        await asyncio.sleep(0.05)
    assert await _rows(stack, user_id) == (0, 0)
    assert stack.assets.assets[uuid.UUID(done.edit.result_asset_id)].deleted

    # The deleted user's token is refused from now on, for reads and writes alike.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ListProjects(pb.ListProjectsRequest(), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.project(auth, user_id, photo())
    assert await _rows(stack, user_id) == (0, 0)
    # Someone else's project is untouched.
    seen = await stack.stub.GetProject(pb.GetProjectRequest(project_id=kept.id), metadata=keeper)
    assert seen.project.id == kept.id


async def test_a_write_after_the_tombstone_is_refused_in_its_transaction(stack: Stack) -> None:
    """Even a caller the in-memory check has not caught up with (another replica) cannot
    write: guard_write reads the tombstone inside the write's transaction."""
    user_id, _auth = stack.user()
    asset_id = stack.assets.upload(user_id, photo())
    async with stack.components.database.transaction() as session:
        await stack.components.tombstones.record(session, user_id)
    from runtime.errors import Unauthenticated

    with pytest.raises(Unauthenticated):
        await stack.components.workflows.create_project(user_id, "Late", asset_id)
    assert await _rows(stack, user_id) == (0, 0)
