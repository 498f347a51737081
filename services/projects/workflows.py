"""Operations of projects with side effects outside the database, as committed steps.

ApplyEdit (ADR 0011, 0012):

    validate against the current image -> tier features -> resolve the preset
    -> reserve ai_edits (AI actions) and room for the result (storage)
    -> [commit: edit pending, project claimed]            checkpoint apply.pending_recorded
    -> read the source, run the engine (no transaction)   checkpoint apply.engine_done
    -> store the result, handing assets the storage hold   checkpoint apply.result_stored
    -> [commit: edit succeeded, head moved if still at the parent]
                                                          checkpoint apply.succeeded_recorded
    -> commit ai_edits, record the preset use -> [commit: settled]
    on failure: [commit: edit failed] -> release both -> [commit: settled]

The edit id is derived from (owner, project, request id), so every reservation key and
the result's storage key are the same on a retry: billing and assets answer the first
reservation and asset again, and nothing is charged twice. The storage hold is handed to
assets with the result (StoreAsset commits it and credits back what the result does not
use), so no upload can take the room between the engine and the store. The workflow runs
in its own task, shielded from the caller: a client that goes away does not stop it, and
a retry with the same request id joins the running task (or reads the outcome). An edit
left pending by a crash is adopted when assets holds its result (`FindStoredAsset` under
the edit's key): it ends succeeded, charged once, by the sweeper or by a retry with the
same request id; otherwise the sweeper fails it and releases its reservations. The sweeper
also settles every edit whose reservations are still open.

CreateProject reserves and commits one `projects` unit around the insert; DeleteProject
marks the project deleted and credits the unit back; the purge (a sweeper step, later)
deletes the project's result images through assets, then its rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from runtime import errors as domain
from runtime.clock import utc_now
from runtime.db import Database
from runtime.errors import DomainError, FailedPrecondition, InvalidArgument, PermissionDenied
from runtime.metrics import Metrics
from runtime.peers.assets import AssetInfo
from runtime.peers.billing import Metric, Quota
from runtime.peers.identity import TierLookup
from runtime.peers.presets import ADJUSTMENT, FILTER, ResolvedPreset
from runtime.periodic import every
from runtime.workflow import checkpoint
from services.projects.engines import EditEngine, EngineRequest, EngineResult, Point
from services.projects.engines.crop import ASPECT_RATIOS, CropBox, crop, fit_ratio, matches_ratio
from services.projects.errors import EditNotFound, ProjectNotFound
from services.projects.models import Edit, EditAction, EditStatus, Image, Project
from services.projects.repository import ProjectReads, ProjectRepository
from services.projects.service import NewEdit, ProjectService
from services.projects.settings import ProjectsSettings

log = logging.getLogger("pixelshop.projects.workflows")

EDIT_NAMESPACE = uuid.UUID("6f1d3c2e-8a57-4f7e-9a43-2b5d0c7e9f10")
ENGINE_SECONDS = "edit_engine_seconds"
EDIT_OUTCOMES = "edit_outcomes_total"
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


class Assets(Protocol):
    async def get_for_owner(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> AssetInfo: ...

    async def read(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> tuple[AssetInfo, bytes]: ...

    async def store(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        *,
        filename: str,
        idempotency_key: str,
        reservation_id: str | None = None,
        reserved_bytes: int = 0,
    ) -> AssetInfo: ...

    async def find_stored(self, owner_id: uuid.UUID, idempotency_key: str) -> AssetInfo | None: ...

    async def delete(self, owner_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> int: ...


class Presets(Protocol):
    async def resolve(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> ResolvedPreset: ...

    async def record_use(self, preset_id: uuid.UUID, edit_id: uuid.UUID) -> None: ...


WriteGuard = Callable[[AsyncSession, uuid.UUID], Awaitable[None]]


async def _no_guard(session: AsyncSession, user_id: uuid.UUID) -> None:
    return None


@dataclass(frozen=True)
class EditRequest:
    """An ApplyEdit as the API validated it (what needs the image is checked here)."""

    request_id: str
    action: EditAction
    prompt: str = ""
    hotspots: tuple[Point, ...] = ()
    crop: CropBox | None = None
    aspect_ratio: str = "free"
    preset_id: uuid.UUID | None = None
    reapplied_from: Edit | None = None


@dataclass(frozen=True)
class Applied:
    edit: Edit
    project: Project


@dataclass
class ReapplyResult:
    edits: list[Edit] = field(default_factory=list)
    project: Project | None = None
    failed_step: int = -1
    error: str = ""


def edit_id_for(owner_id: uuid.UUID, project_id: uuid.UUID, request_id: str) -> uuid.UUID:
    return uuid.uuid5(EDIT_NAMESPACE, f"{owner_id}/{project_id}/{request_id}")


def ai_key(edit_id: uuid.UUID) -> str:
    return f"edit:{edit_id}:ai_edits"


def storage_key(edit_id: uuid.UUID) -> str:
    return f"edit:{edit_id}:storage"


def result_key(edit_id: uuid.UUID) -> str:
    """The idempotency key the result is stored under with assets (and found by)."""
    return f"edit:{edit_id}"


def _replay(edit: Edit) -> DomainError:
    """The error a failed edit answered, again (a retry of a failed edit)."""
    classes: dict[str, type[DomainError]] = {
        "FAILED_PRECONDITION": domain.FailedPrecondition,
        "DEADLINE_EXCEEDED": domain.DeadlineExceeded,
        "UNAVAILABLE": domain.Unavailable,
        "RESOURCE_EXHAUSTED": domain.ResourceExhausted,
        "PERMISSION_DENIED": domain.PermissionDenied,
        "ABORTED": domain.Aborted,
    }
    cls = classes.get(edit.error_code or "", domain.FailedPrecondition)
    return cls(
        edit.error or "the edit failed", reason="EDIT_FAILED", metadata={"edit_id": str(edit.id)}
    )


def _image_of(stored: AssetInfo) -> Image:
    return Image(stored.id, stored.mime_type, stored.width, stored.height, stored.size_bytes)


def _fraction(value: int, whole: int) -> float:
    return round(value / whole, 6) if whole else 0.0


def _check_inside(request: EditRequest, image: Image) -> None:
    if request.crop is not None:
        box = request.crop
        if box.width < 1:
            raise InvalidArgument("crop.width", "must be at least 1 pixel")
        if box.height < 1:
            raise InvalidArgument("crop.height", "must be at least 1 pixel")
        if box.x < 0 or box.x >= image.width:
            raise InvalidArgument("crop.x", f"must be within the image (0-{image.width - 1})")
        if box.y < 0 or box.y >= image.height:
            raise InvalidArgument("crop.y", f"must be within the image (0-{image.height - 1})")
        if box.x + box.width > image.width:
            raise InvalidArgument("crop.width", f"reaches past the image's width of {image.width}")
        if box.y + box.height > image.height:
            raise InvalidArgument(
                "crop.height", f"reaches past the image's height of {image.height}"
            )
        if not matches_ratio(box.width, box.height, ASPECT_RATIOS[request.aspect_ratio]):
            raise InvalidArgument(
                "crop.aspect_ratio",
                f"{box.width}x{box.height} is not {request.aspect_ratio} (within one pixel)",
            )
    for index, point in enumerate(request.hotspots):
        if not 0 <= point.x < image.width:
            raise InvalidArgument(f"retouch.hotspots[{index}].x", f"must be 0-{image.width - 1}")
        if not 0 <= point.y < image.height:
            raise InvalidArgument(f"retouch.hotspots[{index}].y", f"must be 0-{image.height - 1}")


def _params(request: EditRequest, image: Image) -> dict[str, Any]:
    if request.crop is not None:
        box = request.crop
        return {
            "x": box.x,
            "y": box.y,
            "width": box.width,
            "height": box.height,
            "aspectRatio": request.aspect_ratio,
            "fractions": {
                "x": _fraction(box.x, image.width),
                "y": _fraction(box.y, image.height),
                "width": _fraction(box.width, image.width),
                "height": _fraction(box.height, image.height),
            },
        }
    params: dict[str, Any] = {"prompt": request.prompt}
    if request.action is EditAction.RETOUCH:
        params["hotspots"] = [
            {
                "x": p.x,
                "y": p.y,
                "fx": _fraction(p.x, image.width),
                "fy": _fraction(p.y, image.height),
            }
            for p in request.hotspots
        ]
    return params


def _check_same_request(edit: Edit, request: EditRequest) -> None:
    """A request id names one edit: reusing it for another edit is a client bug, refused
    rather than answered with the first edit's result. (Re-apply steps are derived from
    the project's image at the time, so only their source is compared.)"""
    if request.reapplied_from is not None:
        same = edit.reapplied_from_id == request.reapplied_from.id
    else:
        p = edit.params
        same = edit.action is request.action and edit.preset_id == request.preset_id
        if same and request.crop is not None:
            box = request.crop
            same = (p.get("x"), p.get("y"), p.get("width"), p.get("height")) == (
                box.x,
                box.y,
                box.width,
                box.height,
            ) and p.get("aspectRatio") == request.aspect_ratio
        elif same:
            same = p.get("prompt", "") == request.prompt and hotspots_of(edit) == request.hotspots
    if not same:
        raise FailedPrecondition(
            "request_id was already used for a different edit; make a new one per edit",
            reason="REQUEST_ID_REUSED",
        )


