"""Every SQL statement of projects, as methods on the caller's session (never commits)."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Query, Reader, reader
from runtime.pagination import Keyset
from services.projects.models import (
    AWAITING_PURGE,
    EDIT_FIELDS,
    LIVE,
    PENDING,
    UNSETTLED,
    Edit,
    EditAction,
    EditStatus,
    HeadAt,
    HeadPath,
    PageSpan,
    Project,
    edits,
    projects,
)

_head = edits.alias("head")
# branch_path can be long (ADR 0012) and is read only where a new branch or a head path
# needs it, never with every edit.
_edit_names = [name for name in EDIT_FIELDS if name != "branch_path"]
_head_columns = [_head.c[name].label(f"head_{name}") for name in _edit_names]
_branch_start = edits.alias("branch_start")
_edit_columns = [edits.c[name] for name in _edit_names]
_project_names = [c.name for c in projects.c]
_project_width = len(_project_names)
_edit_width = len(_edit_names)


def _edits_with_branch_seq() -> Any:
    return select(*_edit_columns, _branch_start.c.seq.label("branch_seq")).select_from(
        edits.join(_branch_start, _branch_start.c.id == edits.c.branch_id)
    )


_projects_and_head = projects.outerjoin(_head, _head.c.id == projects.c.head_edit_id)
# A live project of the caller's (the project's id and owner as bound parameters).
_owned = (projects.c.owner_id == bindparam("owner_id"), text(f"projects.{LIVE}"))
_this_owned = (projects.c.id == bindparam("project_id"), *_owned)


def _project_with_head() -> Any:
    return select(projects, *_head_columns).select_from(_projects_and_head)


_parent = edits.alias("parent")
_parent_columns = [_parent.c[name].label(f"parent_{name}") for name in _edit_names]


# The reads every screen makes are compiled once and run on the driver connection itself
# (runtime.db.Query, ADR 0020): no statement building, caching or result processing per
# call, and rows are read by position.
_GET_PROJECT_STATEMENT = _project_with_head().where(*_this_owned)
_GET_PROJECT = Query.of(_GET_PROJECT_STATEMENT)
_GET_PROJECT_FOR_UPDATE = Query.of(_GET_PROJECT_STATEMENT.with_for_update(of=projects))
# A history page's one read: the live project's edit count and where head stands, none
# of head's other columns (its params' JSON decoded for nothing).
_PAGE_SPAN = Query.of(
    select(projects.c.edit_count, _head.c.id, _head.c.depth, _head.c.branch_id)
    .select_from(_projects_and_head)
    .where(*_this_owned)
)
# Undo reads head's parent with the locked project: one statement, however deep head is.
_GET_PROJECT_AND_PARENT_FOR_UPDATE = Query.of(
    select(projects, *_head_columns, *_parent_columns)
    .select_from(_projects_and_head.outerjoin(_parent, _parent.c.id == _head.c.parent_id))
    .where(*_this_owned)
    .with_for_update(of=projects)
)
_GET_PROJECT_ANY = Query.of(_project_with_head().where(projects.c.id == bindparam("project_id")))
_owned_live = _project_with_head().where(*_owned)
_newest_first = (projects.c.created_at.desc(), projects.c.id.desc())
_LIST_PROJECTS = Query.of(
    _owned_live.order_by(*_newest_first).limit(bindparam("limit", type_=Integer))
)
_LIST_PROJECTS_AFTER = Query.of(
    _owned_live.where(
        tuple_(projects.c.created_at, projects.c.id)
        < tuple_(bindparam("after_created_at"), bindparam("after_id"))
    )
    .order_by(*_newest_first)
    .limit(bindparam("limit", type_=Integer))
)
_GET_EDIT = Query.of(
    _edits_with_branch_seq().where(
        edits.c.project_id == bindparam("project_id"), edits.c.id == bindparam("edit_id")
    )
)
_EDIT_BY_REQUEST = Query.of(
    select(*_edit_columns).where(
        edits.c.project_id == bindparam("project_id"), edits.c.request_id == bindparam("request_id")
    )
)
_BRANCH_START = Query.of(
    select(edits.c.seq, edits.c.branch_path).where(edits.c.id == bindparam("branch_id"))
)
# A history page reads in full only the edits its caller does not already hold (ADR 0025):
# by seq, on the (project_id, seq) index, rather than 100 probes of the primary key's
# random UUIDs.
_EDITS_AT = Query.of(
    _edits_with_branch_seq().where(
        edits.c.project_id == bindparam("project_id"),
        edits.c.seq == any_(bindparam("seqs", type_=ARRAY(Integer))),
    )
)


_actions = {action.value: action for action in EditAction}
_statuses = {status.value: status for status in EditStatus}
# `_edit` fills every field itself; this fails at import if Edit gains one it does not know.
_EDIT_EXTRA_FIELDS = ("branch_path", "branch_seq", "on_head_path")
if {f.name for f in dataclasses.fields(Edit)} != {*_edit_names, *_EDIT_EXTRA_FIELDS}:
    raise RuntimeError("repository._edit does not fill exactly Edit's fields")


def _edit(values: Any, *, branch_seq: int | None = None, path: HeadPath | None = None) -> Edit:
    """An edit from a driver row's values of `_edit_columns`, in order. A history page
    builds 100 of them: rows are read by position and the frozen dataclass is filled
    directly, which costs a fiftieth of its generated __init__ (44 guarded setattrs)."""
    fields = dict(zip(_edit_names, values, strict=True))
    fields["action"] = _actions[fields["action"]]
    fields["status"] = _statuses[fields["status"]]
    fields["branch_path"] = None
    fields["branch_seq"] = branch_seq
    fields["on_head_path"] = path.holds(branch_seq, fields["depth"]) if path is not None else False
    edit = object.__new__(Edit)
    edit.__dict__.update(fields)
    return edit


def _project(row: Any) -> Project:
    """A project from a driver row of `_project_with_head` (by position), with its head."""
    head_values = row[_project_width : _project_width + _edit_width]
    head = _edit(head_values) if head_values[0] is not None else None
    return Project.from_mapping(dict(zip(_project_names, row[:_project_width], strict=True)), head)


class ProjectReads:
    """The reads of projects and their history, on a Reader: the bare driver connection of
    `Database.reader()`, or a transaction's own (`ProjectRepository.reads()`)."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def get_project(
        self, project_id: uuid.UUID, owner_id: uuid.UUID, *, for_update: bool = False
    ) -> Project | None:
        """A live project of `owner_id` with its head edit; None otherwise."""
        row = await self._reader.fetch_one(
            _GET_PROJECT_FOR_UPDATE if for_update else _GET_PROJECT,
            project_id=project_id,
            owner_id=owner_id,
        )
        return _project(row) if row is not None else None

    async def page_span(self, project_id: uuid.UUID, owner_id: uuid.UUID) -> PageSpan | None:
        """What a history page needs of a live project of `owner_id`; None otherwise."""
        row = await self._reader.fetch_one(_PAGE_SPAN, project_id=project_id, owner_id=owner_id)
        if row is None:
            return None
        head = HeadAt(row[1], row[2], row[3]) if row[1] is not None else None
        return PageSpan(row[0], head)

    async def lock_project_and_parent(
        self, project_id: uuid.UUID, owner_id: uuid.UUID
    ) -> tuple[Project, Edit | None] | None:
        """A live project of `owner_id`, locked, and its head's parent (None: the original
        or no head); None when there is no such project."""
        row = await self._reader.fetch_one(
            _GET_PROJECT_AND_PARENT_FOR_UPDATE, project_id=project_id, owner_id=owner_id
        )
        if row is None:
            return None
        start = _project_width + _edit_width
        parent_values = row[start : start + _edit_width]
        return _project(row), _edit(parent_values) if parent_values[0] is not None else None

    async def get_project_any(self, project_id: uuid.UUID) -> Project | None:
        row = await self._reader.fetch_one(_GET_PROJECT_ANY, project_id=project_id)
        return _project(row) if row is not None else None

    async def list_projects(
        self,
        owner_id: uuid.UUID,
        *,
        after: Keyset | None,
        limit: int,
    ) -> list[Project]:
        if after is None:
            rows = await self._reader.fetch(_LIST_PROJECTS, owner_id=owner_id, limit=limit)
        else:
            rows = await self._reader.fetch(
                _LIST_PROJECTS_AFTER,
                owner_id=owner_id,
                after_created_at=after.key,
                after_id=after.id,
                limit=limit,
            )
        return [_project(row) for row in rows]

    async def get_edit(self, project_id: uuid.UUID, edit_id: uuid.UUID) -> Edit | None:
        row = await self._reader.fetch_one(_GET_EDIT, project_id=project_id, edit_id=edit_id)
        return _edit(row[:_edit_width], branch_seq=row[-1]) if row is not None else None

    async def find_by_request_id(self, project_id: uuid.UUID, request_id: str) -> Edit | None:
        row = await self._reader.fetch_one(
            _EDIT_BY_REQUEST, project_id=project_id, request_id=request_id
        )
        return _edit(row) if row is not None else None

    async def branch_start(self, branch_id: uuid.UUID) -> tuple[int, list[list[Any]]]:
        """The seq and stored path of a branch's first edit."""
        row = await self._reader.fetch_one(_BRANCH_START, branch_id=branch_id)
        assert row is not None, "every edit's branch starts at an edit of its project"
        return int(row[0]), list(row[1] or [])

    async def edits_at(
        self, project_id: uuid.UUID, seqs: list[int], path: HeadPath
    ) -> dict[int, Edit]:
        """The project's edits at these seqs, by seq."""
        rows = await self._reader.fetch(_EDITS_AT, project_id=project_id, seqs=seqs)
        found = (_edit(row[:_edit_width], branch_seq=row[_edit_width], path=path) for row in rows)
        return {edit.seq: edit for edit in found}


