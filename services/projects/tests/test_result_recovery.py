"""No result lost, none charged twice: an edit whose result assets stored before a crash
ends succeeded with that result (ADR 0012), by a retry or by the sweeper; and the room
held for a result before the engine runs is the room the result takes."""

from __future__ import annotations

import datetime
import uuid

import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.errors import QuotaExceeded
from runtime.peers.billing import Metric
from runtime.workflow import SimulatedCrash, crash_at
from services.projects.models import Edit, EditStatus, Project
from services.projects.repository import ProjectReads
from services.projects.tests.conftest import Stack, warm
from services.projects.tests.fakes import photo
from services.projects.workflows import storage_key

LATER = datetime.timedelta(hours=1)


async def _edit(stack: Stack, project_id: uuid.UUID, request_id: str) -> tuple[Edit, Project]:
    """The edit and its project, as the database holds them."""
    edit = await stack.stored_edit(project_id, request_id)
    async with stack.components.database.reader() as reader:
        project = await ProjectReads(reader).get_project_any(project_id)
    assert project is not None
    return edit, project


async def test_a_retry_after_a_crash_once_the_result_is_stored_returns_it(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    request = warm()
    with crash_at("apply.result_stored"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, project_id, request)
    assert stack.assets.stores == 1
    # No sweep: the retry itself finds the stored result and finishes the edit with it.
    again = await stack.components.workflows.apply(user_id, project_id, request)
    assert again.edit.status is EditStatus.SUCCEEDED
    stored = await stack.assets.find_stored(user_id, f"edit:{again.edit.id}")
    assert stored is not None
    assert again.edit.result_asset_id == stored.id
    assert again.project.head_edit_id == again.edit.id
    # The engine's report, recorded once before the result was stored, is kept.
    assert (again.edit.model, again.edit.finish_reason) == ("pillow:warmer", "STOP")
    assert again.edit.duration_ms is not None
    assert stack.engine.total == 1
    assert stack.assets.stores == 1
    assert stack.quota.charged(user_id) == 1
    assert stack.quota.open(user_id) == []
    # The sweeper finds nothing left to do, and a third try answers the same.
    report = await stack.components.sweeper.sweep_once(datetime.datetime.now(datetime.UTC) + LATER)
    assert report["adopted_stuck"] == report["failed_stuck"] == 0
    third = await stack.components.workflows.apply(user_id, project_id, request)
    assert third.edit.id == again.edit.id
    assert stack.quota.charged(user_id) == 1


async def test_a_stored_result_is_adopted_off_the_head_path_when_head_moved(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    first = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="sepia"))
    request = warm()
    with crash_at("apply.result_stored"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, project_id, request)
    # Meanwhile the user went back to the original.
    await stack.stub.Undo(pb.UndoRequest(project_id=created.id), metadata=auth)
    report = await stack.components.sweeper.sweep_once(datetime.datetime.now(datetime.UTC) + LATER)
    assert report["adopted_stuck"] == 1
    assert report["failed_stuck"] == 0
    edit, project = await _edit(stack, project_id, request.request_id)
    assert edit.status is EditStatus.SUCCEEDED
    assert edit.parent_id == uuid.UUID(first.edit.id)
    # What the engine reported was recorded before the result was stored, so the adopted
    # edit keeps it.
    assert (edit.model, edit.finish_reason) == ("pillow:warmer", "STOP")
    assert edit.duration_ms is not None
    assert project.head_edit_id is None  # the undo is not lost
    assert project.running_edit_id is None
    assert stack.quota.charged(user_id) == 2
    assert stack.quota.open(user_id) == []
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=created.id), metadata=auth)
    shown = {e.id: e for e in history.edits}
    assert shown[str(edit.id)].status == pb.EDIT_STATUS_SUCCEEDED
    assert not shown[str(edit.id)].on_head_path
    # It is a branch like any other: redo from the first edit reaches it, jump too.
    await stack.stub.Redo(pb.RedoRequest(project_id=created.id), metadata=auth)
    redone = await stack.stub.Redo(pb.RedoRequest(project_id=created.id), metadata=auth)
    assert redone.project.head_edit_id == str(edit.id)


async def test_a_crash_before_the_result_is_stored_still_fails_and_releases(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    request = warm()
    with crash_at("apply.engine_done"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, uuid.UUID(created.id), request)
    report = await stack.components.sweeper.sweep_once(datetime.datetime.now(datetime.UTC) + LATER)
    assert report == {**report, "adopted_stuck": 0, "failed_stuck": 1}
    edit, _project = await _edit(stack, uuid.UUID(created.id), request.request_id)
    assert edit.status is EditStatus.FAILED
    assert stack.quota.charged(user_id) == 0
    assert stack.quota.open(user_id) == []
    assert stack.assets.results_of(user_id) == []


async def test_a_concurrent_upload_cannot_take_the_room_held_for_a_result(stack: Stack) -> None:
    user_id, auth = stack.user()
    source = photo()
    created = await stack.project(auth, user_id, source)
    room = int(len(source) * stack.components.settings.result_storage_factor)
    # The plan has exactly the room the edit holds for its result.
    stack.quota.limits[Metric.STORAGE_BYTES] = room
    refused: list[Exception] = []

    async def another_upload() -> None:
        # Another upload of the same user lands as the result is about to be stored.
        try:
            await stack.quota.reserve(user_id, Metric.STORAGE_BYTES, room, f"asset:{uuid.uuid4()}")
        except QuotaExceeded as error:
            refused.append(error)

    stack.assets.on_store = another_upload
    done = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="warmer"))
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert len(refused) == 1  # the upload, not the paid result, found no room
    # Assets committed the edit's own hold and credited back what the result left unused.
    edit_id = uuid.UUID(done.edit.id)
    assert stack.assets.handed == [f"reservation:{storage_key(edit_id)}"]
    edit, _project = await _edit(stack, uuid.UUID(created.id), done.edit.request_id)
    assert edit.result_bytes is not None
    assert stack.quota.used(user_id, Metric.STORAGE_BYTES) == edit.result_bytes
    assert stack.quota.open(user_id) == []


async def test_a_store_whose_answer_is_lost_still_ends_with_its_result(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    stack.assets.lose_answers = 1
    done = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="warmer"))
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED
    stored = await stack.assets.find_stored(user_id, f"edit:{done.edit.id}")
    assert stored is not None
    assert done.edit.result_asset_id == str(stored.id)
    assert stack.quota.charged(user_id) == 1
    # The hold went to assets with the result and was not released behind its back.
    hold = f"reservation:{storage_key(uuid.UUID(done.edit.id))}"
    assert stack.assets.handed == [hold]
    assert hold not in stack.quota.released
    assert stack.quota.open(user_id) == []
