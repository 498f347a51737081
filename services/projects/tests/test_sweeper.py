"""The sweeper's claims are leases (ADR 0012): a row one sweeper claimed is not due for
another until the lease runs out, so two replicas never settle or purge the same row at
once; the request path has a grace period to settle its own; settling never rewrites what
clients see; and a crash in the sweeper's own steps is finished by the next sweep."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.workflow import SimulatedCrash, crash_at
from services.projects.models import Edit, EditStatus, HeadPath, Project
from services.projects.repository import ProjectReads, ProjectRepository
from services.projects.tests.conftest import Metadata, Stack, warm
from services.projects.tests.fakes import photo
from services.projects.workflows import ProjectSweeper, ai_key

# Past every deadline the request path has (pending timeout, grace, purge delay).
LATER = datetime.timedelta(hours=2)


def after(now: datetime.datetime, seconds: float) -> datetime.datetime:
    return now + datetime.timedelta(seconds=seconds)


def another_sweeper(stack: Stack) -> ProjectSweeper:
    """A second replica's sweeper: same database and peers, its own instance."""
    c = stack.components
    return ProjectSweeper(
        database=c.database, workflows=c.workflows, assets=stack.assets, settings=c.settings
    )


async def drained(stack: Stack) -> datetime.datetime:
    """A moment past every deadline at which nothing of earlier tests is due any more: the
    suite shares one database, and their leftovers would fill this test's batches or take
    its crash. Their unsettled edits (thousands: test_long_history records edits without
    settling them) are claimed for a day, as by a sweeper that died; then the sweeper runs
    until nothing else is due (what it does not finish, it holds under its lease)."""
    now = datetime.datetime.now(datetime.UTC) + LATER
    day = datetime.timedelta(days=1)
    c = stack.components
    async with c.database.transaction() as session:
        await ProjectRepository(session).claim_unsettled_edits(
            now=now, finished_before=now, until=now + day, limit=1_000_000
        )
    while any((await c.sweeper.sweep_once(now)).values()):
        pass
    return now


class Held:
    """Wraps `target.method`: counts the calls `matches` picks, holds the first of them
    until `release` is set (or, with `die`, raises SimulatedCrash in it: the sweeper's
    process dies during the remote call), and lets every other call through."""

    def __init__(
        self,
        target: Any,
        method: str,
        matches: Callable[..., bool],
        *,
        die: bool = False,
    ) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        original: Callable[..., Awaitable[Any]] = getattr(target, method)

        async def held(*args: Any, **kwargs: Any) -> Any:
            if matches(*args, **kwargs):
                self.calls += 1
                if self.calls == 1:
                    self.entered.set()
                    if die:
                        raise SimulatedCrash(f"{method} in flight")
                    await self.release.wait()
            return await original(*args, **kwargs)

        setattr(target, method, held)

    async def reached_by(self, task: asyncio.Future[Any]) -> None:
        """Waits until `task` is held here (it must get here, not finish first)."""
        entered = asyncio.ensure_future(self.entered.wait())
        await asyncio.wait({task, entered}, return_when=asyncio.FIRST_COMPLETED)
        entered.cancel()
        assert self.entered.is_set(), "the first sweeper never reached the held call"
        assert not task.done()


async def _edit(stack: Stack, project_id: uuid.UUID, request_id: str) -> Edit:
    return await stack.stored_edit(project_id, request_id)


async def _project(stack: Stack, project_id: uuid.UUID) -> Project | None:
    async with stack.components.database.reader() as reader:
        return await ProjectReads(reader).get_project_any(project_id)


async def _unsettled_edit(stack: Stack) -> tuple[uuid.UUID, Metadata, uuid.UUID, Edit]:
    """A succeeded edit whose run died before it settled: its ai_edits unit is open."""
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    request = warm()
    with crash_at("apply.succeeded_recorded"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, project_id, request)
    edit = await _edit(stack, project_id, request.request_id)
    assert edit.status is EditStatus.SUCCEEDED
    assert edit.settled_at is None
    assert stack.quota.open(user_id) == [edit.ai_reservation_id]
    return user_id, auth, project_id, edit


# -- settling never rewrites what clients see -----------------------------------------


async def test_settling_an_edit_leaves_its_finish_time_alone(stack: Stack) -> None:
    now = await drained(stack)
    user_id, auth, project_id, edit = await _unsettled_edit(stack)
    request = pb.GetEditRequest(project_id=str(project_id), edit_id=str(edit.id))
    before = (await stack.stub.GetEdit(request, metadata=auth)).edit
    assert before.HasField("finish_time")
    report = await stack.components.sweeper.sweep_once(now)
    assert report["settled"] >= 1
    settled = await _edit(stack, project_id, edit.request_id)
    assert settled.settled_at is not None
    assert stack.quota.open(user_id) == []
    assert stack.quota.charged(user_id) == 1
    shown = (await stack.stub.GetEdit(request, metadata=auth)).edit
    assert shown.finish_time == before.finish_time
    assert settled.finished_at == edit.finished_at


