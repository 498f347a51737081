"""Object-level authorization: another user's token gets NOT_FOUND on every project and
edit RPC, exactly as a missing id does; internal RPCs refuse callers without the service
credential; no token is UNAUTHENTICATED."""

from __future__ import annotations

import uuid

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo
from tests.support.settings import INTERNAL_SECRET


async def test_another_users_token_gets_not_found_everywhere(stack: Stack) -> None:
    owner_id, owner = stack.user()
    project = await stack.project(owner, owner_id, photo())
    edit = (await stack.apply(owner, project.id, filter=pb.FilterParams(prompt="sepia"))).edit
    _other_id, other = stack.user()
    other_project = await stack.project(other, _other_id, photo())
    calls = {
        "GetProject": (stack.stub.GetProject, pb.GetProjectRequest(project_id=project.id)),
        "UpdateProject": (
            stack.stub.UpdateProject,
            pb.UpdateProjectRequest(project_id=project.id, name="Mine now"),
        ),
        "DeleteProject": (stack.stub.DeleteProject, pb.DeleteProjectRequest(project_id=project.id)),
        "ApplyEdit": (
            stack.stub.ApplyEdit,
            pb.ApplyEditRequest(
                project_id=project.id,
                request_id=str(uuid.uuid4()),
                filter=pb.FilterParams(prompt="sepia"),
            ),
        ),
        "ApplyEdit with the owner's request id": (
            stack.stub.ApplyEdit,
            pb.ApplyEditRequest(
                project_id=project.id,
                request_id=edit.request_id,
                filter=pb.FilterParams(prompt="x"),
            ),
        ),
        "ListEdits": (stack.stub.ListEdits, pb.ListEditsRequest(project_id=project.id)),
        "GetEdit": (stack.stub.GetEdit, pb.GetEditRequest(project_id=project.id, edit_id=edit.id)),
        "Undo": (stack.stub.Undo, pb.UndoRequest(project_id=project.id)),
        "Redo": (stack.stub.Redo, pb.RedoRequest(project_id=project.id)),
        "Jump": (stack.stub.Jump, pb.JumpRequest(project_id=project.id, edit_id=edit.id)),
        "Reset": (stack.stub.Reset, pb.ResetRequest(project_id=project.id)),
        "Reapply onto theirs": (
            stack.stub.Reapply,
            pb.ReapplyRequest(
                project_id=project.id,
                request_id=str(uuid.uuid4()),
                source_project_id=other_project.id,
                edit_ids=[edit.id],
            ),
        ),
        "Reapply from theirs": (
            stack.stub.Reapply,
            pb.ReapplyRequest(
                project_id=other_project.id,
                request_id=str(uuid.uuid4()),
                source_project_id=project.id,
                edit_ids=[edit.id],
            ),
        ),
    }
    for name, (method, request) in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method(request, metadata=other)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, name
    # Nothing changed for the owner.
    seen = await stack.stub.GetProject(pb.GetProjectRequest(project_id=project.id), metadata=owner)
    assert seen.project.name == project.name
    assert seen.project.head_edit_id == edit.id
    assert seen.project.edit_count == 1
    # A project from someone else's upload cannot be created either.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.CreateProject(
            pb.CreateProjectRequest(
                project=pb.Project(name="Theirs", original_asset_id=project.original_asset_id)
            ),
            metadata=other,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "project.original_asset_id" in (caught.value.details() or "")


async def test_no_token_is_unauthenticated(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ListProjects(pb.ListProjectsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_rpcs_need_the_service_credential(stack: Stack) -> None:
    user_id, auth = stack.user()
    for metadata in ((), auth, ((SERVICE_TOKEN_METADATA, "forged"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.internal.PurgeUser(
                pb.PurgeUserRequest(user_id=str(user_id)), metadata=metadata
            )
        assert caught.value.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        )
    project = await stack.project(auth, user_id, photo())
    credential = ((SERVICE_TOKEN_METADATA, ServiceTokens(INTERNAL_SECRET, "identity").token()),)
    purged = await stack.internal.PurgeUser(
        pb.PurgeUserRequest(user_id=str(user_id)), metadata=credential
    )
    assert purged.deleted_count == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetProject(pb.GetProjectRequest(project_id=project.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
