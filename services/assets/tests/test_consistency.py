"""No dangling rows, no lost objects, quota that adds up: failures, crashes at every step of
every workflow (ADR 0011), and the sweeper that ends each of them consistent.

A ready row always has its objects; an object always has a row once the sweeper has run;
every storage reservation is committed (the asset is ready) or released (it is not),
never both; every deleted asset is credited back exactly once.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc
from sqlalchemy import select, text

from runtime.clock import utc_now
from runtime.peers.billing import Metric
from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.assets.models import (
    INCOMING,
    Asset,
    AssetKind,
    AssetState,
    IdempotencyScope,
    assets,
    object_key,
    owner_prefix,
)
from services.assets.repository import AssetRepository
from services.assets.server import AssetsComponents, build
from services.assets.service import RetryKey
from services.assets.settings import AssetsSettings
from services.assets.storage import ObjectStore, build_store
from services.assets.tests import images
from services.assets.tests.conftest import Metadata, StartServer
from services.assets.tests.fakes import FailingStore, FixedTiers, RecordingQuota
from services.assets.tests.test_upload import upload
from services.assets.workflows import (
    AssetSweeper,
    SweepReport,
    credit_key,
    reservation_key,
)

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]
LATER = datetime.timedelta(hours=3)  # past every grace period, timeout and lease


async def rows_of(components: AssetsComponents, owner_id: uuid.UUID) -> list[Asset]:
    """Every row of the owner (deleted and purged ones included)."""
    async with components.database.transaction() as session:
        ids = await session.scalars(select(assets.c.id).where(assets.c.owner_id == owner_id))
        repository = AssetRepository(session)
        found = [await repository.get(asset_id) for asset_id in ids]
    return [asset for asset in found if asset is not None]


async def states_of(components: AssetsComponents, owner_id: uuid.UUID) -> list[AssetState]:
    return [asset.state for asset in await rows_of(components, owner_id)]


async def keys_of(components: AssetsComponents, owner_id: uuid.UUID) -> list[str]:
    return [o.key for o in await components.store.list_objects(owner_prefix(owner_id))]


def in_the_future() -> datetime.datetime:
    return utc_now() + LATER


def sweeper_at(
    components: AssetsComponents, moment: Callable[[], datetime.datetime]
) -> AssetSweeper:
    return AssetSweeper(workflows=components.workflows, settings=components.settings, clock=moment)


async def sweep_until_quiet(sweeper: AssetSweeper) -> SweepReport:
    """Sweeps until a pass finds nothing (other tests' leftovers may come first)."""
    total = SweepReport()
    for _ in range(50):
        report = await sweeper.sweep_once()
        if report == SweepReport():
            return total
        total = SweepReport(
            *(a + b for a, b in zip(vars(total).values(), vars(report).values(), strict=True))
        )
    raise AssertionError("the sweeper never settled")


async def assert_consistent(
    components: AssetsComponents, quota: RecordingQuota, owner_id: uuid.UUID
) -> list[Asset]:
    """What every interrupted run must end as once the sweeper (or a retry) is done."""
    rows = await rows_of(components, owner_id)
    stored = set(await keys_of(components, owner_id))
    assert [r.id for r in rows if r.state is AssetState.PENDING] == []
    live = [r for r in rows if r.purged_at is None]
    for asset in live:  # no ready row without its objects
        assert set(asset.object_keys) <= stored, f"{asset.id} lost an object"
        assert len(asset.object_keys) == 2  # the original and its thumbnail
    # No object without a row.
    assert stored <= {key for asset in live for key in asset.object_keys}
    # Every reservation ended one way, never both.
    assert quota.unsettled() == set()
    assert quota.settled_both_ways() == set()
    for asset in rows:  # a ready asset's storage is counted; a deleted one's given back
        assert f"reservation:{reservation_key(asset.id)}" in quota.committed
        assert asset.reservation_id is None
    credits = [key for (_, _, key) in quota.credited]
    assert len(credits) == len(set(credits))
    for asset in rows:
        assert (credit_key(asset.id) in credits) == (asset.deleted_at is not None)
    return rows


@pytest.fixture
def quota() -> RecordingQuota:
    return RecordingQuota()


@pytest.fixture
async def parts(settings: AssetsSettings, quota: RecordingQuota) -> AsyncIterator[AssetsComponents]:
    """The service's parts with a recording quota and every user on the Free plan."""
    built = build(settings, quota=quota, tiers=FixedTiers())
    yield built
    await built.close()


async def crash_each_step(
    run: Callable[[], Awaitable[object]],
    expected: list[str],
    after_crash: Callable[[], Awaitable[None]],
    prepare: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Records the checkpoints one run passes (those of the workflows `expected` names),
    then crashes a fresh run at each one (`prepare` runs before each, unrecorded)."""
    workflows = {step.rpartition(".")[0] for step in expected}
    if prepare:
        await prepare()
    with record_checkpoints() as passed:
        await run()
    steps = [step for step in passed if step.rpartition(".")[0] in workflows]
    assert steps == expected
    for step in steps:
        if prepare:
            await prepare()
        with crash_at(step) as passed, pytest.raises(SimulatedCrash):
            await run()
        assert passed[-1] == step
        await after_crash()


UPLOAD_STEPS = [
    "assets.upload.pending_recorded",
    "assets.upload.reserved",
    "assets.upload.reservation_recorded",
    "assets.upload.original_written",
    "assets.upload.objects_written",
    "assets.upload.ready",
    "assets.upload.reservation_committed",
]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


@pytest.mark.parametrize("entry", ["http-body", "store-asset-stream"])
async def test_an_upload_crashed_at_any_step_is_finished_or_undone_by_the_sweeper(
    parts: AssetsComponents, quota: RecordingQuota, entry: str
) -> None:
    # Both ways in: UploadAsset's HttpBody and StoreAsset's client stream.
    owners: list[uuid.UUID] = []

    async def run() -> None:
        owners.append(uuid.uuid4())
        data = images.png(96, 64)
        if entry == "http-body":
            await parts.workflows.upload(owners[-1], data, filename="a.png")
        else:
            await parts.workflows.upload_stream(
                owners[-1], _chunks(data), filename="a.png", kind=AssetKind.EDIT_RESULT
            )

    async def after_crash() -> None:
        # Too soon: an upload still in flight must be left alone.
        await sweep_until_quiet(sweeper_at(parts, utc_now))
        assert await rows_of(parts, owners[-1])
        await sweep_until_quiet(sweeper_at(parts, in_the_future))
        rows = await assert_consistent(parts, quota, owners[-1])
        # Before the row was ready it is undone; from then on it is kept and settled.
        assert len(rows) == (
            1 if len(owners) - 1 > UPLOAD_STEPS.index("assets.upload.ready") else 0
        )

    await crash_each_step(run, UPLOAD_STEPS, after_crash)


async def test_an_upload_crashed_at_any_step_is_finished_by_a_retry_with_its_key(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    # The key makes a retry resume the recorded upload: every step is idempotent.
    owner_id = uuid.uuid4()
    data = images.png(80, 60)
    keys = iter(range(100))
    key = ""

    async def run() -> None:
        nonlocal key
        key = f"retry-{next(keys)}"
        await parts.workflows.upload(
            owner_id, data, filename="a.png", retry=RetryKey(IdempotencyScope.UPLOAD, key)
        )

    async def after_crash() -> None:
        retried = await parts.workflows.upload(
            owner_id, data, filename="a.png", retry=RetryKey(IdempotencyScope.UPLOAD, key)
        )
        assert retried.state is AssetState.READY
        await sweep_until_quiet(sweeper_at(parts, in_the_future))

    await crash_each_step(run, UPLOAD_STEPS, after_crash)
    rows = await assert_consistent(parts, quota, owner_id)
    # One asset per key: the first run and one per crashed step, each retried once.
    assert len(rows) == len(UPLOAD_STEPS) + 1
    assert len({r.idempotency_key for r in rows}) == len(rows)


DELETE_STEPS = [
    "assets.delete.recorded",
    "assets.purge.objects_removed",
    "assets.purge.credited",
    "assets.purge.recorded",
]


async def test_an_asset_delete_crashed_at_any_step_is_finished_by_the_sweeper(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    owner_id = uuid.uuid4()
    doomed: list[Asset] = []

    async def run() -> None:
        doomed.append(await parts.workflows.upload(owner_id, images.jpeg(64, 48), filename="a"))
        assert await parts.workflows.delete(owner_id, [doomed[-1].id]) == 1

    async def after_crash() -> None:
        # Within the request's lease nobody else touches it; after it, the sweeper does.
        await sweep_until_quiet(sweeper_at(parts, utc_now))
        await sweep_until_quiet(sweeper_at(parts, in_the_future))
        rows = await assert_consistent(parts, quota, owner_id)
        assert all(r.purged_at is not None for r in rows)

    await crash_each_step(run, DELETE_STEPS, after_crash)
    assert await keys_of(parts, owner_id) == []


async def test_a_user_purge_crashed_at_any_step_is_finished_by_its_retry(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    # The follower retries a purge until it succeeds (runtime.tombstones.purge_pending).
    owners: list[uuid.UUID] = []

    async def prepare() -> None:
        # A ready asset, a deleted one whose purge failed, and a crashed upload.
        owners.append(uuid.uuid4())
        owner_id = owners[-1]
        await parts.workflows.upload(owner_id, images.png(40, 30), filename="a.png")
        deleted = await parts.workflows.upload(owner_id, images.png(40, 30), filename="b.png")
        with crash_at("assets.delete.recorded"), pytest.raises(SimulatedCrash):
            await parts.workflows.delete(owner_id, [deleted.id])
        with crash_at("assets.upload.objects_written"), pytest.raises(SimulatedCrash):
            await parts.workflows.upload(owner_id, images.png(40, 30), filename="c.png")

    async def run() -> None:
        assert await parts.workflows.purge_user(owners[-1]) == 1

    async def after_crash() -> None:
        billing_calls = len(quota.metrics), len(quota.committed), len(quota.released)
        assert await parts.workflows.purge_user(owners[-1]) in (0, 1)
        assert await rows_of(parts, owners[-1]) == []
        assert await keys_of(parts, owners[-1]) == []
        # Billing purges a deleted account's usage itself: the purge never asks it.
        assert (len(quota.metrics), len(quota.committed), len(quota.released)) == billing_calls
        assert quota.settled_both_ways() == set()

    await crash_each_step(
        run,
        [
            "assets.purge_user.marked",
            # The two deleted assets (one the purge deleted), in one batch; a crash at a
            # repeated step happens at its first pass.
            "assets.purge.objects_removed",
            "assets.purge.objects_removed",
            "assets.purge.recorded",
            "assets.abandon.objects_removed",
            "assets.purge_user.rows_removed",
        ],
        after_crash,
        prepare,
    )


async def test_a_direct_upload_crashed_at_any_step_is_undone_by_the_sweeper(
    s3_settings: AssetsSettings, quota: RecordingQuota
) -> None:
    parts = build(s3_settings, quota=quota, tiers=FixedTiers())
    owners: list[uuid.UUID] = []
    try:

        async def run() -> None:
            owners.append(uuid.uuid4())
            await parts.workflows.create_upload_url(
                owners[-1], filename="d.jpg", content_type="image/jpeg", size_bytes=1000
            )

        async def after_crash() -> None:
            # A client may still PUT to the URL until the sweeper abandons the row.
            await parts.store.put(
                object_key(owners[-1], (await rows_of(parts, owners[-1]))[0].id, INCOMING),
                b"x" * 1000,
                "image/jpeg",
            )
            await sweep_until_quiet(sweeper_at(parts, in_the_future))
            assert await assert_consistent(parts, quota, owners[-1]) == []

        await crash_each_step(
            run,
            [
                "assets.direct.pending_recorded",
                "assets.direct.reserved",
                "assets.direct.reservation_recorded",
            ],
            after_crash,
        )
    finally:
        await parts.close()


async def test_a_direct_upload_confirmation_crashed_at_any_step_ends_consistent(
    s3_settings: AssetsSettings, quota: RecordingQuota
) -> None:
    parts = build(s3_settings, quota=quota, tiers=FixedTiers())
    owner_id = uuid.uuid4()
    data = images.jpeg(120, 90)
    created: list[uuid.UUID] = []
    try:

        async def run() -> None:
            direct = await parts.workflows.create_upload_url(
                owner_id, filename="d.jpg", content_type="image/jpeg", size_bytes=len(data)
            )
            created.append(direct.asset_id)
            await parts.store.put(
                object_key(owner_id, direct.asset_id, INCOMING), data, "image/jpeg"
            )
            await parts.workflows.confirm_upload(owner_id, direct.asset_id)

        async def after_crash() -> None:
            # The client retries the confirmation: it finishes (or answers the ready asset).
            confirmed = await parts.workflows.confirm_upload(owner_id, created[-1])
            assert confirmed.state is AssetState.READY
            assert await parts.store.get(confirmed.storage_key) == data
            await sweep_until_quiet(sweeper_at(parts, in_the_future))
            await assert_consistent(parts, quota, owner_id)

        with record_checkpoints() as steps:
            await run()
        confirm_steps = [s for s in steps if s.startswith("assets.confirm.")]
        assert confirm_steps == [
            "assets.confirm.validated",
            "assets.confirm.original_written",
            "assets.confirm.objects_written",
            "assets.confirm.ready",
            "assets.confirm.incoming_removed",
            "assets.confirm.reservation_committed",
        ]
        for step in confirm_steps:
            with crash_at(step), pytest.raises(SimulatedCrash):
                await run()
            await after_crash()
        rows = await assert_consistent(parts, quota, owner_id)
        assert len(rows) == len(confirm_steps) + 1
    finally:
        await parts.close()


async def test_an_abandoned_upload_whose_sweep_crashed_is_taken_over_after_the_lease(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    # The sweeper's own steps are workflow steps too: one that dies mid-way leaves a
    # claimed row, which the next sweeper takes over once the claim's lease has run out.
    async def crashed_upload() -> uuid.UUID:
        owner_id = uuid.uuid4()
        with crash_at("assets.upload.objects_written"), pytest.raises(SimulatedCrash):
            await parts.workflows.upload(owner_id, images.png(64, 64), filename="a.png")
        return owner_id

    owner_id = await crashed_upload()
    with record_checkpoints() as steps:
        await sweep_until_quiet(sweeper_at(parts, in_the_future))
    sweep_steps = [s for s in steps if s.startswith(("assets.sweep.", "assets.abandon."))]
    assert sweep_steps[:2] == ["assets.sweep.pending_claimed", "assets.abandon.objects_removed"]
    await assert_consistent(parts, quota, owner_id)

    for step in ("assets.sweep.pending_claimed", "assets.abandon.objects_removed"):
        owner_id = await crashed_upload()
        with crash_at(step), pytest.raises(SimulatedCrash):
            await sweep_until_quiet(sweeper_at(parts, in_the_future))
        assert await states_of(parts, owner_id) == [AssetState.PENDING]  # claimed, not gone
        # Within the dead sweeper's lease nobody takes it; after it, the next one does.
        await sweep_until_quiet(sweeper_at(parts, in_the_future))
        assert await states_of(parts, owner_id) == [AssetState.PENDING]
        await sweep_until_quiet(sweeper_at(parts, lambda: in_the_future() + LATER))
        await assert_consistent(parts, quota, owner_id)


class GatedStore:
    """Delegates to a store; `delete` waits at a gate, so a test can look around while a
    sweeper is in the middle of an object-store call."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.deleting = asyncio.Event()
        self.gate = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def delete(self, key: str) -> None:
        self.deleting.set()
        await self.gate.wait()
        await self._store.delete(key)


async def test_a_sweeper_holds_no_row_lock_and_no_connection_across_an_object_delete(
    settings: AssetsSettings, parts: AssetsComponents, quota: RecordingQuota
) -> None:
    owner_id = uuid.uuid4()
    asset = await parts.workflows.upload(owner_id, images.jpeg(64, 64), filename="a.jpg")
    async with parts.database.transaction() as session:  # deleted long ago, never purged
        await session.execute(
            text("UPDATE assets.assets SET deleted_at = now() - interval '1 day' WHERE id = :id"),
            {"id": asset.id},
        )
    gated = GatedStore(build_store(settings))
    sweeping = build(settings, store=gated, quota=quota, tiers=FixedTiers())  # type: ignore[arg-type]
    try:
        task = asyncio.create_task(sweeper_at(sweeping, utc_now).sweep_once())
        await asyncio.wait_for(gated.deleting.wait(), 60)
        # Mid-delete: no pooled connection is checked out, and the row is not locked.
        assert sweeping.database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with parts.database.transaction() as session:
            locked = await session.scalar(
                text("SELECT id FROM assets.assets WHERE id = :id FOR UPDATE NOWAIT"),
                {"id": asset.id},
            )
        assert locked == asset.id
        gated.gate.set()
        report = await task
    finally:
        gated.gate.set()
        await sweeping.close()
    assert report.purged_deleted >= 1
    await assert_consistent(parts, quota, owner_id)


async def serve_with(
    start_server: StartServer, settings: AssetsSettings, **options: object
) -> assets_pb2_grpc.AssetServiceStub:
    server = await start_server(settings, **options)
    return assets_pb2_grpc.AssetServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))