# -- leases -------------------------------------------------------------------------------


async def _two_sweepers_at_once(stack: Stack, now: datetime.datetime, commits: Held) -> None:
    """The first sweeper claims what is due and waits on billing (`commits` holds it);
    a second, at the same moment, must leave it alone; billing is asked once."""
    first = asyncio.ensure_future(stack.components.sweeper.sweep_once(now))
    await commits.reached_by(first)
    await another_sweeper(stack).sweep_once(now)
    assert commits.calls == 1
    commits.release.set()
    await first
    assert commits.calls == 1


async def test_two_sweepers_at_once_settle_an_edit_once(stack: Stack) -> None:
    now = await drained(stack)
    user_id, _auth, project_id, edit = await _unsettled_edit(stack)
    reservation = edit.ai_reservation_id
    await _two_sweepers_at_once(
        stack, now, Held(stack.quota, "commit", lambda rid: rid == reservation)
    )
    settled = await _edit(stack, project_id, edit.request_id)
    assert settled.settled_at is not None
    assert stack.quota.charged(user_id) == 1
    assert stack.quota.open(user_id) == []


async def test_an_edit_claimed_by_a_sweeper_that_died_waits_for_its_lease(stack: Stack) -> None:
    now = await drained(stack)
    user_id, _auth, project_id, edit = await _unsettled_edit(stack)
    reservation = edit.ai_reservation_id
    commits = Held(stack.quota, "commit", lambda rid: rid == reservation, die=True)
    with pytest.raises(SimulatedCrash):
        await stack.components.sweeper.sweep_once(now)
    assert commits.calls == 1
    lease = stack.components.settings.sweep_lease_seconds
    other = another_sweeper(stack)
    await other.sweep_once(after(now, lease / 2))
    assert commits.calls == 1  # still the dead sweeper's
    assert (await _edit(stack, project_id, edit.request_id)).settled_at is None
    await other.sweep_once(after(now, lease + 1))
    assert commits.calls == 2  # the lease ran out: taken over, settled once
    assert (await _edit(stack, project_id, edit.request_id)).settled_at is not None
    assert stack.quota.charged(user_id) == 1
    assert stack.quota.open(user_id) == []


async def test_two_sweepers_at_once_settle_a_project_unit_once(stack: Stack) -> None:
    now = await drained(stack)
    user_id, _auth = stack.user()
    asset_id = stack.assets.upload(user_id, photo())
    with crash_at("create_project.recorded"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.create_project(user_id, "Interrupted", asset_id)
    (reservation,) = stack.quota.open(user_id)
    await _two_sweepers_at_once(
        stack, now, Held(stack.quota, "commit", lambda rid: rid == reservation)
    )
    assert stack.quota.open(user_id) == []
    assert stack.quota.committed.count(reservation) == 1


async def test_two_sweepers_at_once_purge_a_project_once(stack: Stack) -> None:
    now = await drained(stack)
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    done = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="sepia"))
    await stack.stub.DeleteProject(pb.DeleteProjectRequest(project_id=created.id), metadata=auth)
    deletes = Held(stack.assets, "delete", lambda owner, ids: owner == user_id)
    first = asyncio.ensure_future(stack.components.sweeper.sweep_once(now))
    await deletes.reached_by(first)
    await another_sweeper(stack).sweep_once(now)
    assert deletes.calls == 1
    deletes.release.set()
    await first
    assert deletes.calls == 1
    assert await _project(stack, uuid.UUID(created.id)) is None
    assert stack.assets.assets[uuid.UUID(done.edit.result_asset_id)].deleted


# -- the request path's grace ------------------------------------------------------------


async def test_a_project_within_its_grace_is_left_to_its_request(
    stack_factory: Callable[..., Awaitable[Stack]],
) -> None:
    grace = 3600.0  # far longer than this test takes, on any machine
    stack = await stack_factory(settle_grace_seconds=grace)
    await drained(stack)
    user_id, _auth = stack.user()
    workflows, sweeper = stack.components.workflows, stack.components.sweeper
    asset_id = stack.assets.upload(user_id, photo())
    # Created (its unit reserved, the row committed), the unit not yet committed: as if
    # CreateProject were still settling it, or had died doing so.
    with crash_at("create_project.recorded"), pytest.raises(SimulatedCrash):
        await workflows.create_project(user_id, "Young", asset_id)
    now = datetime.datetime.now(datetime.UTC)
    (reservation,) = stack.quota.open(user_id)
    await sweeper.sweep_once(after(now, grace / 2))
    assert stack.quota.open(user_id) == [reservation]
    assert reservation not in stack.quota.committed
    await sweeper.sweep_once(after(now, grace + 1))
    assert stack.quota.open(user_id) == []
    assert reservation in stack.quota.committed
    # The same for a deletion: its credit is the request's, then the sweeper's.
    project = await workflows.create_project(user_id, "Second", asset_id)
    with crash_at("delete_project.recorded"), pytest.raises(SimulatedCrash):
        await workflows.delete_project(user_id, project.id)
    now = datetime.datetime.now(datetime.UTC)
    await sweeper.sweep_once(after(now, grace / 2))
    assert [k for *_rest, k in stack.quota.credited if k.startswith("project:")] == []
    await sweeper.sweep_once(after(now, grace + 1))
    assert [key for *_rest, key in stack.quota.credited if key.startswith("project:")] == [
        f"project:{project.id}:deleted"
    ]


