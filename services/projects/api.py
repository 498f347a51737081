"""gRPC servicers of projects: validate every field, map protobuf to the domain and back.

Plain RPCs (reads, rename, undo/redo/jump/reset) are one unit of work each; creating,
deleting, applying and re-applying hand over to workflows.py, which owns its commits.
"""

from __future__ import annotations

import datetime
import uuid
from collections import OrderedDict
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2
from pixelshop.projects.v1 import projects_pb2, projects_pb2_grpc

from runtime import validation
from runtime.context import current_principal, current_service_caller
from runtime.db import Database
from runtime.errors import InvalidArgument
from runtime.interceptors import Encoded
from runtime.pagination import PageTokens, query_fingerprint
from services.projects.engines import Point
from services.projects.engines.crop import ASPECT_RATIOS, CropBox
from services.projects.models import NAME_MAX, Edit, EditAction, EditStatus, Project
from services.projects.repository import ProjectReads
from services.projects.service import EditsPage, HeldEdit, ProjectService
from services.projects.workflows import EditRequest, EditWorkflows, ProjectSweeper

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

PROMPT_MAX = 2000
HOTSPOTS_MAX = 8
PIXELS_MAX = 1_000_000
EDITS_PAGE_DEFAULT = 100
EDITS_PAGE_MAX = 500

_ACTIONS = {
    EditAction.RETOUCH: projects_pb2.EDIT_ACTION_RETOUCH,
    EditAction.FILTER: projects_pb2.EDIT_ACTION_FILTER,
    EditAction.ADJUST: projects_pb2.EDIT_ACTION_ADJUST,
    EditAction.CROP: projects_pb2.EDIT_ACTION_CROP,
}
_STATUSES = {
    EditStatus.PENDING: projects_pb2.EDIT_STATUS_PENDING,
    EditStatus.SUCCEEDED: projects_pb2.EDIT_STATUS_SUCCEEDED,
    EditStatus.FAILED: projects_pb2.EDIT_STATUS_FAILED,
}


def _id(value: uuid.UUID | None) -> str:
    return str(value) if value is not None else ""


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _set_time(field: timestamp_pb2.Timestamp, moment: datetime.datetime) -> None:
    """`FromDatetime` for the aware datetimes Postgres answers, without its calendar work
    (two per edit, 100 edits a history page)."""
    delta = moment - _EPOCH
    field.seconds = delta.days * 86400 + delta.seconds
    field.nanos = delta.microseconds * 1000