async def test_an_upload_whose_storage_fails_halfway_leaves_nothing_behind(
    settings: AssetsSettings,
    start_server: StartServer,
    components: AssetsComponents,
    quota: RecordingQuota,
    new_user: NewUser,
) -> None:
    # The original is written, then the thumbnail write fails after writing.
    store = FailingStore(build_store(settings), fail_after_writing="/thumbnail")
    stub = await serve_with(start_server, settings, store=store, quota=quota)
    owner_id, auth = new_user()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stub, auth, images.jpeg(640, 480))

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "object storage is unavailable, try again"
    assert await rows_of(components, owner_id) == []
    assert await keys_of(components, owner_id) == []
    assert list(quota.released) == list(quota.reserved)
    assert quota.committed == []


async def test_objects_without_a_row_are_removed_once_old_enough(
    components: AssetsComponents, assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    owner_id, auth = new_user()
    kept = await upload(assets, auth, images.jpeg(64, 64))
    orphan = object_key(owner_id, uuid.uuid4(), "original")
    await components.store.put(orphan, b"left by a crash", "image/jpeg")
    # A key that no upload makes at all is an orphan too.
    await components.store.put(f"{owner_prefix(owner_id)}stray", b"?", "text/plain")

    await sweep_until_quiet(sweeper_at(components, utc_now))
    assert orphan in await keys_of(components, owner_id)  # within the grace period

    report = await sweep_until_quiet(sweeper_at(components, in_the_future))

    assert report.removed_orphans >= 2
    assert sorted(await keys_of(components, owner_id)) == [
        object_key(owner_id, uuid.UUID(kept.id), "original"),
        object_key(owner_id, uuid.UUID(kept.id), "thumbnail"),
    ]
    body = await assets.GetAssetContent(
        assets_pb2.GetAssetContentRequest(asset_id=kept.id), metadata=auth
    )
    assert body.data


async def test_a_deleted_asset_whose_objects_could_not_be_removed_is_purged_later(
    settings: AssetsSettings,
    start_server: StartServer,
    components: AssetsComponents,
    quota: RecordingQuota,
    new_user: NewUser,
) -> None:
    store = FailingStore(build_store(settings))
    stub = await serve_with(start_server, settings, store=store, quota=quota)
    owner_id, auth = new_user()
    asset = await upload(stub, auth, images.jpeg(64, 64))
    store.fail_deletes = True

    await stub.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=auth)

    assert len(await keys_of(components, owner_id)) == 2  # still there, row says why
    assert quota.credited == []

    recorded = build(settings, quota=quota)
    try:
        # Within the request's lease the sweeper leaves it; after it, it purges once.
        await sweep_until_quiet(sweeper_at(recorded, utc_now))
        assert len(await keys_of(components, owner_id)) == 2
        await sweep_until_quiet(sweeper_at(recorded, in_the_future))
        await sweep_until_quiet(sweeper_at(recorded, in_the_future))  # no double credit
    finally:
        await recorded.close()

    assert await keys_of(components, owner_id) == []
    asset_id = uuid.UUID(asset.id)
    assert quota.credited == [(owner_id, asset.size_bytes, credit_key(asset_id))]


