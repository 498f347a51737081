"""A 5,000-step branched history: undo, redo and jump behave, and every page of the history
marks exactly the edits on the path to head (checked against a walk of parent pointers).
Timings belong to `make bench`."""

from __future__ import annotations

import uuid

from pixelshop.projects.v1 import projects_pb2 as pb

from services.projects.models import EditAction, Image
from services.projects.repository import ProjectRepository
from services.projects.service import NewEdit
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo

STEPS = 5000
CROP_PARAMS = {"x": 0, "y": 0, "width": 8, "height": 8, "aspectRatio": "free"}


async def grow(stack: Stack, owner_id: uuid.UUID, project_id: uuid.UUID, steps: int) -> None:
    """Appends edits through the same record steps ApplyEdit uses (no engine): every
    seventh step first undoes twice, so the history branches all along."""
    service = stack.components.service
    database = stack.components.database
    done = 0
    while done < steps:
        async with database.transaction() as session:
            for _ in range(min(100, steps - done)):
                done += 1
                if done % 7 == 0:
                    reads = await ProjectRepository(session).reads()
                    project = await service.get(reads, owner_id, project_id)
                    for _undo in range(2):
                        if project.can_undo:
                            project = await service.undo(session, owner_id, project_id)
                edit, _created = await service.record_pending(
                    session,
                    owner_id,
                    project_id,
                    NewEdit(uuid.uuid4(), str(uuid.uuid4()), EditAction.CROP, CROP_PARAMS, "crop"),
                    ai_reservation_id=None,
                    storage_reservation_id=None,
                )
                await service.record_succeeded(
                    session, edit, Image(uuid.uuid4(), "image/png", 8, 8, 10)
                )


async def test_a_5000_step_history(stack: Stack) -> None:
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo("PNG", (8, 8)))
    project_id = uuid.UUID(created.id)
    await grow(stack, user_id, project_id, STEPS)

    edits: list[pb.Edit] = []
    token = ""
    while True:
        page = await stack.stub.ListEdits(
            pb.ListEditsRequest(project_id=created.id, page_size=500, page_token=token),
            metadata=auth,
        )
        edits += page.edits
        token = page.next_page_token
        if not token:
            break
    assert [e.seq for e in edits] == list(range(1, STEPS + 1))
    parents = {e.id: e.parent_id for e in edits}
    project = (
        await stack.stub.GetProject(pb.GetProjectRequest(project_id=created.id), metadata=auth)
    ).project

    def path_to(head: str) -> set[str]:
        on_path, node = set(), head
        while node:
            on_path.add(node)
            node = parents[node]
        return on_path

    assert {e.id for e in edits if e.on_head_path} == path_to(project.head_edit_id)
    assert len(path_to(project.head_edit_id)) < STEPS  # it did branch

    # Undo goes to the parent, redo comes back.
    head = project.head_edit_id
    undone = await stack.stub.Undo(pb.UndoRequest(project_id=created.id), metadata=auth)
    assert undone.project.head_edit_id == parents[head]
    redone = await stack.stub.Redo(pb.RedoRequest(project_id=created.id), metadata=auth)
    assert redone.project.head_edit_id == head

    # Jump into an early abandoned branch: the path marks follow.
    abandoned = next(e for e in edits[:50] if not e.on_head_path)
    jumped = await stack.stub.Jump(
        pb.JumpRequest(project_id=created.id, edit_id=abandoned.id), metadata=auth
    )
    assert jumped.project.head_edit_id == abandoned.id
    first_page = await stack.stub.ListEdits(
        pb.ListEditsRequest(project_id=created.id, page_size=100), metadata=auth
    )
    expected = path_to(abandoned.id)
    assert {e.id for e in first_page.edits if e.on_head_path} == expected
    reset = await stack.stub.Reset(pb.ResetRequest(project_id=created.id), metadata=auth)
    assert reset.project.head_edit_id == ""
    assert reset.project.edit_count == STEPS