# -- crashes in the sweeper's own steps ---------------------------------------------------


async def test_a_crash_once_the_purge_deleted_the_results_is_finished_next_sweep(
    stack: Stack,
) -> None:
    sweeper = stack.components.sweeper
    now = await drained(stack)
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    first = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="sepia"))
    second = await stack.apply(auth, created.id, filter=pb.FilterParams(prompt="warmer"))
    results = [uuid.UUID(first.edit.result_asset_id), uuid.UUID(second.edit.result_asset_id)]
    await stack.stub.DeleteProject(pb.DeleteProjectRequest(project_id=created.id), metadata=auth)
    assert [key for *_rest, key in stack.quota.credited if key.startswith("project:")] == [
        f"project:{project_id}:deleted"
    ]
    with crash_at("purge.assets_deleted"), pytest.raises(SimulatedCrash):
        await sweeper.sweep_once(now)
    # The results are gone, the rows are not.
    assert all(stack.assets.assets[r].deleted for r in results)
    assert await _project(stack, project_id) is not None
    lease = stack.components.settings.sweep_lease_seconds
    await sweeper.sweep_once(after(now, lease / 2))  # the dead sweeper's lease holds
    assert await _project(stack, project_id) is not None
    report = await sweeper.sweep_once(after(now, lease + 1))
    assert report["purged"] >= 1
    assert await _project(stack, project_id) is None
    async with stack.components.database.reader() as reader:
        left = await ProjectReads(reader).edits_at(
            project_id, list(range(1, 11)), HeadPath.of(None, 0, None)
        )
    assert left == {}
    # No orphan: every result of the user's project is deleted, the original kept (it is
    # the user's upload); the unit was credited back once.
    assert sorted(a.info.id for a in stack.assets.results_of(user_id)) == sorted(results)
    assert all(a.deleted for a in stack.assets.results_of(user_id))
    assert not stack.assets.assets[uuid.UUID(created.original_asset_id)].deleted
    assert [key for *_rest, key in stack.quota.credited if key.startswith("project:")] == [
        f"project:{project_id}:deleted"
    ]
    assert stack.quota.open(user_id) == []


async def test_a_crash_once_an_adoption_is_recorded_is_settled_next_sweep(stack: Stack) -> None:
    sweeper = stack.components.sweeper
    now = await drained(stack)
    user_id, auth = stack.user()
    created = await stack.project(auth, user_id, photo())
    project_id = uuid.UUID(created.id)
    request = warm()
    with crash_at("apply.result_stored"), pytest.raises(SimulatedCrash):
        await stack.components.workflows.apply(user_id, project_id, request)
    pending = await _edit(stack, project_id, request.request_id)
    assert pending.status is EditStatus.PENDING
    # The sweeper adopts the stored result and dies before it settles.
    with crash_at("adopt.succeeded_recorded"), pytest.raises(SimulatedCrash):
        await sweeper.sweep_once(now)
    adopted = await _edit(stack, project_id, request.request_id)
    stored = await stack.assets.find_stored(user_id, f"edit:{adopted.id}")
    assert stored is not None
    assert adopted.status is EditStatus.SUCCEEDED
    assert adopted.result_asset_id == stored.id
    assert adopted.settled_at is None
    assert stack.quota.open(user_id) == [f"reservation:{ai_key(adopted.id)}"]
    # The next sweep settles it: charged once, nothing left open.
    report = await sweeper.sweep_once(now)
    assert report["settled"] >= 1
    done = await _edit(stack, project_id, request.request_id)
    assert done.settled_at is not None
    assert done.finished_at == adopted.finished_at
    assert stack.quota.charged(user_id) == 1
    assert stack.quota.open(user_id) == []
    project = await _project(stack, project_id)
    assert project is not None
    assert project.head_edit_id == done.id
    assert project.running_edit_id is None
    assert (stack.engine.total, stack.assets.stores) == (1, 1)
    # A retry with the same request id answers that edit, with no second call or charge.
    again = await stack.components.workflows.apply(user_id, project_id, request)
    assert again.edit.id == done.id
    assert again.edit.status is EditStatus.SUCCEEDED
    assert (stack.engine.total, stack.assets.stores) == (1, 1)
    assert stack.quota.charged(user_id) == 1