def hotspots_of(edit: Edit) -> tuple[Point, ...]:
    return tuple(Point(int(h["x"]), int(h["y"])) for h in edit.params.get("hotspots", []))


class EditWorkflows:
    def __init__(
        self,
        *,
        database: Database,
        service: ProjectService,
        assets: Assets,
        presets: Presets,
        quota: Quota,
        tiers: TierLookup,
        engine: EditEngine,
        settings: ProjectsSettings,
        metrics: Metrics | None = None,
        guard_write: WriteGuard = _no_guard,
    ) -> None:
        self._database = database
        self._service = service
        self._assets = assets
        self._presets = presets
        self._quota = quota
        self._tiers = tiers
        self._engine = engine
        self._settings = settings
        self._metrics = metrics or Metrics("projects")
        self._guard_write = guard_write
        # Edits running in this process, so a duplicate request joins the running task.
        self._running: dict[uuid.UUID, asyncio.Task[Applied]] = {}

    @property
    def engine(self) -> EditEngine:
        return self._engine

    # -- projects ----------------------------------------------------------------------

    async def create_project(self, owner_id: uuid.UUID, name: str, asset_id: uuid.UUID) -> Project:
        try:
            asset = await self._assets.get_for_owner(owner_id, asset_id)
        except domain.NotFound as error:
            raise InvalidArgument(
                "project.original_asset_id", "is not one of your uploaded images"
            ) from error
        if not asset.ready:
            raise FailedPrecondition("the image is still being uploaded; retry shortly")
        project_id = uuid.uuid4()
        reservation = await self._quota.reserve(
            owner_id, Metric.PROJECTS, 1, f"project:{project_id}"
        )
        try:
            async with self._database.transaction() as session:
                await self._guard_write(session, owner_id)
                await ProjectRepository(session).insert_project(
                    id=project_id,
                    owner_id=owner_id,
                    name=name,
                    original_asset_id=asset.id,
                    original_mime_type=asset.mime_type,
                    original_width=asset.width,
                    original_height=asset.height,
                    original_bytes=asset.size_bytes,
                    thumbnail_asset_id=asset.id,
                    quota_reservation_id=reservation,
                )
        except Exception:
            await self._quietly(self._quota.release(reservation), "release a projects unit")
            raise
        await checkpoint("create_project.recorded")
        await self._commit_project_unit(project_id, reservation)
        async with self._database.reader() as reader:
            return await self._service.get(ProjectReads(reader), owner_id, project_id)

    async def _commit_project_unit(self, project_id: uuid.UUID, reservation: str) -> None:
        await self._quota.commit(reservation)
        async with self._database.transaction() as session:
            await ProjectRepository(session).clear_quota_reservation(project_id, reservation)

    async def delete_project(self, owner_id: uuid.UUID, project_id: uuid.UUID) -> None:
        async with self._database.transaction() as session:
            project = await self._service.delete(session, owner_id, project_id)
        await checkpoint("delete_project.recorded")
        await self._credit_deleted(project)

    async def _credit_deleted(self, project: Project) -> None:
        if project.quota_reservation_id:
            await self._commit_project_unit(project.id, project.quota_reservation_id)
        await self._quota.credit(
            project.owner_id, Metric.PROJECTS, 1, f"project:{project.id}:deleted"
        )
        async with self._database.transaction() as session:
            await ProjectRepository(session).mark_credited(project.id)

    # -- ApplyEdit -----------------------------------------------------------------------

    async def apply(
        self, owner_id: uuid.UUID, project_id: uuid.UUID, request: EditRequest
    ) -> Applied:
        """Runs (or joins) the edit in a task the caller's cancellation does not reach."""
        edit_id = edit_id_for(owner_id, project_id, request.request_id)
        task = self._running.get(edit_id)
        if task is None:
            task = asyncio.ensure_future(self._apply(owner_id, project_id, edit_id, request))
            self._running[edit_id] = task
            task.add_done_callback(lambda done: self._finished(edit_id, done))
        return await asyncio.shield(task)

    async def drain(self, timeout: float) -> int:
        """Waits up to `timeout` for the edits running in this process, also those whose
        caller went away (shutdown: the pools close after this); answers how many were
        still running when it gave up. Those are the sweeper's, as after a crash."""
        running = list(self._running.values())
        if not running:
            return 0
        log.info("waiting for running edits", extra={"edits": len(running)})
        _, pending = await asyncio.wait(running, timeout=timeout)
        if pending:
            log.warning("edits still running at shutdown", extra={"edits": len(pending)})
        return len(pending)

    def _finished(self, edit_id: uuid.UUID, task: asyncio.Task[Applied]) -> None:
        if self._running.get(edit_id) is task:
            del self._running[edit_id]
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away need not see it

    async def _project(self, owner_id: uuid.UUID, project_id: uuid.UUID) -> Project:
        async with self._database.reader() as reader:
            return await self._service.get(ProjectReads(reader), owner_id, project_id)

    async def _apply(
        self, owner_id: uuid.UUID, project_id: uuid.UUID, edit_id: uuid.UUID, request: EditRequest
    ) -> Applied:
        async with self._database.reader() as reader:
            reads = ProjectReads(reader)
            project = await self._service.get(reads, owner_id, project_id)
            existing = await reads.find_by_request_id(project_id, request.request_id)
        if existing is not None:
            _check_same_request(existing, request)
            return await self._outcome_of(owner_id, existing)
        image = project.current
        _check_inside(request, image)
        new = await self._prepare(owner_id, edit_id, request, image)
        ai_reservation = storage_reservation = None
        try:
            if request.action.is_ai:
                ai_reservation = await self._quota.reserve(
                    owner_id, Metric.AI_EDITS, 1, ai_key(edit_id)
                )
            room = int(image.size_bytes * self._settings.result_storage_factor)
            if room > 0:
                storage_reservation = await self._quota.reserve(
                    owner_id, Metric.STORAGE_BYTES, room, storage_key(edit_id)
                )
            async with self._database.transaction() as session:
                await self._guard_write(session, owner_id)
                edit, created = await self._service.record_pending(
                    session,
                    owner_id,
                    project_id,
                    new,
                    ai_reservation_id=ai_reservation,
                    storage_reservation_id=storage_reservation,
                )
        except Exception:
            # Keys are this edit's own: a duplicate request id never gets here (it found
            # the edit above, or record_pending answers it below without raising).
            await self._release(ai_reservation, storage_reservation)
            raise
        if not created:
            return await self._outcome_of(owner_id, edit)
        await checkpoint("apply.pending_recorded")
        return await self._execute(owner_id, edit, room)

    async def _prepare(
        self, owner_id: uuid.UUID, edit_id: uuid.UUID, request: EditRequest, image: Image
    ) -> NewEdit:
        tier = await self._tiers.tier(owner_id)
        flag = f"{request.action.value}_edits"
        if tier.features.get(flag, True) is False:
            plan = tier.name or tier.code
            raise PermissionDenied(
                f"{request.action.value} edits are not part of your plan ({plan})",
                reason="FEATURE_NOT_IN_PLAN",
            )
        engine = "crop" if request.action is EditAction.CROP else self._engine.name
        source = request.reapplied_from
        preset: ResolvedPreset | None = None
        if request.preset_id is not None:
            preset = await self._presets.resolve(request.preset_id, owner_id)
            expected = FILTER if request.action is EditAction.FILTER else ADJUSTMENT
            if request.action not in (EditAction.FILTER, EditAction.ADJUST):
                raise InvalidArgument("preset_id", "only filter and adjust edits take a preset")
            if preset.category != expected:
                raise InvalidArgument(
                    "preset_id", f"is a {preset.category} preset; use it for a {preset.category}"
                )
        elif not request.prompt and request.action.is_ai:
            raise InvalidArgument(f"{request.action.value}.prompt", "is required without a preset")
        return NewEdit(
            edit_id=edit_id,
            request_id=request.request_id,
            action=request.action,
            params=_params(request, image),
            engine=engine,
            checked_against=image.asset_id,
            preset_id=preset.id if preset else None,
            preset_prompt=preset.prompt if preset else None,
            preset_version=preset.version if preset else None,
            reapplied_from_id=source.id if source else None,
            reapplied_from_project_id=source.project_id if source else None,
        )

    async def _outcome_of(self, owner_id: uuid.UUID, edit: Edit) -> Applied:
        """A retry: the running task, the recorded outcome, or (another replica is still
        running it) the edit as it is once it ends or the wait is over."""
        running = self._running.get(edit.id)
        if (
            edit.status is EditStatus.PENDING
            and running is not None
            and not running.done()
            and running is not asyncio.current_task()
        ):
            return await asyncio.shield(running)
        if edit.status is EditStatus.PENDING:
            # Left by a crash after the result was stored? Then it is this edit's outcome.
            edit = await self.adopt_stored(edit) or edit
        deadline = time.monotonic() + self._settings.duplicate_wait_seconds
        delay = 0.05
        while edit.status is EditStatus.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            async with self._database.reader() as reader:
                found = await ProjectReads(reader).get_edit(edit.project_id, edit.id)
            if found is None:
                raise EditNotFound(edit.id)
            edit = found
        if edit.status is EditStatus.FAILED:
            raise _replay(edit)
        project = await self._project(owner_id, edit.project_id)
        async with self._database.reader() as reader:
            edit = await self._service.get_edit(
                ProjectReads(reader), owner_id, edit.project_id, edit.id
            )
        return Applied(edit, project)

    async def _execute(self, owner_id: uuid.UUID, edit: Edit, room: int) -> Applied:
        started = time.monotonic()
        outcome = "failed"
        try:
            result = await self._run_engine(owner_id, edit)
            duration_ms = round((time.monotonic() - started) * 1000)
            await self._record_engine_run(edit, result, duration_ms)
            await checkpoint("apply.engine_done")
            hold = edit.storage_reservation_id
            if hold and len(result.data) > room:
                # Larger than the room held (rare): assets reserves the bytes itself.
                await self._quietly(self._quota.release(hold), "release")
                hold = None
            # Assets commits the hold for the result (and credits back what it does not
            # use): the room held before the engine ran is the room the result takes.
            try:
                stored = await self._assets.store(
                    owner_id,
                    result.data,
                    filename=f"edit-{edit.seq}.{_EXTENSIONS.get(result.mime_type, 'png')}",
                    idempotency_key=result_key(edit.id),
                    reservation_id=hold,
                    reserved_bytes=room if hold else 0,
                )
            except Exception:
                # An answer lost on the way back (a timeout) may hide a stored result,
                # whose hold assets is committing: look before failing and releasing it.
                found = await self._stored_anyway(edit)
                if found is None:
                    raise
                stored = found
            await checkpoint("apply.result_stored")
            done = await self._record_succeeded(edit, stored)
            if done is None:
                done = await self._finished_elsewhere(edit, stored)
            outcome = "succeeded"
        except DomainError as error:
            await self._fail(edit, error, started)
            raise
        except Exception as error:
            log.error("edit failed unexpectedly", extra={"edit_id": str(edit.id)}, exc_info=error)
            await self._fail(edit, domain.Unavailable("the edit failed; try again"), started)
            raise
        finally:
            self._metrics.increment(
                EDIT_OUTCOMES,
                "Edits by outcome",
                engine=edit.engine,
                action=edit.action.value,
                outcome=outcome,
            )
        await checkpoint("apply.succeeded_recorded")
        await self._settle(done)
        project = await self._project(owner_id, edit.project_id)
        async with self._database.reader() as reader:
            shown = await self._service.get_edit(
                ProjectReads(reader), owner_id, edit.project_id, edit.id
            )
        return Applied(shown, project)

    async def _record_engine_run(self, edit: Edit, result: EngineResult, duration_ms: int) -> None:
        """[commit: what the engine reported, on the pending edit], before the result is
        stored, and the only place it is written: a run that dies after storing is adopted
        with its model, finish reason, tokens and duration, and one that succeeds keeps
        them (`record_succeeded` adds only the result)."""
        async with self._database.transaction() as session:
            await ProjectRepository(session).record_engine_run(
                edit.id,
                model=result.model,
                finish_reason=result.finish_reason,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                duration_ms=duration_ms,
            )

    async def _record_succeeded(self, edit: Edit, stored: AssetInfo) -> Edit | None:
        """[commit: succeeded, head moved if still at the parent]. The storage hold went
        to assets with the result (or was released before it), so it is no longer the
        edit's to release."""
        async with self._database.transaction() as session:
            done = await self._service.record_succeeded(session, edit, _image_of(stored))
            if done is not None and done.storage_reservation_id:
                await ProjectRepository(session).clear_storage_reservation(edit.id)
                done = dataclasses.replace(done, storage_reservation_id=None)
        return done

    async def _stored_anyway(self, edit: Edit) -> AssetInfo | None:
        try:
            found = await self._assets.find_stored(edit.owner_id, result_key(edit.id))
        except Exception as error:
            log.warning("could not ask assets for a stored result", exc_info=error)
            return None
        return found if found is not None and found.ready else None

    async def _finished_elsewhere(self, edit: Edit, stored: AssetInfo) -> Edit:
        """The edit was no longer pending when this run stored its result: a retry or the
        sweeper adopted the same result (then it succeeded once, there), or the sweeper
        failed it first (then the result is nobody's and goes)."""
        async with self._database.reader() as reader:
            found = await ProjectReads(reader).get_edit(edit.project_id, edit.id)
        if found is not None and found.status is EditStatus.SUCCEEDED:
            return found
        await self._quietly(self._assets.delete(edit.owner_id, [stored.id]), "delete an orphan")
        raise domain.Aborted("the edit took too long and was abandoned; try again")

    async def adopt_stored(self, edit: Edit, stored: AssetInfo | None = None) -> Edit | None:
        """A pending edit whose result assets already stored (a crash after StoreAsset)
        ends succeeded with that result, charged once; head moves only if it is still at
        the edit's parent, else the edit stays off the head path, reachable by jump.
        None when assets holds no finished result under the edit's key (or cannot say)."""
        if stored is None:
            try:
                stored = await self._assets.find_stored(edit.owner_id, result_key(edit.id))
            except Exception as error:
                log.warning("could not ask assets for a stored result", exc_info=error)
                return None
        if stored is None or not stored.ready:
            return None
        # What the engine reported is on the edit already: the run recorded it before it
        # stored the result.
        done = await self._record_succeeded(edit, stored)
        if done is None:  # finished meanwhile (by the run itself or another sweeper)
            async with self._database.reader() as reader:
                return await ProjectReads(reader).get_edit(edit.project_id, edit.id)
        self._metrics.increment(
            EDIT_OUTCOMES,
            "Edits by outcome",
            engine=edit.engine,
            action=edit.action.value,
            outcome="adopted",
        )
        await checkpoint("adopt.succeeded_recorded")
        await self._settle(done)
        return done

    async def _run_engine(self, owner_id: uuid.UUID, edit: Edit) -> EngineResult:
        _, source = await self._assets.read(owner_id, edit.source_asset_id)
        started = time.monotonic()
        try:
            if edit.action is EditAction.CROP:
                p = edit.params
                return await crop(
                    source,
                    edit.source_mime_type,
                    CropBox(int(p["x"]), int(p["y"]), int(p["width"]), int(p["height"])),
                )
            return await self._engine.run(
                EngineRequest(
                    action=edit.action,
                    prompt=edit.prompt,
                    hotspots=hotspots_of(edit),
                    source=source,
                    mime_type=edit.source_mime_type,
                    width=edit.source_width,
                    height=edit.source_height,
                    timeout=self._settings.edit_timeout_seconds,
                )
            )
        except TimeoutError as error:
            raise domain.DeadlineExceeded("the edit did not finish in time") from error
        finally:
            self._metrics.observe(
                ENGINE_SECONDS,
                "Edit engine latency",
                time.monotonic() - started,
                engine=edit.engine,
                action=edit.action.value,
            )

    async def _fail(self, edit: Edit, error: DomainError, started: float) -> None:
        duration_ms = round((time.monotonic() - started) * 1000)
        async with self._database.transaction() as session:
            done = await self._service.record_failed(
                session, edit, error=error.message, code=error.code.name, duration_ms=duration_ms
            )
        if done is None:
            return  # the sweeper failed it first, and settles it
        await checkpoint("apply.failed_recorded")
        await self._settle_failed(edit)

    async def _settle(self, edit: Edit) -> None:
        """Commits what a succeeded edit reserved and counts the preset use; a failure
        leaves the edit unsettled for the sweeper."""
        try:
            if edit.ai_reservation_id:
                await self._quota.commit(edit.ai_reservation_id)
            if edit.storage_reservation_id:
                await self._quota.release(edit.storage_reservation_id)
            if edit.preset_id:
                await self._presets.record_use(edit.preset_id, edit.id)
            async with self._database.transaction() as session:
                await ProjectRepository(session).mark_settled(edit.id)
        except Exception as error:
            log.warning(
                "edit not settled; the sweeper retries",
                extra={"edit_id": str(edit.id)},
                exc_info=error,
            )

    async def _settle_failed(self, edit: Edit) -> None:
        try:
            await self._release(edit.ai_reservation_id, edit.storage_reservation_id, strict=True)
            async with self._database.transaction() as session:
                await ProjectRepository(session).mark_settled(edit.id)
        except Exception as error:
            log.warning("failed edit not settled; the sweeper retries", exc_info=error)

    async def _release(self, *reservations: str | None, strict: bool = False) -> None:
        for reservation in reservations:
            if not reservation:
                continue
            if strict:
                await self._quota.release(reservation)
            else:
                await self._quietly(self._quota.release(reservation), "release a reservation")

    @staticmethod
    async def _quietly(call: Awaitable[object], what: str) -> None:
        try:
            await call
        except Exception as error:
            # Billing expires reservations nobody settles; the sweeper retries the rest.
            log.warning("could not %s", what, exc_info=error)

    # -- re-apply ----------------------------------------------------------------------

    async def reapply(
        self,
        owner_id: uuid.UUID,
        project_id: uuid.UUID,
        request_id: str,
        source_project_id: uuid.UUID | None,
        edit_ids: list[uuid.UUID],
        preset_id: uuid.UUID | None,
    ) -> ReapplyResult:
        """Applies the source's edits (or a preset) to this project's head, in order, as new
        edits; step n carries request id `<request_id>/n`, so the whole call is idempotent.
        Stops at the first failure, keeping what succeeded."""
        target = await self._project(owner_id, project_id)
        steps: list[tuple[Edit | None, EditRequest]] = []
        if preset_id is not None:
            preset = await self._presets.resolve(preset_id, owner_id)
            action = EditAction.FILTER if preset.category == FILTER else EditAction.ADJUST
            steps.append(
                (
                    None,
                    EditRequest(request_id=f"{request_id}/0", action=action, preset_id=preset_id),
                )
            )
        else:
            assert source_project_id is not None
            async with self._database.reader() as reader:
                reads = ProjectReads(reader)
                await self._service.get(reads, owner_id, source_project_id)
                sources = []
                for index, edit_id in enumerate(edit_ids):
                    found = await reads.get_edit(source_project_id, edit_id)
                    if found is None:
                        raise InvalidArgument(
                            f"edit_ids[{index}]", "is not an edit of the source project"
                        )
                    if found.status is not EditStatus.SUCCEEDED:
                        raise InvalidArgument(
                            f"edit_ids[{index}]",
                            f"is {found.status.value}; only succeeded edits re-apply",
                        )
                    sources.append(found)
            steps = [(edit, _template(edit, f"{request_id}/{n}")) for n, edit in enumerate(sources)]
        result = ReapplyResult()
        for index, (source, template) in enumerate(steps):
            current = (await self._project(owner_id, project_id)).current
            request = _scaled(template, source, current)
            try:
                applied = await self.apply(owner_id, project_id, request)
            except DomainError as error:
                result.failed_step = index
                result.error = error.message
                async with self._database.reader() as reader:
                    failed = await ProjectReads(reader).find_by_request_id(
                        project_id, request.request_id
                    )
                if failed is not None:
                    result.edits.append(failed)
                break
            result.edits.append(applied.edit)
        result.project = await self._project(owner_id, project_id) if steps else target
        return result


