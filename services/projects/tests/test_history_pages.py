"""History pages served from encoded finished edits (ADR 0023, 0025) answer exactly what
pages built from fresh reads answer, whatever head does afterwards and whichever replica
made the edits."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from services.projects.api import EncodedEdits
from services.projects.service import EditsPage, PageEntry
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo

GRAY = pb.FilterParams(prompt="make it black and white")


async def _pages(stack: Stack, auth: Any, project_id: str, page_size: int) -> list[pb.Edit]:
    seen: list[pb.Edit] = []
    token = ""
    while True:
        page = await stack.stub.ListEdits(
            pb.ListEditsRequest(project_id=project_id, page_size=page_size, page_token=token),
            metadata=auth,
        )
        seen += page.edits
        token = page.next_page_token
        if not token:
            return seen


async def _one_by_one(stack: Stack, auth: Any, project_id: str, ids: list[str]) -> list[pb.Edit]:
    """Each edit as GetEdit answers it: read alone, its path worked out on its own."""
    return [
        (
            await stack.stub.GetEdit(
                pb.GetEditRequest(project_id=project_id, edit_id=edit_id), metadata=auth
            )
        ).edit
        for edit_id in ids
    ]


async def test_cached_pages_equal_fresh_reads_as_head_moves(
    stack_factory: Callable[..., Any],
) -> None:
    cached: Stack = await stack_factory()
    uncached: Stack = await stack_factory(edit_cache_size=0)  # the same database
    user_id, auth = cached.user()
    project = await cached.project(auth, user_id, photo("JPEG", (96, 64)))
    gray = await cached.apply(auth, project.id, filter=GRAY)
    await cached.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=48, height=32))
    with pytest.raises(grpc.aio.AioRpcError):
        await cached.apply(auth, project.id, filter=pb.FilterParams(prompt="paint a dragon"))
    await cached.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    branch = await cached.apply(
        auth,
        project.id,
        retouch=pb.RetouchParams(prompt="make it warmer", hotspots=[pb.Hotspot(x=5, y=6)]),
    )
    moves = [
        pb.JumpRequest(project_id=project.id, edit_id=gray.edit.id),
        pb.JumpRequest(project_id=project.id, edit_id=branch.edit.id),
    ]
    for step, move in enumerate([None, *moves, "reset"]):
        if isinstance(move, pb.JumpRequest):
            await cached.stub.Jump(move, metadata=auth)
        elif move == "reset":
            await cached.stub.Reset(pb.ResetRequest(project_id=project.id), metadata=auth)
        # Twice: the first read encodes what the second is served from.
        first = await _pages(cached, auth, project.id, 2)
        second = await _pages(cached, auth, project.id, 2)
        fresh = await _pages(uncached, auth, project.id, 2)
        alone = await _one_by_one(cached, auth, project.id, [e.id for e in fresh])
        assert first == second == fresh == alone, f"after move {step}"
    on_path = [e.on_head_path for e in await _pages(cached, auth, project.id, 10)]
    assert on_path == [False] * 4  # reset: nothing lies on the path to the original
    assert [e.status for e in alone].count(pb.EDIT_STATUS_FAILED) == 1


async def test_a_replica_pages_the_edits_another_made_after_it_cached_the_history(
    stack_factory: Callable[..., Any],
) -> None:
    cached: Stack = await stack_factory()
    other: Stack = await stack_factory(peers_of=cached)  # another replica
    uncached: Stack = await stack_factory(edit_cache_size=0)
    user_id, auth = cached.user()
    project = await cached.project(auth, user_id, photo("JPEG", (96, 64)))
    await cached.apply(auth, project.id, filter=GRAY)
    assert len(await _pages(cached, auth, project.id, 2)) == 1  # cached, as it stood
    await other.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=40, height=40))
    await other.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    await other.apply(auth, project.id, filter=pb.FilterParams(prompt="make it warmer"))
    for _ in range(2):  # the second read from what the first encoded
        listed = await _pages(cached, auth, project.id, 2)
        assert listed == await _pages(uncached, auth, project.id, 2)
        assert [e.seq for e in listed] == [1, 2, 3]
        assert [e.on_head_path for e in listed] == [True, False, True]


async def test_edits_this_replica_made_are_paged_from_the_project_alone(stack: Stack) -> None:
    from runtime import db
    from services.projects.repository import _BRANCH_START, _EDITS_AT, _PAGE_SPAN

    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    made = [
        await stack.apply(auth, project.id, filter=GRAY),
        await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=20, height=20)),
    ]
    source = await stack.project(auth, user_id, photo())
    await stack.stub.Reapply(
        pb.ReapplyRequest(
            project_id=source.id,
            source_project_id=project.id,
            edit_ids=[applied.edit.id for applied in made],
            request_id=str(uuid.uuid4()),
        ),
        metadata=auth,
    )
    seen: list[str] = []
    db.statement_observers.append(lambda sql, arguments, name: seen.append(sql))
    try:
        for project_id in (project.id, source.id):
            listed = await _pages(stack, auth, project_id, 10)
            assert len(listed) == 2
    finally:
        db.statement_observers.pop()
    # Nothing read in full (ApplyEdit and Reapply kept them), not even an outline, nor
    # head's own columns: the project's edit count says which seqs a page spans.
    assert _EDITS_AT.sql not in seen
    assert _PAGE_SPAN.sql in seen
    assert set(seen) <= {_PAGE_SPAN.sql, _BRANCH_START.sql}


async def test_a_pending_edit_is_read_again_until_it_finishes(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.engine.gate = asyncio.Event()
    running = asyncio.create_task(stack.apply(auth, project.id, filter=GRAY))
    await stack.engine.started.wait()
    listed = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert [e.status for e in listed.edits] == [pb.EDIT_STATUS_PENDING]
    stack.engine.gate.set()
    finished = await running
    listed = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert [e.status for e in listed.edits] == [pb.EDIT_STATUS_SUCCEEDED]
    assert listed.edits[0].result_asset_id == finished.edit.result_asset_id
    assert listed.edits[0].on_head_path
    assert listed.edits[0].HasField("finish_time")


async def _read_in_full(stack: Stack, user_id: Any, project_id: str) -> EditsPage:
    async with stack.components.database.reader() as reader:
        from services.projects.repository import ProjectReads

        return await stack.components.service.list_edits(
            ProjectReads(reader),
            uuid.UUID(str(user_id)),
            uuid.UUID(project_id),
            after_seq=0,
            page_size=10,
        )


async def test_the_cache_keeps_finished_edits_up_to_its_capacity(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    applied = [
        (await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=w, height=w)))
        for w in (30, 20, 10)
    ]
    other = await stack.project(auth, user_id, photo())
    await stack.apply(auth, other.id, filter=GRAY)
    page = await _read_in_full(stack, user_id, project.id)
    assert [entry.edit is not None for entry in page.entries] == [True] * 3

    encoded = EncodedEdits(2)
    first = pb.ListEditsResponse.FromString(encoded.response(page, "next").data)
    assert first.next_page_token == "next"
    project_id = uuid.UUID(project.id)
    # Alone over the capacity, the project keeps its two newest; they answer what the
    # page encoded.
    one, *kept = encoded.get(project_id, range(1, 4))
    assert one is None
    assert [pb.Edit.FromString(k[2][2]).id if k else None for k in kept] == [
        a.edit.id for a in applied[1:]
    ]
    held = EditsPage(
        [PageEntry(e.on_head_path, held=k) for e, k in zip(page.entries[1:], kept, strict=True)],
        None,
    )
    again = pb.ListEditsResponse.FromString(encoded.response(held, "").data)
    assert list(again.edits) == list(first.edits)[1:]
    assert again.next_page_token == ""
    assert [e.on_head_path for e in first.edits] == [True, True, True]

    # Another project paged: the least recently paged one goes first, all of it.
    encoded.response(await _read_in_full(stack, user_id, other.id), "")
    assert encoded.get(project_id, range(1, 4)) == [None] * 3
    assert encoded.get(uuid.UUID(other.id), range(1, 2))[0] is not None

    # Plain tuples of immutable values: the garbage collector stops tracking them (inner
    # ones first, so after two collections), and the cache adds nothing to its full
    # collections.
    gc.collect()
    gc.collect()
    assert not any(gc.is_tracked(k) or gc.is_tracked(k[2]) for k in kept if k)

    # A deleted project's edits are let go of at once, and count no more.
    encoded.forget(uuid.UUID(other.id))
    assert encoded.get(uuid.UUID(other.id), range(1, 2)) == [None]
    encoded.response(page, "")
    assert encoded.get(project_id, range(1, 4))[1:] == kept  # two fit again

    nothing = EncodedEdits(0)
    nothing.response(page, "")
    assert nothing.get(project_id, range(1, 4)) == [None] * 3
