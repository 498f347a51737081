"""StoreAsset's two aids for a caller that must never lose a paid result (projects'
ApplyEdit, ADR 0012): FindStoredAsset answers what was stored under a key, and a storage
reservation the caller made is committed instead of reserving anew (the surplus over the
stored bytes credited back, also when the sweeper finishes the settling)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from runtime.clock import utc_now
from runtime.workflow import SimulatedCrash, crash_at
from services.assets.models import AssetKind, IdempotencyScope
from services.assets.server import AssetsComponents, build
from services.assets.service import RetryKey
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.conftest import Metadata
from services.assets.tests.fakes import FixedTiers, RecordingQuota
from services.assets.tests.test_internal_api import store_requests
from services.assets.tests.test_upload import field_violation
from services.assets.workflows import (
    AssetSweeper,
    HandedReservation,
    reservation_key,
    surplus_key,
)

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]
LATER = datetime.timedelta(hours=3)


@pytest.fixture
def quota() -> RecordingQuota:
    return RecordingQuota()


@pytest.fixture
async def parts(settings: AssetsSettings, quota: RecordingQuota) -> AsyncIterator[AssetsComponents]:
    built = build(settings, quota=quota, tiers=FixedTiers())
    yield built
    await built.close()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_find_stored_asset_answers_what_store_asset_stored_under_the_key(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, _ = new_user()
    key = f"edit:{uuid.uuid4()}"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.FindStoredAsset(
            assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id), idempotency_key=key),
            metadata=service_credential,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    stored = await internal.StoreAsset(
        store_requests(owner_id, images.jpeg(120, 80), idempotency_key=key),
        metadata=service_credential,
    )
    found = await internal.FindStoredAsset(
        assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id), idempotency_key=key),
        metadata=service_credential,
    )
    assert found.asset == stored.asset
    assert found.asset.state == assets_pb2.ASSET_STATE_READY
    # The key is the owner's: another user finds nothing under it.
    other_id, _ = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.FindStoredAsset(
            assets_pb2.FindStoredAssetRequest(owner_id=str(other_id), idempotency_key=key),
            metadata=service_credential,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_find_stored_asset_validates_and_needs_the_service_credential(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, user_token = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.FindStoredAsset(
            assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id)),
            metadata=service_credential,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "idempotency_key"
    for metadata in ((), user_token, (("x-pixelshop-service-token", "forged"),)):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await internal.FindStoredAsset(
                assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id), idempotency_key="k"),
                metadata=metadata,
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_store_asset_refuses_reserved_bytes_without_a_reservation(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, _ = new_user()
    messages = list(store_requests(owner_id, images.jpeg(32, 32)))
    messages[0].header.reserved_bytes = 10_000
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(iter(messages), metadata=service_credential)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "header.reserved_bytes"
    messages[0].header.reservation_id = "reservation:edit:1:storage"
    messages[0].header.reserved_bytes = 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(iter(messages), metadata=service_credential)
    assert field_violation(raised.value) == "header.reserved_bytes"


async def test_a_handed_reservation_is_committed_instead_of_reserving_anew(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    owner_id = uuid.uuid4()
    data = images.png(96, 64)
    handed = HandedReservation("reservation:edit:42:storage", len(data) * 2)
    asset = await parts.workflows.upload_stream(
        owner_id,
        _chunks(data),
        filename="edit.png",
        kind=AssetKind.EDIT_RESULT,
        retry=RetryKey(IdempotencyScope.STORE, "edit:42"),
        handed=handed,
    )
    assert quota.reserved == {}  # nothing reserved anew: no room to lose in between
    assert quota.committed == [handed.reservation_id]
    assert quota.credited == [(owner_id, handed.reserved_bytes - len(data), surplus_key(asset.id))]


async def test_a_handed_reservation_too_small_for_the_bytes_is_not_used(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    owner_id = uuid.uuid4()
    data = images.png(96, 64)
    handed = HandedReservation("reservation:edit:43:storage", len(data) - 1)
    asset = await parts.workflows.upload_stream(
        owner_id, _chunks(data), filename="edit.png", kind=AssetKind.EDIT_RESULT, handed=handed
    )
    own = f"reservation:{reservation_key(asset.id)}"
    assert quota.reserved == {own: len(data)}
    assert quota.committed == [own]
    assert quota.credited == []


async def test_a_crash_before_a_handed_reservation_is_committed_is_settled_with_its_surplus(
    parts: AssetsComponents, quota: RecordingQuota
) -> None:
    owner_id = uuid.uuid4()
    data = images.png(96, 64)
    handed = HandedReservation("reservation:edit:44:storage", len(data) + 1000)
    with crash_at("assets.upload.ready"), pytest.raises(SimulatedCrash):
        await parts.workflows.upload_stream(
            owner_id, _chunks(data), filename="e.png", kind=AssetKind.EDIT_RESULT, handed=handed
        )
    assert quota.committed == []
    sweeper = AssetSweeper(
        workflows=parts.workflows, settings=parts.settings, clock=lambda: utc_now() + LATER
    )
    for _ in range(5):
        await sweeper.sweep_once()
    # (The sweeper also finishes other tests' leftovers: only this owner's calls count.)
    assert quota.committed.count(handed.reservation_id) == 1
    assert [
        (amount, key.split(":")[0]) for who, amount, key in quota.credited if who == owner_id
    ] == [(1000, "asset-surplus")]
    assert handed.reservation_id not in quota.released