def _template(edit: Edit, request_id: str) -> EditRequest:
    """A new edit doing what `edit` did (scaled to the target image later)."""
    return EditRequest(
        request_id=request_id,
        action=edit.action,
        prompt=str(edit.params.get("prompt", "")),
        preset_id=None,
        reapplied_from=edit,
        aspect_ratio=str(edit.params.get("aspectRatio", "free")),
    )


def _scaled(template: EditRequest, source: Edit | None, image: Image) -> EditRequest:
    """Crops and hotspots by their stored fractions, on the target's current image."""
    if source is None:
        return template
    params = source.params
    prompt = source.preset_prompt or str(params.get("prompt", ""))
    if source.action is EditAction.CROP:
        f = params["fractions"]
        box = CropBox(
            round(f["x"] * image.width),
            round(f["y"] * image.height),
            max(1, round(f["width"] * image.width)),
            max(1, round(f["height"] * image.height)),
        )
        box = fit_ratio(box, ASPECT_RATIOS[template.aspect_ratio], image.width, image.height)
        return _replace(template, crop=box)
    hotspots = tuple(
        Point(
            min(image.width - 1, round(h["fx"] * image.width)),
            min(image.height - 1, round(h["fy"] * image.height)),
        )
        for h in params.get("hotspots", [])
    )
    return _replace(template, prompt=prompt, hotspots=hotspots)


