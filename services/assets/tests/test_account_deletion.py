"""A deleted account is refused and purged: identity's `user.deleted` records a tombstone,
every write of the user's data is guarded by it, and the purge leaves no row, no object
and no ready row without its object, whatever was in flight."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc
from sqlalchemy import text

from runtime import workflow
from runtime.errors import Unauthenticated
from services.assets.imaging import ImageLimits, validate_image
from services.assets.models import AssetKind, AssetState
from services.assets.server import AssetsComponents, build
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.fakes import FixedTiers, RecordingQuota
from services.assets.tests.test_consistency import (
    UPLOAD_STEPS,
    in_the_future,
    keys_of,
    rows_of,
    sweep_until_quiet,
    sweeper_at,
)
from services.assets.tests.test_upload import upload
from tests.support.fake_identity import FakeIdentity


@pytest.fixture
def quota() -> RecordingQuota:
    return RecordingQuota()


@pytest.fixture
async def parts(settings: AssetsSettings, quota: RecordingQuota) -> AsyncIterator[AssetsComponents]:
    built = build(settings, quota=quota, tiers=FixedTiers())
    yield built
    await built.close()


async def record_tombstone(parts: AssetsComponents, user_id: uuid.UUID) -> None:
    async with parts.database.transaction() as session:
        await parts.tombstones.record(session, user_id)


# Which upload task a checkpoint belongs to, and where each one should wait.
_task: contextvars.ContextVar[int] = contextvars.ContextVar("task", default=-1)


class Pauses:
    """Replaces the workflows' `checkpoint`: task i waits at `stops[i]` until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stops: dict[int, str]) -> None:
        self.stops = stops
        self.reached = {i: asyncio.Event() for i in stops}
        self.release = asyncio.Event()
        original = workflow.checkpoint

        async def checkpoint(name: str) -> None:
            await original(name)
            task = _task.get()
            if self.stops.get(task) == name:
                self.reached[task].set()
                await self.release.wait()

        monkeypatch.setattr("services.assets.workflows.checkpoint", checkpoint)

    def start(self, task: int, work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        token = _task.set(task)
        try:
            return asyncio.create_task(work())  # the task copies the context
        finally:
            _task.reset(token)

    async def all_reached(self) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.reached.values())), 60)