def _timestamp(moment: datetime.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    _set_time(stamp, moment)
    return stamp


def edit_message(edit: Edit, *, on_head_path: bool | None = None) -> projects_pb2.Edit:
    """`on_head_path` overrides the edit's own flag (head is on its own path)."""
    message = projects_pb2.Edit()
    fill_edit(message, edit, on_head_path=on_head_path)
    return message


def fill_edit(
    m: projects_pb2.Edit, edit: Edit, *, on_head_path: bool | None = None
) -> projects_pb2.Edit:
    """Sets the fields of an empty message in place: a history page adds 100 of them to
    its response, and filling in place costs a third of building each from keywords and
    copying it in. Empty values are left unset (proto3 would not send them anyway)."""
    p = edit.params
    action = edit.action
    if action is EditAction.CROP:
        crop = m.crop
        crop.SetInParent()
        crop.x, crop.y, crop.width, crop.height = p["x"], p["y"], p["width"], p["height"]
        crop.aspect_ratio = p.get("aspectRatio", "free")
    elif action is EditAction.RETOUCH:
        retouch = m.retouch
        retouch.SetInParent()
        retouch.prompt = p.get("prompt", "")
        for spot in p.get("hotspots", ()):
            point = retouch.hotspots.add()
            point.x, point.y = spot["x"], spot["y"]
    else:
        prompted = m.filter if action is EditAction.FILTER else m.adjust
        prompted.SetInParent()
        prompted.prompt = p.get("prompt", "")
    m.id = str(edit.id)
    m.project_id = str(edit.project_id)
    m.seq = edit.seq
    m.action = _ACTIONS[action]
    m.status = _STATUSES[edit.status]
    m.source_asset_id = str(edit.source_asset_id)
    m.engine = edit.engine
    m.request_id = edit.request_id
    m.on_head_path = edit.on_head_path if on_head_path is None else on_head_path
    _set_time(m.create_time, edit.created_at)
    if edit.finished_at is not None:
        _set_time(m.finish_time, edit.finished_at)
    # The optional ones, most often empty.
    if edit.parent_id is not None:
        m.parent_id = str(edit.parent_id)
    if edit.result_asset_id is not None:
        m.result_asset_id = str(edit.result_asset_id)
    m.result_width = edit.result_width or 0
    m.result_height = edit.result_height or 0
    if edit.error:
        m.error = edit.error
    if edit.preset_id is not None:
        m.preset_id = str(edit.preset_id)
    if edit.preset_prompt:
        m.preset_prompt = edit.preset_prompt
    if edit.preset_version:
        m.preset_version = edit.preset_version
    if edit.model:
        m.model = edit.model
    if edit.duration_ms:
        m.duration_ms = edit.duration_ms
    if edit.reapplied_from_id is not None:
        m.reapplied_from_id = str(edit.reapplied_from_id)
    if edit.reapplied_from_project_id is not None:
        m.reapplied_from_project_id = str(edit.reapplied_from_project_id)
    if edit.finish_reason:
        m.finish_reason = edit.finish_reason
    m.input_tokens = edit.input_tokens or 0
    m.output_tokens = edit.output_tokens or 0
    return m


# Wire framing of a history page, by hand (ADR 0023): `ListEditsResponse.edits` is field 1,
# its `next_page_token` field 2, and `Edit.on_head_path` field 21, as protoc numbers them.
_EDITS_TAG = b"\x0a"
_NEXT_PAGE_TOKEN_TAG = b"\x12"
_ON_HEAD_PATH = b"\xa8\x01\x01"
if (
    projects_pb2.ListEditsResponse.EDITS_FIELD_NUMBER != 1
    or projects_pb2.ListEditsResponse.NEXT_PAGE_TOKEN_FIELD_NUMBER != 2
    or projects_pb2.Edit.ON_HEAD_PATH_FIELD_NUMBER != 21
):
    raise RuntimeError("api.EncodedEdits frames fields the proto has renumbered")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# An edit as one entry of `ListEditsResponse.edits`, `on_head_path` left out: the two
# ways to frame it (off head's path; on it, with the flag after the body) and the body.
# A plain tuple of bytes, which the garbage collector stops tracking (see HeldEdit).
Framed: TypeAlias = tuple[bytes, bytes, bytes]


def _framed(edit: Edit) -> Framed:
    body = fill_edit(projects_pb2.Edit(), edit, on_head_path=False).SerializeToString()
    size = len(body)
    return (_EDITS_TAG + _varint(size), _EDITS_TAG + _varint(size + len(_ON_HEAD_PATH)), body)


class EncodedEdits:
    """Finished edits as a history page sends them, by project and seq (an edit's place
    for good), the least recently paged project dropped first. A finished edit never
    changes (ADR 0023, 0025) except whether it lies on head's path, which is left out of
    the encoding and added per page, so a page of edits held here is framed bytes joined
    and sent as they are, instead of 100 messages filled field by field from rows decoded
    for them."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._size = 0
        # Per project, by seq in the order first held: its oldest go first in O(1).
        self._projects: OrderedDict[uuid.UUID, OrderedDict[int, HeldEdit]] = OrderedDict()

    def get(self, project_id: uuid.UUID, seqs: range) -> list[HeldEdit | None]:
        """What is held of each seq, in order (None: not held)."""
        held = self._projects.get(project_id)
        if held is None:
            return [None] * len(seqs)
        self._projects.move_to_end(project_id)
        return list(map(held.get, seqs))

    def forget(self, project_id: uuid.UUID) -> None:
        held = self._projects.pop(project_id, None)
        if held is not None:
            self._size -= len(held)

    def response(self, page: EditsPage, next_page_token: str) -> Encoded:
        """The page's `ListEditsResponse`, serialized: framed from the held encodings
        (and from those of the edits read in full, kept for next time), sent as it is."""
        parts: list[bytes] = []
        for entry in page.entries:
            if entry.held is not None:
                off_path, on_path, body = entry.held[2]
            else:
                assert entry.edit is not None, "a page entry not held is read in full"
                off_path, on_path, body = self.remember(entry.edit)
            if entry.on_head_path:
                parts += (on_path, body, _ON_HEAD_PATH)
            else:
                parts += (off_path, body)
        if next_page_token:
            token = next_page_token.encode()
            parts += (_NEXT_PAGE_TOKEN_TAG, _varint(len(token)), token)
        return Encoded(b"".join(parts))

    def remember(self, edit: Edit) -> Framed:
        """The edit framed; kept when it has finished and its branch's first seq is
        known (the reads a page, GetEdit, ApplyEdit and Reapply answer join it)."""
        framed = _framed(edit)
        finished = edit.status is not EditStatus.PENDING
        if finished and edit.branch_seq is not None and self._capacity:
            held = self._projects.get(edit.project_id)
            if held is None:
                held = self._projects[edit.project_id] = OrderedDict()
            self._projects.move_to_end(edit.project_id)
            if edit.seq not in held:
                self._size += 1
            held[edit.seq] = (edit.depth, edit.branch_seq, framed)
            self._evict(keep=edit.project_id)
        return framed

    def _evict(self, keep: uuid.UUID) -> None:
        """Drops the least recently paged projects while over capacity; the project being
        paged loses its oldest entries only if it alone is over."""
        while self._size > self._capacity:
            oldest, held = next(iter(self._projects.items()))
            if oldest != keep:
                del self._projects[oldest]
                self._size -= len(held)
            else:
                held.popitem(last=False)
                self._size -= 1


def project_message(project: Project) -> projects_pb2.Project:
    current = project.current
    head = project.head
    return projects_pb2.Project(
        id=str(project.id),
        name=project.name,
        original_asset_id=str(project.original.asset_id),
        head_edit_id=_id(project.head_edit_id),
        current_asset_id=str(current.asset_id),
        edit_count=project.edit_count,
        version=project.version,
        create_time=_timestamp(project.created_at),
        update_time=_timestamp(project.updated_at),
        can_undo=project.can_undo,
        can_redo=project.can_redo,
        width=current.width,
        height=current.height,
        thumbnail_uri=f"/v1/assets/{project.thumbnail_asset_id}:content?variant=thumbnail",
        # head is on its own path
        head_edit=edit_message(head, on_head_path=True) if head is not None else None,
    )


def _project_id(value: str) -> uuid.UUID:
    return validation.required_uuid(value, "project_id")


def _request_id(value: str) -> str:
    parsed = validation.required_uuid(value, "request_id")
    return str(parsed)


def _prompt(value: str, field: str, *, required: bool) -> str:
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    return validation.text(
        value, field, max_length=PROMPT_MAX, required=required, single_line=False
    )


def _pixel(value: int, field: str) -> int:
    if value < 0:
        raise InvalidArgument(field, "must not be negative")
    if value > PIXELS_MAX:
        raise InvalidArgument(field, f"must be at most {PIXELS_MAX}")
    return value


def edit_request(request: projects_pb2.ApplyEditRequest) -> EditRequest:
    """Everything checkable without the image; the workflow checks against the image."""
    request_id = _request_id(request.request_id)
    kind = request.WhichOneof("params")
    if kind is None:
        raise InvalidArgument(
            "params", "exactly one of retouch, filter, adjust or crop is required"
        )
    preset_id = validation.uuid_field(request.preset_id, "preset_id", required=False)
    if preset_id is not None and kind not in ("filter", "adjust"):
        raise InvalidArgument("preset_id", "only filter and adjust edits take a preset")
    if kind == "crop":
        crop = request.crop
        ratio = (crop.aspect_ratio or "free").strip().lower()
        if ratio not in ASPECT_RATIOS:
            raise InvalidArgument("crop.aspect_ratio", f"must be one of {', '.join(ASPECT_RATIOS)}")
        box = CropBox(
            _pixel(crop.x, "crop.x"),
            _pixel(crop.y, "crop.y"),
            _pixel(crop.width, "crop.width"),
            _pixel(crop.height, "crop.height"),
        )
        if box.width < 1:
            raise InvalidArgument("crop.width", "must be at least 1 pixel")
        if box.height < 1:
            raise InvalidArgument("crop.height", "must be at least 1 pixel")
        return EditRequest(
            request_id=request_id, action=EditAction.CROP, crop=box, aspect_ratio=ratio
        )
    if kind == "retouch":
        retouch = request.retouch
        prompt = _prompt(retouch.prompt, "retouch.prompt", required=True)
        if not 1 <= len(retouch.hotspots) <= HOTSPOTS_MAX:
            raise InvalidArgument("retouch.hotspots", f"must hold 1-{HOTSPOTS_MAX} points")
        hotspots = tuple(
            Point(_pixel(h.x, f"retouch.hotspots[{i}].x"), _pixel(h.y, f"retouch.hotspots[{i}].y"))
            for i, h in enumerate(retouch.hotspots)
        )
        return EditRequest(
            request_id=request_id, action=EditAction.RETOUCH, prompt=prompt, hotspots=hotspots
        )
    params = request.filter if kind == "filter" else request.adjust
    prompt = _prompt(params.prompt, f"{kind}.prompt", required=preset_id is None)
    if preset_id is not None and prompt:
        raise InvalidArgument(f"{kind}.prompt", "must be empty when preset_id is given")
    action = EditAction.FILTER if kind == "filter" else EditAction.ADJUST
    return EditRequest(request_id=request_id, action=action, prompt=prompt, preset_id=preset_id)


class ProjectApi(projects_pb2_grpc.ProjectServiceServicer):
    """The public service: the caller owns what they touch, from the access token."""

    def __init__(
        self,
        *,
        database: Database,
        service: ProjectService,
        workflows: EditWorkflows,
        page_tokens: PageTokens,
        max_reapply_steps: int,
        encoded_edits: EncodedEdits,
    ) -> None:
        self._database = database
        self._encoded = encoded_edits
        self._service = service
        self._workflows = workflows
        self._tokens = page_tokens
        self._max_reapply_steps = max_reapply_steps

    async def CreateProject(
        self, request: projects_pb2.CreateProjectRequest, context: Context
    ) -> projects_pb2.CreateProjectResponse:
        owner_id = current_principal().user_id
        name = validation.text(request.project.name, "project.name", max_length=NAME_MAX)
        asset_id = validation.required_uuid(
            request.project.original_asset_id, "project.original_asset_id"
        )
        project = await self._workflows.create_project(owner_id, name, asset_id)
        return projects_pb2.CreateProjectResponse(project=project_message(project))

    async def ListProjects(
        self, request: projects_pb2.ListProjectsRequest, context: Context
    ) -> projects_pb2.ListProjectsResponse:
        owner_id = current_principal().user_id
        page_size = validation.page_size(request.page_size)
        query = query_fingerprint("projects", owner_id)
        after = self._tokens.keyset_after(request.page_token, query, datetime.datetime)
        async with self._database.reader() as reader:
            page = await self._service.list(
                ProjectReads(reader), owner_id, after=after, page_size=page_size
            )
        return projects_pb2.ListProjectsResponse(
            projects=[project_message(p) for p in page.items],
            next_page_token=self._tokens.keyset_token(page.next_after, query),
        )

    async def GetProject(
        self, request: projects_pb2.GetProjectRequest, context: Context
    ) -> projects_pb2.GetProjectResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        async with self._database.reader() as reader:
            project = await self._service.get(ProjectReads(reader), owner_id, project_id)
        return projects_pb2.GetProjectResponse(project=project_message(project))

    async def UpdateProject(
        self, request: projects_pb2.UpdateProjectRequest, context: Context
    ) -> projects_pb2.UpdateProjectResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        name = validation.text(request.name, "name", max_length=NAME_MAX)
        if request.version < 0:
            raise InvalidArgument("version", "must not be negative")
        async with self._database.transaction() as session:
            project = await self._service.rename(
                session, owner_id, project_id, name, request.version or None
            )
        return projects_pb2.UpdateProjectResponse(project=project_message(project))

    async def DeleteProject(
        self, request: projects_pb2.DeleteProjectRequest, context: Context
    ) -> projects_pb2.DeleteProjectResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        await self._workflows.delete_project(owner_id, project_id)
        self._encoded.forget(project_id)  # never served again; no need to hold it
        return projects_pb2.DeleteProjectResponse()

    async def ApplyEdit(
        self, request: projects_pb2.ApplyEditRequest, context: Context
    ) -> projects_pb2.ApplyEditResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        applied = await self._workflows.apply(owner_id, project_id, edit_request(request))
        # The history the client reloads next holds it already.
        self._encoded.remember(applied.edit)
        return projects_pb2.ApplyEditResponse(
            edit=edit_message(applied.edit), project=project_message(applied.project)
        )

    async def ListEdits(self, request: projects_pb2.ListEditsRequest, context: Context) -> Encoded:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        page_size = validation.page_size(
            request.page_size, default=EDITS_PAGE_DEFAULT, maximum=EDITS_PAGE_MAX
        )
        query = f"edits:{project_id}"
        after_seq = self._tokens.sequence_after(request.page_token, query)
        # Reads only (the project, head's chain start, the page), in autocommit on the
        # bare driver connection (ADR 0020).
        async with self._database.reader() as reader:
            page = await self._service.list_edits(
                ProjectReads(reader),
                owner_id,
                project_id,
                after_seq=after_seq,
                page_size=page_size,
                held=self._encoded.get,
            )
        token = self._tokens.sequence_token(page.next_after_seq, query)
        return self._encoded.response(page, token)

    async def GetEdit(
        self, request: projects_pb2.GetEditRequest, context: Context
    ) -> projects_pb2.GetEditResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        edit_id = validation.required_uuid(request.edit_id, "edit_id")
        async with self._database.reader() as reader:
            edit = await self._service.get_edit(ProjectReads(reader), owner_id, project_id, edit_id)
        return projects_pb2.GetEditResponse(edit=edit_message(edit))

    async def Undo(
        self, request: projects_pb2.UndoRequest, context: Context
    ) -> projects_pb2.UndoResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        async with self._database.transaction() as session:
            project = await self._service.undo(session, owner_id, project_id)
        return projects_pb2.UndoResponse(project=project_message(project))

    async def Redo(
        self, request: projects_pb2.RedoRequest, context: Context
    ) -> projects_pb2.RedoResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        async with self._database.transaction() as session:
            project = await self._service.redo(session, owner_id, project_id)
        return projects_pb2.RedoResponse(project=project_message(project))

    async def Jump(
        self, request: projects_pb2.JumpRequest, context: Context
    ) -> projects_pb2.JumpResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        edit_id = validation.required_uuid(request.edit_id, "edit_id")
        async with self._database.transaction() as session:
            project = await self._service.jump(session, owner_id, project_id, edit_id)
        return projects_pb2.JumpResponse(project=project_message(project))

    async def Reset(
        self, request: projects_pb2.ResetRequest, context: Context
    ) -> projects_pb2.ResetResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        async with self._database.transaction() as session:
            project = await self._service.reset(session, owner_id, project_id)
        return projects_pb2.ResetResponse(project=project_message(project))

    async def Reapply(
        self, request: projects_pb2.ReapplyRequest, context: Context
    ) -> projects_pb2.ReapplyResponse:
        owner_id = current_principal().user_id
        project_id = _project_id(request.project_id)
        request_id = _request_id(request.request_id)
        preset_id = validation.uuid_field(request.preset_id, "preset_id", required=False)
        source_id = validation.uuid_field(
            request.source_project_id, "source_project_id", required=False
        )
        if preset_id is not None:
            if source_id is not None or request.edit_ids:
                raise InvalidArgument(
                    "preset_id", "give either a preset or source_project_id and edit_ids"
                )
            edit_ids: list[uuid.UUID] = []
        else:
            if source_id is None:
                raise InvalidArgument("source_project_id", "is required without preset_id")
            if not 1 <= len(request.edit_ids) <= self._max_reapply_steps:
                raise InvalidArgument("edit_ids", f"must hold 1-{self._max_reapply_steps} edit ids")
            edit_ids = [
                validation.required_uuid(value, f"edit_ids[{i}]")
                for i, value in enumerate(request.edit_ids)
            ]
        result = await self._workflows.reapply(
            owner_id, project_id, request_id, source_id, edit_ids, preset_id
        )
        assert result.project is not None
        for edit in result.edits:
            self._encoded.remember(edit)
        return projects_pb2.ReapplyResponse(
            edits=[edit_message(e) for e in result.edits],
            project=project_message(result.project),
            completed=result.failed_step < 0,
            failed_step=result.failed_step,
            error=result.error,
        )


class ProjectInternalApi(projects_pb2_grpc.ProjectInternalServiceServicer):
    """For other services (service credential)."""

    def __init__(self, *, sweeper: ProjectSweeper) -> None:
        self._sweeper = sweeper

    async def PurgeUser(
        self, request: projects_pb2.PurgeUserRequest, context: Context
    ) -> projects_pb2.PurgeUserResponse:
        current_service_caller()
        user_id = validation.required_uuid(request.user_id, "user_id")
        return projects_pb2.PurgeUserResponse(deleted_count=await self._sweeper.purge_user(user_id))