async def test_storage_is_reserved_before_the_object_and_committed_after(
    settings: AssetsSettings,
    start_server: StartServer,
    components: AssetsComponents,
    quota: RecordingQuota,
    new_user: NewUser,
) -> None:
    stub = await serve_with(start_server, settings, quota=quota)
    owner_id, auth = new_user()
    data = images.jpeg(200, 100)

    asset = await upload(stub, auth, data)

    reservation = f"reservation:{reservation_key(uuid.UUID(asset.id))}"
    assert quota.reserved == {reservation: len(data)}
    assert quota.committed == [reservation]
    assert quota.released == []
    async with components.database.transaction() as session:
        settled = await session.scalar(
            select(assets.c.reservation_id).where(assets.c.id == uuid.UUID(asset.id))
        )
    assert settled is None

    await stub.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=auth)
    assert quota.credited == [(owner_id, len(data), credit_key(uuid.UUID(asset.id)))]
    # Asked in the domain's own terms (runtime.peers.billing.Metric), not protobuf numbers.
    assert quota.metrics == [Metric.STORAGE_BYTES, Metric.STORAGE_BYTES]
    assert all(type(metric) is Metric for metric in quota.metrics)


async def test_an_upload_over_the_storage_quota_stores_nothing(
    settings: AssetsSettings,
    start_server: StartServer,
    components: AssetsComponents,
    new_user: NewUser,
) -> None:
    stub = await serve_with(start_server, settings, quota=RecordingQuota(deny=True))
    owner_id, auth = new_user()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(stub, auth, images.jpeg(64, 64))

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await rows_of(components, owner_id) == []
    assert await keys_of(components, owner_id) == []