async def test_a_deleted_users_writes_are_refused_after_the_tombstone(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    user_id = uuid.uuid4()
    await record_tombstone(parts, user_id)

    with pytest.raises(Unauthenticated):
        await parts.workflows.upload(user_id, images.png(32, 32), filename="late.png")

    assert await rows_of(parts, user_id) == []
    assert await keys_of(parts, user_id) == []
    assert quota.reserved == {}  # refused before anything was reserved


async def test_deleting_an_account_while_20_uploads_are_in_flight_leaves_nothing(
    parts: AssetsComponents, quota: RecordingQuota, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each upload waits at one of the workflow's steps (all of them, in turn) while the
    # tombstone is recorded and the purge runs; then they all go on.
    user_id = uuid.uuid4()
    stops = {i: UPLOAD_STEPS[i % len(UPLOAD_STEPS)] for i in range(20)}
    pauses = Pauses(monkeypatch, stops)
    uploads = [
        pauses.start(
            i, lambda i=i: parts.workflows.upload(user_id, images.png(40, 30), filename=f"{i}.png")
        )
        for i in stops
    ]
    await pauses.all_reached()

    await record_tombstone(parts, user_id)
    purged = await parts.workflows.purge_user(user_id)
    # Only what was ready when the purge ran counted; no ready row is left at all.
    assert purged == sum(
        UPLOAD_STEPS.index(step) >= UPLOAD_STEPS.index("assets.upload.ready")
        for step in stops.values()
    )
    assert [r for r in await rows_of(parts, user_id) if r.state is AssetState.READY] == []

    pauses.release.set()
    outcomes = await asyncio.gather(*uploads, return_exceptions=True)

    # The uploads that were not ready yet are refused as a deleted account's (and undo
    # their own objects).
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 20 - purged
    assert all(isinstance(o, Unauthenticated) for o in refused), refused
    assert await rows_of(parts, user_id) == []
    assert await keys_of(parts, user_id) == []  # even before any sweep
    assert quota.unsettled() == set()
    assert quota.settled_both_ways() == set()


async def test_objects_of_a_pending_upload_landing_after_the_purge_are_removed(
    parts: AssetsComponents, quota: RecordingQuota, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload's objects are written after the purge ran: its ready commit is refused
    # and it removes them itself; had it crashed instead, the orphan sweep does.
    user_id = uuid.uuid4()
    pauses = Pauses(monkeypatch, {0: "assets.upload.reservation_recorded"})
    task = pauses.start(
        0, lambda: parts.workflows.upload(user_id, images.png(40, 30), filename="a.png")
    )
    await pauses.all_reached()
    await record_tombstone(parts, user_id)
    await parts.workflows.purge_user(user_id)
    pauses.release.set()
    with pytest.raises(Unauthenticated):  # the ready commit is guarded
        await task
    assert await keys_of(parts, user_id) == []

    crashed = uuid.uuid4()
    pauses = Pauses(monkeypatch, {1: "assets.upload.reservation_recorded"})
    task = pauses.start(
        1, lambda: parts.workflows.upload(crashed, images.png(40, 30), filename="b.png")
    )
    await pauses.all_reached()
    await record_tombstone(parts, crashed)
    await parts.workflows.purge_user(crashed)
    with workflow.crash_at("assets.upload.objects_written"):
        pauses.release.set()
        with pytest.raises(workflow.SimulatedCrash):
            await task
    assert len(await keys_of(parts, crashed)) == 2  # landed after the purge, no row
    await sweep_until_quiet(sweeper_at(parts, in_the_future))
    assert await keys_of(parts, crashed) == []
    assert await rows_of(parts, crashed) == []
    # Its reservation is billing's to drop: billing purges a deleted account's usage.


async def test_the_purge_finishes_though_billing_refuses_the_deleted_account(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    # Billing follows the same deletion and refuses the account from then on: the purge
    # must not depend on it (no credit, no release), or it would be retried forever.
    user_id = uuid.uuid4()
    await parts.workflows.upload(user_id, images.png(40, 30), filename="kept.png")
    deleted = await parts.workflows.upload(user_id, images.png(40, 30), filename="gone.png")
    with workflow.crash_at("assets.delete.recorded"), pytest.raises(workflow.SimulatedCrash):
        await parts.workflows.delete(user_id, [deleted.id])  # awaiting its purge
    with workflow.crash_at("assets.upload.objects_written"), pytest.raises(workflow.SimulatedCrash):
        await parts.workflows.upload(user_id, images.png(40, 30), filename="half.png")
    await record_tombstone(parts, user_id)
    quota.refusing = True

    assert await parts.workflows.purge_user(user_id) == 1

    assert await rows_of(parts, user_id) == []
    assert await keys_of(parts, user_id) == []


async def test_the_purges_folder_sweep_never_takes_the_object_of_a_ready_row(
    parts: AssetsComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PurgeUser called without a tombstone (an operator, a retry) while the user uploads:
    # the new asset is the user's live data, not a leftover, and keeps its bytes.
    user_id = uuid.uuid4()
    await parts.workflows.upload(user_id, images.png(40, 30), filename="old.png")
    pauses = Pauses(monkeypatch, {0: "assets.purge_user.rows_removed"})
    purge = pauses.start(0, lambda: parts.workflows.purge_user(user_id))
    await pauses.all_reached()
    fresh = await parts.workflows.upload(user_id, images.png(40, 30), filename="new.png")
    pauses.release.set()
    assert await purge == 1

    rows = await rows_of(parts, user_id)
    assert [r.id for r in rows] == [fresh.id]
    assert sorted(await keys_of(parts, user_id)) == sorted(fresh.object_keys)


async def test_user_deleted_event_refuses_the_token_and_purges_the_users_assets(
    settings: AssetsSettings,
    start_server: Any,
    identity: FakeIdentity,
    new_user: Any,
    components: AssetsComponents,
) -> None:
    server = await start_server(replace(settings, event_poll_seconds=0.05))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = assets_pb2_grpc.AssetServiceStub(channel)
        leaving, leaving_auth = new_user()
        _, staying_auth = new_user()
        await upload(stub, leaving_auth, images.png(64, 64), content_type="image/png")
        kept = await upload(stub, staying_auth, images.png(64, 64), content_type="image/png")

        identity.add_event("user.deleted", leaving)
        for _ in range(400):  # until the follower and the purge have run; no timing asserted
            if not await rows_of(components, leaving) and not await keys_of(components, leaving):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the deleted user's assets are still there")

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.ListAssets(assets_pb2.ListAssetsRequest(), metadata=leaving_auth)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await upload(stub, leaving_auth, images.png(8, 8), content_type="image/png")
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        still = await stub.GetAsset(
            assets_pb2.GetAssetRequest(asset_id=kept.id), metadata=staying_auth
        )
        assert still.asset.id == kept.id


async def test_a_ready_commit_racing_the_purge_is_purged_with_the_rest(
    parts: AssetsComponents,
) -> None:
    # Without a tombstone (PurgeUser called directly) a ready commit may be in flight
    # when the purge marks the user's rows: it must end deleted, not survive unseen.
    user_id = uuid.uuid4()
    data = images.png(40, 30)
    image = validate_image(data, ImageLimits(10 * 1024 * 1024, 10_000_000))
    async with parts.database.transaction() as session:
        pending = await parts.service.record_upload(
            session, user_id, image, filename="race.png", kind=AssetKind.UPLOAD, retry=None
        )
    assert pending is not None
    await parts.store.put(pending.storage_key, data, "image/png")
    go = asyncio.Event()

    async def purge_when_told() -> int:
        await go.wait()
        return await parts.workflows.purge_user(user_id)

    purge = asyncio.create_task(purge_when_told())  # its own context: no transaction open
    async with parts.database.transaction() as session:
        assert await parts.service.make_ready(session, pending, image) is not None
        go.set()
        for _ in range(600):  # until the purge waits for this row's lock
            async with parts.database.read() as probe:
                waiting = await probe.scalar(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                )
            if waiting:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the purge never reached the row")
    assert await purge == 1
    assert await rows_of(parts, user_id) == []
    assert await keys_of(parts, user_id) == []
