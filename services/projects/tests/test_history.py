"""The history tree over gRPC: edits, undo, redo, a branch, jump, reset, with pixels checked."""

from __future__ import annotations

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo

GRAY = "make it black and white"


def mean_saturation(stack: Stack, asset_id: str) -> float:
    import uuid

    from PIL import ImageStat

    image = stack.assets.image(uuid.UUID(asset_id)).convert("HSV")
    return float(ImageStat.Stat(image).mean[1])


async def test_undo_redo_branch_jump_reset(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (320, 240)))
    assert project.edit_count == 0
    assert not project.can_undo
    original = project.current_asset_id

    gray = await stack.apply(auth, project.id, filter=pb.FilterParams(prompt=GRAY))
    assert gray.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert gray.edit.seq == 1
    assert gray.edit.parent_id == ""
    assert gray.project.head_edit_id == gray.edit.id
    assert mean_saturation(stack, gray.edit.result_asset_id) < 5 < mean_saturation(stack, original)

    cropped = await stack.apply(
        auth, project.id, crop=pb.CropParams(x=0, y=0, width=160, height=120)
    )
    assert cropped.edit.parent_id == gray.edit.id
    assert (cropped.project.width, cropped.project.height) == (160, 120)
    assert cropped.edit.engine == "crop"

    undone = await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    assert undone.project.head_edit_id == gray.edit.id
    assert undone.project.current_asset_id == gray.edit.result_asset_id
    assert undone.project.can_redo
    redone = await stack.stub.Redo(pb.RedoRequest(project_id=project.id), metadata=auth)
    assert redone.project.head_edit_id == cropped.edit.id
    await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)

    # A new edit after an undo starts a branch; the crop stays reachable.
    branch = await stack.apply(auth, project.id, adjust=pb.AdjustParams(prompt="make it darker"))
    assert branch.edit.parent_id == gray.edit.id
    assert branch.project.head_edit_id == branch.edit.id
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    on_path = {e.seq: e.on_head_path for e in history.edits}
    assert on_path == {1: True, 2: False, 3: True}
    assert [e.parent_id for e in history.edits] == ["", gray.edit.id, gray.edit.id]

    # Redo goes to the most recently created succeeded child: the branch.
    await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    again = await stack.stub.Redo(pb.RedoRequest(project_id=project.id), metadata=auth)
    assert again.project.head_edit_id == branch.edit.id

    jumped = await stack.stub.Jump(
        pb.JumpRequest(project_id=project.id, edit_id=cropped.edit.id), metadata=auth
    )
    assert jumped.project.current_asset_id == cropped.edit.result_asset_id
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert {e.seq: e.on_head_path for e in history.edits} == {1: True, 2: True, 3: False}

    reset = await stack.stub.Reset(pb.ResetRequest(project_id=project.id), metadata=auth)
    assert reset.project.head_edit_id == ""
    assert reset.project.current_asset_id == original
    assert (reset.project.width, reset.project.height) == (320, 240)
    assert reset.project.edit_count == 3
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert not any(e.on_head_path for e in history.edits)

    # Redo from the original goes to the newest child of the original.
    from_original = await stack.stub.Redo(pb.RedoRequest(project_id=project.id), metadata=auth)
    assert from_original.project.head_edit_id == gray.edit.id


async def test_undo_at_the_original_and_redo_without_a_child(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing to undo" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Redo(pb.RedoRequest(project_id=project.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nothing to redo" in (caught.value.details() or "")


async def test_jump_refuses_a_failed_edit_and_foreign_ids(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, filter=pb.FilterParams(prompt="paint a dragon"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    failed = history.edits[0]
    assert failed.status == pb.EDIT_STATUS_FAILED
    assert "understands" in failed.error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Jump(
            pb.JumpRequest(project_id=project.id, edit_id=failed.id), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_history_pages_in_seq_order(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("PNG", (64, 48)))
    for index in range(5):
        await stack.apply(
            auth, project.id, crop=pb.CropParams(x=0, y=0, width=64 - index, height=48 - index)
        )
    seen, token = [], ""
    while True:
        page = await stack.stub.ListEdits(
            pb.ListEditsRequest(project_id=project.id, page_size=2, page_token=token), metadata=auth
        )
        seen += [e.seq for e in page.edits]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3, 4, 5]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.ListEdits(
            pb.ListEditsRequest(project_id=project.id, page_token="forged"), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rename_with_a_stale_version_is_aborted(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    renamed = await stack.stub.UpdateProject(
        pb.UpdateProjectRequest(project_id=project.id, name="Beach", version=project.version),
        metadata=auth,
    )
    assert renamed.project.name == "Beach"
    assert renamed.project.version == project.version + 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.UpdateProject(
            pb.UpdateProjectRequest(project_id=project.id, name="Stale", version=project.version),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED


async def test_list_get_and_delete(stack: Stack) -> None:
    user_id, auth = stack.user()
    first = await stack.project(auth, user_id, photo(), name="First")
    second = await stack.project(auth, user_id, photo(), name="Second")
    listed = await stack.stub.ListProjects(pb.ListProjectsRequest(page_size=1), metadata=auth)
    assert [p.id for p in listed.projects] == [second.id]
    rest = await stack.stub.ListProjects(
        pb.ListProjectsRequest(page_size=1, page_token=listed.next_page_token), metadata=auth
    )
    assert [p.id for p in rest.projects] == [first.id]
    assert rest.next_page_token == ""  # exactly the last page: no empty page after it
    # A page token continues only its own owner's listing.
    _other_id, other = stack.user()
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stack.stub.ListProjects(
            pb.ListProjectsRequest(page_size=1, page_token=listed.next_page_token), metadata=other
        )
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = await stack.stub.GetProject(pb.GetProjectRequest(project_id=first.id), metadata=auth)
    assert got.project.thumbnail_uri.endswith(":content?variant=thumbnail")
    await stack.stub.DeleteProject(pb.DeleteProjectRequest(project_id=first.id), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetProject(pb.GetProjectRequest(project_id=first.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # One projects unit reserved and committed per project, one credited back on delete.
    assert len(stack.quota.committed) == 2
    assert len(stack.quota.credited) == 1