async def test_a_reservation_commit_that_failed_is_retried_by_the_sweeper(
    settings: AssetsSettings,
    start_server: StartServer,
    quota: RecordingQuota,
    new_user: NewUser,
) -> None:
    quota.failing_commits = 1
    stub = await serve_with(start_server, settings, quota=quota)
    _, auth = new_user()

    asset = await upload(stub, auth, images.jpeg(64, 64))  # the asset is fine regardless

    assert asset.state == assets_pb2.ASSET_STATE_READY
    assert quota.committed == []
    recorded = build(settings, quota=quota)
    try:
        # Not yet: the request itself might still be committing.
        await sweep_until_quiet(sweeper_at(recorded, utc_now))
        assert quota.committed == []
        await sweep_until_quiet(sweeper_at(recorded, in_the_future))
    finally:
        await recorded.close()
    assert quota.committed == [f"reservation:{reservation_key(uuid.UUID(asset.id))}"]


async def test_two_sweepers_at_once_abandon_each_stuck_upload_once(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    # Replicas sweep at the same time: a claim (SKIP LOCKED, then a lease) keeps them off
    # each other's rows, so every reservation is released exactly once.
    owner_id = uuid.uuid4()
    for n in range(8):
        with crash_at("assets.upload.objects_written"), pytest.raises(SimulatedCrash):
            await parts.workflows.upload(owner_id, images.png(40 + n, 30), filename="a.png")
    assert len(quota.reserved) == 8

    first, second = sweeper_at(parts, in_the_future), sweeper_at(parts, in_the_future)
    await asyncio.gather(first.sweep_once(), second.sweep_once())

    assert await rows_of(parts, owner_id) == []
    assert await keys_of(parts, owner_id) == []
    assert sorted(quota.released) == sorted(quota.reserved)  # each once, none twice


class ThreadedSlowWrites:
    """A directory store whose writes happen wholly in a worker thread that waits at a
    gate first, like a slow disk or S3 PUT: cancelling the caller cannot stop it."""

    def __init__(self, store: ObjectStore, root: Path) -> None:
        self._store = store
        self._root = root
        self.started = threading.Event()
        self.gate = threading.Event()
        self.written = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        def write() -> None:
            self.started.set()
            self.gate.wait(60)
            path = self._root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.written.set()

        await asyncio.to_thread(write)


async def test_a_cancelled_upload_cleans_up_after_its_write_has_landed(
    directory_settings: AssetsSettings, quota: RecordingQuota
) -> None:
    # The client goes away during the object write: the clean-up must not run before the
    # write it cannot stop, or the object lands afterwards with no row.
    root = Path(directory_settings.storage_dir)
    slow = ThreadedSlowWrites(build_store(directory_settings), root)
    parts = build(directory_settings, store=slow, quota=quota, tiers=FixedTiers())  # type: ignore[arg-type]
    try:
        owner_id = uuid.uuid4()
        task = asyncio.create_task(
            parts.workflows.upload(owner_id, images.png(40, 30), filename="a.png")
        )
        assert await asyncio.to_thread(slow.started.wait, 60)
        task.cancel()
        # Give a clean-up that would not wait for the write the chance to run first (the
        # right one waits however long this is; nothing here is timed).
        for _ in range(200):
            if task.done():
                break
            await asyncio.sleep(0.01)
        slow.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(slow.written.wait, 60)
        assert await rows_of(parts, owner_id) == []
        assert await keys_of(parts, owner_id) == []
        assert quota.unsettled() == set()
    finally:
        slow.gate.set()
        await parts.close()
