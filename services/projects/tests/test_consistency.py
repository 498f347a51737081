"""Crash tests: the workflow is interrupted at every checkpoint, then the sweeper (or a
retry with the same request id) ends it consistent: nothing charged without a result,
nothing charged twice, no reservation left open, the project free for the next edit."""

from __future__ import annotations

import datetime
import uuid

import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.errors import DomainError, Unavailable
from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.projects.models import EditAction, EditStatus
from services.projects.repository import ProjectReads
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo
from services.projects.workflows import EditRequest

LATER = datetime.timedelta(hours=1)
# From here on assets holds the result: a crash there must not lose it.
RESULT_STORED = ("apply.result_stored", "apply.succeeded_recorded")


def warm(request_id: str | None = None) -> EditRequest:
    return EditRequest(
        request_id=request_id or str(uuid.uuid4()), action=EditAction.FILTER, prompt="warmer"
    )


async def _state(stack: Stack, project_id: uuid.UUID, request_id: str) -> tuple:
    async with stack.components.database.reader() as reader:
        reads = ProjectReads(reader)
        edit = await reads.find_by_request_id(project_id, request_id)
        project = await reads.get_project_any(project_id)
    assert project is not None
    return edit, project


async def _sweep(stack: Stack) -> dict[str, int]:
    now = datetime.datetime.now(datetime.UTC) + LATER
    return await stack.components.sweeper.sweep_once(now)


async def test_a_crash_at_every_step_of_apply_edit_ends_consistent(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    workflows = stack.components.workflows
    with record_checkpoints() as steps:
        await workflows.apply(user_id, project_id, warm())
    assert steps == [
        "apply.pending_recorded",
        "apply.engine_done",
        "apply.result_stored",
        "apply.succeeded_recorded",
    ]
    for step in steps:
        charged_before = stack.quota.charged(user_id)
        calls_before = stack.engine.total
        request = warm()
        with crash_at(step), pytest.raises(SimulatedCrash):
            await workflows.apply(user_id, project_id, request)
        await _sweep(stack)
        edit, project = await _state(stack, project_id, request.request_id)
        assert edit is not None
        assert edit.status is not EditStatus.PENDING, step
        assert edit.settled_at is not None, step
        assert project.running_edit_id is None, step
        assert stack.quota.open(user_id) == [], step
        if step in RESULT_STORED:
            # The stored result is adopted: succeeded, charged once, head on it.
            assert edit.status is EditStatus.SUCCEEDED, step
            stored = await stack.assets.find_stored(user_id, f"edit:{edit.id}")
            assert stored is not None, step
            assert edit.result_asset_id == stored.id, step
            assert stack.quota.charged(user_id) == charged_before + 1, step
            assert project.head_edit_id == edit.id, step
        else:
            assert edit.status is EditStatus.FAILED, step
            assert stack.quota.charged(user_id) == charged_before, step
        assert stack.engine.total <= calls_before + 1, step
        calls_after_crash = stack.engine.total
        # A retry with the same request id answers what happened, with no second call.
        try:
            again = await workflows.apply(user_id, project_id, request)
            assert again.edit.id == edit.id
        except DomainError:
            assert edit.status is EditStatus.FAILED
        assert stack.engine.total == calls_after_crash, step
        assert stack.quota.charged(user_id) <= charged_before + 1, step


async def test_a_crash_after_a_failure_is_recorded_releases_on_sweep(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    stack.engine.failure = Unavailable("the image model is busy")
    request = warm()
    with crash_at("apply.failed_recorded"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, project_id, request)
    assert stack.quota.open(user_id) != []
    await _sweep(stack)
    edit, _project = await _state(stack, project_id, request.request_id)
    assert edit is not None
    assert edit.status is EditStatus.FAILED
    assert stack.quota.open(user_id) == []
    assert stack.quota.charged(user_id) == 0


async def test_a_crash_after_pending_is_swept_to_failed_and_released(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    request = warm()
    with crash_at("apply.pending_recorded"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, uuid.UUID(created.id), request)
    # Before the deadline the sweeper leaves the edit alone (it may still be running).
    report = await stack.components.sweeper.sweep_once()
    assert report["failed_stuck"] == 0
    report = await _sweep(stack)
    assert report["failed_stuck"] == 1
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=created.id), metadata=auth)
    assert [e.status for e in history.edits] == [pb.EDIT_STATUS_FAILED]
    assert stack.quota.open(user_id) == []
    assert stack.engine.total == 0
    # The project takes the next edit.
    done = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="cooler"))
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED


async def test_a_crash_while_creating_or_deleting_a_project_settles_on_sweep(stack: Stack) -> None:
    user_id, _auth = stack.user()
    asset_id = stack.assets.upload(user_id, photo())
    workflows = stack.components.workflows
    with crash_at("create_project.recorded"), pytest.raises(SimulatedCrash):
        await workflows.create_project(user_id, "Interrupted", asset_id)
    assert len(stack.quota.open(user_id)) == 1
    await _sweep(stack)
    assert stack.quota.open(user_id) == []
    assert len(stack.quota.committed) == 1
    project = await workflows.create_project(user_id, "Second", asset_id)
    with crash_at("delete_project.recorded"), pytest.raises(SimulatedCrash):
        await workflows.delete_project(user_id, project.id)
    assert stack.quota.credited == []
    await _sweep(stack)
    assert len(stack.quota.credited) == 1


async def test_a_deleted_project_is_purged_with_its_results(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    done = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="sepia"))
    await stack.stub.DeleteProject(pb.DeleteProjectRequest(project_id=created.id), metadata=auth)
    report = await _sweep(stack)
    assert report["purged"] == 1
    result = stack.assets.assets[uuid.UUID(done.edit.result_asset_id)]
    assert result.deleted
    _edit, project = None, None
    async with stack.components.database.reader() as reader:
        project = await ProjectReads(reader).get_project_any(uuid.UUID(created.id))
    assert project is None