class ProjectRepository:
    """The writes (and the reads a write needs) on the caller's session; reads run through
    `reads()`, on the session's own connection and in its transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def reads(self) -> ProjectReads:
        return ProjectReads(await reader(self._session))

    # -- projects -----------------------------------------------------------------------

    async def insert_project(self, **values: Any) -> Project:
        row = (
            await self._session.execute(insert(projects).values(**values).returning(projects))
        ).one()
        return Project.from_row(row)

    async def update_project(
        self, project_id: uuid.UUID, *, expected_version: int | None = None, **values: Any
    ) -> bool:
        """Changes a live project and bumps its version; with `expected_version`, only if
        nobody changed it since (optimistic concurrency)."""
        statement = (
            update(projects)
            .where(projects.c.id == project_id, text(LIVE))
            .values(**values, version=projects.c.version + 1, updated_at=func.now())
        )
        if expected_version is not None:
            statement = statement.where(projects.c.version == expected_version)
        result = await self._session.execute(statement)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def move_head(
        self, project: Project, target: Edit | None, *, thumbnail_asset_id: uuid.UUID
    ) -> Project:
        """Moves a locked project's head to `target` (None: the original); answers the
        project as it now is, without reading it again."""
        row = (
            await self._session.execute(
                update(projects)
                .where(projects.c.id == project.id, projects.c.version == project.version)
                .values(
                    head_edit_id=None if target is None else target.id,
                    thumbnail_asset_id=thumbnail_asset_id,
                    version=projects.c.version + 1,
                    updated_at=func.now(),
                )
                .returning(projects)
            )
        ).one_or_none()
        assert row is not None, "the caller holds the project's row lock"
        return Project.from_row(row, head=target)

    async def clear_quota_reservation(self, project_id: uuid.UUID, reservation_id: str) -> None:
        await self._session.execute(
            update(projects)
            .where(projects.c.id == project_id, projects.c.quota_reservation_id == reservation_id)
            .values(quota_reservation_id=None)
        )

    async def mark_credited(self, project_id: uuid.UUID) -> None:
        await self._session.execute(
            update(projects).where(projects.c.id == project_id).values(credited_at=func.now())
        )

    # -- the sweeper's claims (ADR 0012) -----------------------------------------------
    # A claim moves the rows' lease clock to `until` and commits before any remote call:
    # a row is due only once its clock has passed `now`, so another sweeper takes it over
    # only when the lease ran out (its holder died or is stuck). `id = ANY(ARRAY(…))`, as
    # billing's claim_tier_changes: the claimed ids once, each a primary-key probe.

    async def claim_unsettled_projects(
        self,
        *,
        now: datetime.datetime,
        settled_before: datetime.datetime,
        until: datetime.datetime,
        limit: int,
    ) -> list[Project]:
        """Projects whose unit is still reserved, or deleted and not yet credited back,
        created (and deleted, if they were) before `settled_before` (younger ones are
        their request's to settle), and due; claimed until `until`. Unordered, as the two
        partial indexes of its OR give them: a claimed row's clock moves past `now`, so
        the rest come next round. The grace is `greatest(created_at, deleted_at)` (NULLs
        ignored), a filter: as an index condition on `deleted_at` it would lead the
        planner to ix_projects_awaiting_purge (every deleted project) instead of
        ix_projects_uncredited (migration 0007)."""
        p = projects.c
        due = (
            select(p.id)
            .where(
                or_(
                    p.quota_reservation_id.is_not(None),
                    and_(p.deleted_at.is_not(None), p.credited_at.is_(None)),
                ),
                func.greatest(p.created_at, p.deleted_at) < settled_before,
                p.sweep_after <= now,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._session.execute(_claim_projects(due, until))
        return sorted((Project.from_row(row) for row in rows), key=lambda f: (f.created_at, f.id))

    async def claim_deleted_projects(
        self,
        *,
        now: datetime.datetime,
        deleted_before: datetime.datetime,
        until: datetime.datetime,
        limit: int,
    ) -> list[Project]:
        """Deleted (and credited) projects past their purge delay and due, oldest deletion
        first; claimed until `until`."""
        p = projects.c
        due = (
            select(p.id)
            .where(
                text(f"projects.{AWAITING_PURGE}"),
                p.deleted_at < deleted_before,
                p.credited_at.is_not(None),
                p.sweep_after <= now,
            )
            .order_by(p.deleted_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._session.execute(_claim_projects(due, until))
        found = [Project.from_row(row) for row in rows]
        return sorted(found, key=lambda f: (f.deleted_at or f.created_at, f.id))

    async def owned_project_ids(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        return list(
            await self._session.scalars(
                select(projects.c.id).where(projects.c.owner_id == owner_id)
            )
        )

    async def result_asset_ids(self, project_id: uuid.UUID) -> list[uuid.UUID]:
        return list(
            await self._session.scalars(
                select(edits.c.result_asset_id).where(
                    edits.c.project_id == project_id, edits.c.result_asset_id.is_not(None)
                )
            )
        )

    async def delete_project_rows(self, project_id: uuid.UUID) -> None:
        # Head and redo pointers first: they reference edits the cascade removes.
        await self._session.execute(
            update(projects)
            .where(projects.c.id == project_id)
            .values(head_edit_id=None, root_latest_child_id=None)
        )
        await self._session.execute(projects.delete().where(projects.c.id == project_id))

    # -- edits --------------------------------------------------------------------------

    async def has_children(self, project_id: uuid.UUID, parent_id: uuid.UUID) -> bool:
        found = await self._session.scalar(
            select(literal_column("1"))
            .select_from(edits)
            .where(edits.c.project_id == project_id, edits.c.parent_id == parent_id)
            .limit(1)
        )
        return found is not None

    async def insert_edit(self, **values: Any) -> Edit:
        row = (
            await self._session.execute(insert(edits).values(**values).returning(*_edit_columns))
        ).one()
        return Edit.from_row(row)

    async def finish_edit(self, edit_id: uuid.UUID, **values: Any) -> Edit | None:
        """Moves a pending edit to succeeded or failed; None when it was not pending."""
        row = (
            await self._session.execute(
                update(edits)
                .where(edits.c.id == edit_id, text(PENDING))
                .values(**values, finished_at=func.now())
                .returning(*_edit_columns)
            )
        ).one_or_none()
        return Edit.from_row(row) if row is not None else None

    async def record_engine_run(self, edit_id: uuid.UUID, **report: Any) -> None:
        """What the engine reported (model, finish reason, tokens, duration), on the edit
        while it is still pending."""
        await self._session.execute(
            update(edits).where(edits.c.id == edit_id, text(PENDING)).values(**report)
        )

    async def set_latest_child(
        self, project_id: uuid.UUID, parent_id: uuid.UUID | None, child_id: uuid.UUID
    ) -> None:
        """The newest succeeded child is the one redo goes to."""
        if parent_id is None:
            await self._session.execute(
                update(projects)
                .where(projects.c.id == project_id)
                .values(root_latest_child_id=child_id)
            )
        else:
            await self._session.execute(
                update(edits).where(edits.c.id == parent_id).values(latest_child_id=child_id)
            )

    async def release_running(
        self,
        project_id: uuid.UUID,
        edit_id: uuid.UUID,
        *,
        move_head_from: Any = None,
        new_head: uuid.UUID | None = None,
        thumbnail: uuid.UUID | None = None,
    ) -> bool:
        """Ends the running edit; when it succeeded and head is still where it was applied,
        head moves to it. Answers whether head moved."""
        await self._session.execute(
            update(projects)
            .where(projects.c.id == project_id, projects.c.running_edit_id == edit_id)
            .values(running_edit_id=None)
        )
        if new_head is None:
            return False
        condition = (
            projects.c.head_edit_id.is_(None)
            if move_head_from is None
            else projects.c.head_edit_id == move_head_from
        )
        result = await self._session.execute(
            update(projects)
            .where(projects.c.id == project_id, condition, text(LIVE))
            .values(
                head_edit_id=new_head,
                thumbnail_asset_id=thumbnail,
                version=projects.c.version + 1,
                updated_at=func.now(),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def stuck_pending(self, *, created_before: datetime.datetime, limit: int) -> list[Edit]:
        """Edits pending since before `created_before`, oldest first. Not claimed, on
        purpose: the sweeper only asks assets about them (a read), and finishing an edit is
        conditional on it still being pending, so of two sweepers (or a slow run and a
        sweeper) exactly one finishes it and goes on to settle it; the other's finish
        changes nothing and it stops there."""
        statement = (
            select(*_edit_columns)
            .where(text(f"edits.{PENDING}"), edits.c.created_at < created_before)
            .order_by(edits.c.created_at)
            .limit(limit)
        )
        return [Edit.from_row(row) for row in await self._session.execute(statement)]

    async def claim_unsettled_edits(
        self,
        *,
        now: datetime.datetime,
        finished_before: datetime.datetime,
        until: datetime.datetime,
        limit: int,
    ) -> list[Edit]:
        """Finished edits whose reservations are still open, finished before
        `finished_before` (younger ones are their run's to settle) and due, in the order
        they became due; claimed until `until` (their `settle_after`: `finished_at`, which
        clients see, is never written after the edit finished)."""
        due = (
            select(edits.c.id)
            .where(
                text(f"edits.{UNSETTLED}"),
                edits.c.settle_after <= now,
                edits.c.finished_at < finished_before,
            )
            .order_by(edits.c.settle_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._session.execute(
            update(edits)
            .where(edits.c.id == any_(func.array(due)))
            .values(settle_after=until)
            .returning(*_edit_columns)
        )
        found = [Edit.from_row(row) for row in rows]
        return sorted(found, key=lambda edit: (edit.finished_at or edit.created_at, edit.id))

    async def mark_settled(self, edit_id: uuid.UUID) -> None:
        await self._session.execute(
            update(edits)
            .where(edits.c.id == edit_id)
            .values(settled_at=func.now(), ai_reservation_id=None, storage_reservation_id=None)
        )

    async def clear_storage_reservation(self, edit_id: uuid.UUID) -> None:
        await self._session.execute(
            update(edits).where(edits.c.id == edit_id).values(storage_reservation_id=None)
        )


def _claim_projects(due: Any, until: datetime.datetime) -> Any:
    """The sweeper's claim of the projects `due` selects: their clock moves to `until`."""
    return (
        update(projects)
        .where(projects.c.id == any_(func.array(due)))
        .values(sweep_after=until)
        .returning(projects)
    )
