"""Business rules of projects on the caller's session: no gRPC, no protobuf, no commits.

`ProjectService` answers reads and moves head (undo, redo, jump, reset: each a constant
number of single-row statements, ADR 0012); `HistoryTree` places a new edit in the tree.
The ApplyEdit workflow (workflows.py) calls the `record_*` methods inside its own short
transactions, between which it makes its remote calls.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy.ext.asyncio import AsyncSession

from runtime.clock import utc_now
from runtime.errors import FailedPrecondition
from runtime.pagination import Keyset, Page, fetch_limit, page_of
from services.projects.errors import (
    EditNotFound,
    EditRunning,
    HeadMoved,
    NothingToMove,
    ProjectNotFound,
    StaleVersion,
)
from services.projects.models import (
    Edit,
    EditAction,
    EditStatus,
    HeadAt,
    HeadPath,
    Image,
    Project,
)
from services.projects.repository import ProjectReads, ProjectRepository

# A finished edit as a caller keeps it (ADR 0023, 0025): (depth, branch seq, encoding),
# where it lies in the tree, which is all a page needs to place it against head's path,
# and its encoding, opaque here. A plain tuple of immutable values on purpose: the
# garbage collector stops tracking such tuples, so a cache of 50,000 of them adds
# nothing to the full collections that pause every request (a named tuple stays tracked).
HeldEdit: TypeAlias = tuple[int, int, Any]


class PageEntry(NamedTuple):
    """One edit of a history page: read in full (`edit`), or a finished edit the caller
    already holds (`held`). A page makes 100."""

    on_head_path: bool
    edit: Edit | None = None
    held: HeldEdit | None = None


@dataclass(frozen=True)
class EditsPage:
    entries: list[PageEntry]
    next_after_seq: int | None


@dataclass(frozen=True)
class NewEdit:
    """What the workflow records as pending."""

    edit_id: uuid.UUID
    request_id: str
    action: EditAction
    params: dict[str, Any]
    engine: str
    # The image the request was checked against (crop box, hotspots, fractions): the
    # edit is recorded only if it is still the current one.
    checked_against: uuid.UUID | None = None
    preset_id: uuid.UUID | None = None
    preset_prompt: str | None = None
    preset_version: int | None = None
    reapplied_from_id: uuid.UUID | None = None
    reapplied_from_project_id: uuid.UUID | None = None


# Parsed head paths kept per head edit: the path above an edit never changes (nothing is
# deleted, edits only gain children), so an entry is valid forever. Bounded, oldest out.
HEAD_PATH_CACHE_SIZE = 256


class ProjectService:
    def __init__(self) -> None:
        self._head_paths: OrderedDict[uuid.UUID, HeadPath] = OrderedDict()

    async def get(self, reads: ProjectReads, owner_id: uuid.UUID, project_id: uuid.UUID) -> Project:
        project = await reads.get_project(project_id, owner_id)
        if project is None:
            raise ProjectNotFound(project_id)
        return project

    async def _locked(
        self, reads: ProjectReads, owner_id: uuid.UUID, project_id: uuid.UUID
    ) -> Project:
        project = await reads.get_project(project_id, owner_id, for_update=True)
        if project is None:
            raise ProjectNotFound(project_id)
        return project

    async def list(
        self,
        reads: ProjectReads,
        owner_id: uuid.UUID,
        *,
        after: Keyset | None,
        page_size: int,
    ) -> Page[Project]:
        """The owner's projects, newest first, after `after` (runtime.pagination)."""
        rows = await reads.list_projects(owner_id, after=after, limit=fetch_limit(page_size))
        return page_of(rows, page_size, lambda project: Keyset(project.created_at, project.id))

    async def rename(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        project_id: uuid.UUID,
        name: str,
        expected_version: int | None,
    ) -> Project:
        repository = ProjectRepository(session)
        reads = await repository.reads()
        project = await self._locked(reads, owner_id, project_id)
        if expected_version is not None and project.version != expected_version:
            raise StaleVersion()
        if project.name != name:
            await repository.update_project(project_id, name=name)
        return await self.get(reads, owner_id, project_id)

    async def delete(
        self, session: AsyncSession, owner_id: uuid.UUID, project_id: uuid.UUID
    ) -> Project:
        repository = ProjectRepository(session)
        reads = await repository.reads()
        project = await self._locked(reads, owner_id, project_id)
        await repository.update_project(project_id, deleted_at=utc_now())
        return project

    # -- moving head: O(1) in the history's length ---------------------------------------

    async def _move_head(
        self, repository: ProjectRepository, project: Project, target: Edit | None
    ) -> Project:
        thumbnail = project.original.asset_id if target is None else target.result_asset_id
        assert thumbnail is not None, "head is only ever a succeeded edit"
        return await repository.move_head(project, target, thumbnail_asset_id=thumbnail)

    async def undo(
        self, session: AsyncSession, owner_id: uuid.UUID, project_id: uuid.UUID
    ) -> Project:
        repository = ProjectRepository(session)
        found = await (await repository.reads()).lock_project_and_parent(project_id, owner_id)
        if found is None:
            raise ProjectNotFound(project_id)
        project, parent = found
        if project.head is None:
            raise NothingToMove("nothing to undo: the project is at its original", "AT_ORIGINAL")
        return await self._move_head(repository, project, parent)

    async def redo(
        self, session: AsyncSession, owner_id: uuid.UUID, project_id: uuid.UUID
    ) -> Project:
        repository = ProjectRepository(session)
        reads = await repository.reads()
        project = await self._locked(reads, owner_id, project_id)
        child_id = (
            project.root_latest_child_id if project.head is None else project.head.latest_child_id
        )
        if child_id is None:
            raise NothingToMove("nothing to redo: head has no later edit", "NOTHING_TO_REDO")
        child = await reads.get_edit(project.id, child_id)
        assert child is not None
        assert child.status is EditStatus.SUCCEEDED
        return await self._move_head(repository, project, child)

    async def jump(
        self, session: AsyncSession, owner_id: uuid.UUID, project_id: uuid.UUID, edit_id: uuid.UUID
    ) -> Project:
        repository = ProjectRepository(session)
        reads = await repository.reads()
        project = await self._locked(reads, owner_id, project_id)
        target = await reads.get_edit(project.id, edit_id)
        if target is None:
            raise EditNotFound(edit_id)
        if target.status is not EditStatus.SUCCEEDED:
            raise FailedPrecondition(
                f"edit {edit_id} is {target.status.value}; head can only be a succeeded edit",
                reason="EDIT_NOT_SUCCEEDED",
            )
        return await self._move_head(repository, project, target)

    async def reset(
        self, session: AsyncSession, owner_id: uuid.UUID, project_id: uuid.UUID
    ) -> Project:
        repository = ProjectRepository(session)
        project = await self._locked(await repository.reads(), owner_id, project_id)
        if project.head is None:
            return project
        return await self._move_head(repository, project, None)

    # -- history ----------------------------------------------------------------------

    async def head_path(self, reads: ProjectReads, head: Edit | HeadAt | None) -> HeadPath:
        if head is None:
            return HeadPath.of(None, 0, None)
        cached = self._head_paths.get(head.id)
        if cached is not None:
            self._head_paths.move_to_end(head.id)
            return cached
        start_seq, path = await reads.branch_start(head.branch_id)
        found = HeadPath.of(head, start_seq, path)
        self._head_paths[head.id] = found
        if len(self._head_paths) > HEAD_PATH_CACHE_SIZE:
            self._head_paths.popitem(last=False)
        return found

    async def list_edits(
        self,
        reads: ProjectReads,
        owner_id: uuid.UUID,
        project_id: uuid.UUID,
        *,
        after_seq: int,
        page_size: int,
        held: Callable[[uuid.UUID, range], Sequence[HeldEdit | None]] | None = None,
    ) -> EditsPage:
        """A page in seq order. An edit's seq is its place for good (1 to the project's
        `edit_count`, none ever removed but with the project) and what a finished edit's
        message shows never changes (ADR 0025): the project's row says which seqs the page
        spans, `held` answers what the caller keeps of each, and only the others are read."""
        span = await reads.page_span(project_id, owner_id)
        if span is None:
            raise ProjectNotFound(project_id)
        path = await self.head_path(reads, span.head)
        last = min(after_seq + page_size, span.edit_count)
        seqs = range(after_seq + 1, last + 1)
        kept: Sequence[HeldEdit | None] = held(project_id, seqs) if held else [None] * len(seqs)
        missing = [seq for seq, found in zip(seqs, kept, strict=True) if found is None]
        read = await reads.edits_at(project_id, missing, path) if missing else {}
        entries = []
        holds = path.holds  # 100 calls a page
        for seq, found in zip(seqs, kept, strict=True):
            if found is not None:
                depth, branch_seq, _ = found
                entries.append(PageEntry(holds(branch_seq, depth), None, found))
            elif (edit := read.get(seq)) is not None:  # absent: purged meanwhile
                entries.append(PageEntry(edit.on_head_path, edit))
        return EditsPage(entries, last if last < span.edit_count else None)

    async def get_edit(
        self, reads: ProjectReads, owner_id: uuid.UUID, project_id: uuid.UUID, edit_id: uuid.UUID
    ) -> Edit:
        project = await self.get(reads, owner_id, project_id)
        edit = await reads.get_edit(project_id, edit_id)
        if edit is None:
            raise EditNotFound(edit_id)
        if edit.id == project.head_edit_id:  # e.g. the edit ApplyEdit just made head
            return dataclasses.replace(edit, on_head_path=True)
        return _with_path(edit, await self.head_path(reads, project.head))

    # -- the steps ApplyEdit records -----------------------------------------------------

    async def record_pending(
        self,
        session: AsyncSession,
        owner_id: uuid.UUID,
        project_id: uuid.UUID,
        new: NewEdit,
        *,
        ai_reservation_id: str | None,
        storage_reservation_id: str | None,
    ) -> tuple[Edit, bool]:
        """Claims the project for the edit and records it pending; answers (edit, created).
        An edit already recorded under the request id is answered as it is."""
        repository = ProjectRepository(session)
        reads = await repository.reads()
        project = await self._locked(reads, owner_id, project_id)
        existing = await reads.find_by_request_id(project_id, new.request_id)
        if existing is not None:
            return existing, False
        if project.running_edit_id is not None:
            raise EditRunning()
        source = project.current
        if new.checked_against is not None and source.asset_id != new.checked_against:
            raise HeadMoved()
        placement = await HistoryTree(repository, reads).place(project)
        edit = await repository.insert_edit(
            id=new.edit_id,
            project_id=project.id,
            owner_id=owner_id,
            seq=project.edit_count + 1,
            parent_id=project.head_edit_id,
            depth=placement.depth,
            branch_id=placement.branch_id or new.edit_id,
            branch_path=placement.branch_path,
            action=new.action.value,
            params=new.params,
            preset_id=new.preset_id,
            preset_prompt=new.preset_prompt,
            preset_version=new.preset_version,
            source_asset_id=source.asset_id,
            source_mime_type=source.mime_type,
            source_width=source.width,
            source_height=source.height,
            source_bytes=source.size_bytes,
            status=EditStatus.PENDING.value,
            engine=new.engine,
            request_id=new.request_id,
            reapplied_from_id=new.reapplied_from_id,
            reapplied_from_project_id=new.reapplied_from_project_id,
            ai_reservation_id=ai_reservation_id,
            storage_reservation_id=storage_reservation_id,
        )
        await repository.update_project(
            project.id, running_edit_id=edit.id, edit_count=project.edit_count + 1
        )
        return edit, True

    async def record_succeeded(
        self, session: AsyncSession, edit: Edit, result: Image
    ) -> Edit | None:
        """Marks the edit succeeded with its stored result and, if head is still its
        parent, moves head to it, in one transaction. What the engine reported (model,
        finish reason, tokens, duration) is already on the edit: the workflow records it
        once, before storing the result, so an adopted edit has it too. None when the edit
        was no longer pending (the sweeper failed it)."""
        repository = ProjectRepository(session)
        done = await repository.finish_edit(
            edit.id,
            status=EditStatus.SUCCEEDED.value,
            result_asset_id=result.asset_id,
            result_mime_type=result.mime_type,
            result_width=result.width,
            result_height=result.height,
            result_bytes=result.size_bytes,
        )
        if done is None:
            return None
        await repository.set_latest_child(edit.project_id, edit.parent_id, edit.id)
        await repository.release_running(
            edit.project_id,
            edit.id,
            move_head_from=edit.parent_id,
            new_head=edit.id,
            thumbnail=result.asset_id,
        )
        return done

    async def record_failed(
        self, session: AsyncSession, edit: Edit, *, error: str, code: str, duration_ms: int | None
    ) -> Edit | None:
        repository = ProjectRepository(session)
        done = await repository.finish_edit(
            edit.id,
            status=EditStatus.FAILED.value,
            error=error,
            error_code=code,
            duration_ms=duration_ms,
        )
        await repository.release_running(edit.project_id, edit.id)
        return done


@dataclass(frozen=True)
class Placement:
    depth: int
    branch_id: uuid.UUID | None  # None: the new edit starts its own branch
    branch_path: list[list[Any]] | None


class HistoryTree:
    """Where a new edit goes: on its parent's branch if the parent has no child yet,
    else on a new branch that stores the path to its parent (ADR 0012)."""

    def __init__(self, repository: ProjectRepository, reads: ProjectReads) -> None:
        self._repository = repository
        self._reads = reads

    async def place(self, project: Project) -> Placement:
        head = project.head
        if head is None:
            return Placement(depth=1, branch_id=None, branch_path=[])
        if not await self._repository.has_children(project.id, head.id):
            return Placement(depth=head.depth + 1, branch_id=head.branch_id, branch_path=None)
        start_seq, path = await self._reads.branch_start(head.branch_id)
        return Placement(
            depth=head.depth + 1,
            branch_id=None,
            branch_path=[*path, [start_seq, head.depth]],
        )


def _with_path(edit: Edit, path: HeadPath) -> Edit:
    return dataclasses.replace(edit, on_head_path=path.contains(edit))
