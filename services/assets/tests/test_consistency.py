"""No dangling rows, no lost objects: failures and crashes mid-upload, the sweeper, quota.

A ready row always has its objects; anything an upload leaves behind when it fails (or
when the process dies) is either undone right away or found and removed by the sweeper.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace

import grpc
import pytest
from PIL import ImageFile
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc
from sqlalchemy import select

from runtime.peers.billing import STORAGE_BYTES
from services.assets.imaging import ImageLimits, ValidatedImage, validate_image
from services.assets.models import AssetState, assets, object_key, owner_prefix
from services.assets.server import AssetsComponents, build
from services.assets.service import AssetService, credit_key, reservation_key
from services.assets.settings import AssetsSettings
from services.assets.storage import build_store, utc_now
from services.assets.sweeper import AssetSweeper, SweepReport
from services.assets.tests import images
from services.assets.tests.conftest import Metadata, StartServer
from services.assets.tests.fakes import (
    FailingStore,
    FixedTiers,
    FlakyDatabase,
    RecordingQuota,
    SimulatedCrash,
)
from services.assets.tests.test_upload import upload

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]
LATER = datetime.timedelta(hours=3)  # past every grace period and timeout


async def rows_of(components: AssetsComponents, owner_id: uuid.UUID) -> list[str]:
    """The states of the owner's rows (deleted ones included)."""
    async with components.database.transaction() as session:
        result = await session.execute(select(assets.c.state).where(assets.c.owner_id == owner_id))
        return [row[0] for row in result]


async def keys_of(components: AssetsComponents, owner_id: uuid.UUID) -> list[str]:
    return [o.key for o in await components.store.list_objects(owner_prefix(owner_id))]


def sweeper_at(
    components: AssetsComponents, moment: Callable[[], datetime.datetime]
) -> AssetSweeper:
    return AssetSweeper(
        service=components.service,
        database=components.database,
        store=components.store,
        settings=components.settings,
        clock=moment,
    )


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


def in_the_future() -> datetime.datetime:
    return utc_now() + LATER


@pytest.fixture
async def quota() -> RecordingQuota:
    return RecordingQuota()


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


async def test_a_crash_between_writing_and_ready_is_cleaned_up_by_the_sweeper(
    settings: AssetsSettings, components: AssetsComponents, quota: RecordingQuota
) -> None:
    # The process dies right after the original is stored: no handler cleans up.
    crashing = FailingStore(
        components.store, fail_after_writing="/original", failure=SimulatedCrash()
    )
    service = AssetService(
        database=components.database,
        store=crashing,
        quota=quota,
        tiers=FixedTiers(),
        settings=settings,
    )
    owner_id = uuid.uuid4()
    with pytest.raises(SimulatedCrash):
        await service.upload(owner_id, images.jpeg(320, 240), filename="a.jpg")

    assert await rows_of(components, owner_id) == [AssetState.PENDING]
    assert len(await keys_of(components, owner_id)) == 1

    # Too soon: an upload still in flight must be left alone.
    now_report = await sweeper_at(components, utc_now).sweep_once()
    assert await rows_of(components, owner_id) == [AssetState.PENDING]
    assert now_report.removed_orphans == 0

    swept = AssetSweeper(
        service=AssetService(
            database=components.database,
            store=components.store,
            quota=quota,
            tiers=FixedTiers(),
            settings=settings,
        ),
        database=components.database,
        store=components.store,
        settings=settings,
        clock=in_the_future,
    )
    report = await sweep_until_quiet(swept)

    assert report.abandoned_pending >= 1
    assert await rows_of(components, owner_id) == []
    assert await keys_of(components, owner_id) == []
    assert list(quota.released) == list(quota.reserved)


async def test_a_database_outage_between_writing_and_ready_is_cleaned_up_by_the_sweeper(
    settings: AssetsSettings, components: AssetsComponents, quota: RecordingQuota
) -> None:
    # Transaction 1 records the pending row; 2 (mark ready) and 3 (the undo) fail.
    service = AssetService(
        database=FlakyDatabase(components.database, failing={2, 3}),  # type: ignore[arg-type]
        store=components.store,
        quota=quota,
        tiers=FixedTiers(),
        settings=settings,
    )
    owner_id = uuid.uuid4()
    with pytest.raises(ConnectionError):
        await service.upload(owner_id, images.png(320, 240), filename="a.png")

    # Never ready; objects written but not yet removed.
    assert await rows_of(components, owner_id) == [AssetState.PENDING]
    assert len(await keys_of(components, owner_id)) == 2

    await sweep_until_quiet(sweeper_at(components, in_the_future))

    assert await rows_of(components, owner_id) == []
    assert await keys_of(components, owner_id) == []


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
        await sweep_until_quiet(sweeper_at(recorded, utc_now))
        await sweep_until_quiet(sweeper_at(recorded, utc_now))  # a second pass: no double credit
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
    assert STORAGE_BYTES  # the metric every call above used


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


def test_pillow_never_loads_truncated_images() -> None:
    # Importing the service must not have switched Pillow's lenient mode on.
    import services.assets.imaging  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


async def test_a_cancelled_upload_keeps_its_decode_slot_until_the_decode_ends(
    settings: AssetsSettings,
    components: AssetsComponents,
    quota: RecordingQuota,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that goes away cancels its RPC, but not the worker thread decoding its
    # image: if the slot were freed at once, clients could cancel their way past
    # DECODE_CONCURRENCY and have any number of full bitmaps decoding at the same time.
    started, finish = threading.Event(), threading.Event()

    def blocked_decode(data: bytes, limits: ImageLimits) -> ValidatedImage:
        started.set()
        finish.wait()
        return validate_image(data, limits)

    monkeypatch.setattr("services.assets.service.validate_image", blocked_decode)
    service = AssetService(
        database=components.database,
        store=components.store,
        quota=quota,
        tiers=FixedTiers(),
        settings=replace(settings, decode_concurrency=1),
    )
    upload_task = asyncio.create_task(
        service.upload(uuid.uuid4(), images.png(64, 64), filename="a.png")
    )
    assert await asyncio.to_thread(started.wait, 60)
    upload_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload_task

    try:
        # The thread still decodes: the only slot is still taken.
        assert service._decode_slots.locked()
    finally:
        finish.set()
    monkeypatch.undo()
    # Once it is done, the slot is free again for the next upload.
    stored = await service.upload(uuid.uuid4(), images.png(64, 64), filename="b.png")
    assert stored.state is AssetState.READY
    assert quota.reserved.keys() == {f"reservation:{reservation_key(stored.id)}"}