def _replace(request: EditRequest, **changes: Any) -> EditRequest:
    import dataclasses

    return dataclasses.replace(request, **changes)


class ProjectSweeper:
    """Drives every state a crash can leave forward or back, with the request path's steps."""

    def __init__(
        self,
        *,
        database: Database,
        workflows: EditWorkflows,
        assets: Assets,
        settings: ProjectsSettings,
    ) -> None:
        self._database = database
        self._workflows = workflows
        self._assets = assets
        self._settings = settings

    async def sweep_once(self, now: datetime.datetime | None = None) -> dict[str, int]:
        """One round over every state a crash can leave. Each step claims its batch with a
        lease (`SWEEP_LEASE_SECONDS`) in a transaction that commits before any remote
        call, so another sweeper leaves those rows alone until the lease runs out (this
        one died or hangs); every step stays idempotent, so a takeover only repeats what
        may have been done. The request path's own rows get `SETTLE_GRACE_SECONDS` first."""
        now = now or utc_now()
        report = {
            "adopted_stuck": 0,
            "failed_stuck": 0,
            "settled": 0,
            "projects_settled": 0,
            "purged": 0,
        }
        batch = self._settings.sweep_batch_size
        until = now + datetime.timedelta(seconds=self._settings.sweep_lease_seconds)
        settled_before = now - datetime.timedelta(seconds=self._settings.settle_grace_seconds)
        # Edits left pending by a crash: adopted when assets holds their result, failed
        # and released when it holds none. Not claimed (ProjectRepository.stuck_pending):
        # finishing is conditional on the edit still being pending, so of two sweepers
        # (or the run itself, if it was only slow) one finishes and settles it.
        cutoff = now - datetime.timedelta(seconds=self._settings.pending_timeout_seconds)
        async with self._database.read() as session:
            stuck = await ProjectRepository(session).stuck_pending(
                created_before=cutoff, limit=batch
            )
        for edit in stuck:
            outcome = await self.finish_stuck(edit)
            if outcome is not None:
                report[outcome] += 1
        # Finished edits whose reservations are still open (crash, or billing was down).
        async with self._database.transaction() as session:
            unsettled = await ProjectRepository(session).claim_unsettled_edits(
                now=now, finished_before=settled_before, until=until, limit=batch
            )
        for edit in unsettled:
            if edit.status is EditStatus.SUCCEEDED:
                await self._workflows._settle(edit)
            else:
                await self._workflows._settle_failed(edit)
            report["settled"] += 1
        # Projects whose unit was reserved but not committed, or deleted and not credited.
        async with self._database.transaction() as session:
            projects_open = await ProjectRepository(session).claim_unsettled_projects(
                now=now, settled_before=settled_before, until=until, limit=batch
            )
        for project in projects_open:
            try:
                if project.deleted_at is not None:
                    await self._workflows._credit_deleted(project)
                elif project.quota_reservation_id:
                    await self._workflows._commit_project_unit(
                        project.id, project.quota_reservation_id
                    )
                report["projects_settled"] += 1
            except Exception as error:
                log.warning("project not settled", exc_info=error)
        # Deleted projects past their grace: result images through assets, then rows.
        purge_before = now - datetime.timedelta(seconds=self._settings.purge_after_seconds)
        async with self._database.transaction() as session:
            repository = ProjectRepository(session)
            doomed = await repository.claim_deleted_projects(
                now=now, deleted_before=purge_before, until=until, limit=batch
            )
            results = {p.id: await repository.result_asset_ids(p.id) for p in doomed}
        for project in doomed:
            if await self.purge_project(project, results[project.id]):
                report["purged"] += 1
        return report

    async def finish_stuck(self, edit: Edit) -> str | None:
        """One edit pending past the deadline: succeeded with its stored result, failed
        and released without one, or left for the next round while assets is still
        storing it (or cannot be asked)."""
        try:
            stored = await self._assets.find_stored(edit.owner_id, result_key(edit.id))
        except Exception as error:
            log.warning("could not ask assets about a stuck edit", exc_info=error)
            return None
        if stored is not None:
            if not stored.ready:
                return None  # assets is storing it; its own sweeper ends that either way
            adopted = await self._workflows.adopt_stored(edit, stored)
            return "adopted_stuck" if adopted is not None else None
        async with self._database.transaction() as session:
            failed = await self._workflows._service.record_failed(
                session,
                edit,
                error="the edit did not finish (interrupted)",
                code="UNAVAILABLE",
                duration_ms=None,
            )
        if failed is None:
            return None  # finished meanwhile
        await self._workflows._settle_failed(edit)
        return "failed_stuck"

    async def purge_project(self, project: Project, result_ids: list[uuid.UUID]) -> bool:
        try:
            if result_ids:
                await self._assets.delete(project.owner_id, result_ids)
            await checkpoint("purge.assets_deleted")
            async with self._database.transaction() as session:
                await ProjectRepository(session).delete_project_rows(project.id)
        except Exception as error:
            log.warning("project not purged; retried next sweep", exc_info=error)
            return False
        return True

    async def purge_user(self, owner_id: uuid.UUID) -> int:
        """Every project of the user, now (account deletion): results, then rows."""
        async with self._database.transaction() as session:
            repository = ProjectRepository(session)
            reads = await repository.reads()
            ids = await repository.owned_project_ids(owner_id)
            found = [
                (await reads.get_project_any(i), await repository.result_asset_ids(i)) for i in ids
            ]
        purged = 0
        for project, results in found:
            if project is None:
                continue
            if await self.purge_project(project, results):
                purged += 1
            else:
                raise domain.Unavailable("could not purge every project; retried later")
        return purged

    async def run_periodically(self, interval: float) -> None:
        """Sweeps every `interval` seconds until cancelled; a failed round is logged and
        the next one tries again."""
        await every(interval, self.sweep_once, name="projects sweep")


__all__ = ["ProjectNotFound"]
