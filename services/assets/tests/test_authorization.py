"""Only the owner (and services acting for the owner) reach an asset.

Another user's asset answers NOT_FOUND exactly like a missing one, on every RPC; a
deleted asset too. Internal RPCs need the service credential.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from services.assets.tests import images
from services.assets.tests.conftest import Metadata
from services.assets.tests.test_upload import upload
from tests.support.fake_identity import FakeIdentity

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


@pytest.fixture
async def owned(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> tuple[uuid.UUID, assets_pb2.Asset]:
    owner_id, auth = new_user()
    return owner_id, await upload(assets, auth, images.jpeg(64, 64))


@pytest.fixture
def stranger(new_user: NewUser) -> Metadata:
    return new_user()[1]


async def assert_not_found(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert (raised.value.details() or "").endswith(" not found")


async def test_get_asset_of_another_user_is_not_found(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
) -> None:
    _, asset = owned
    await assert_not_found(
        assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id), metadata=stranger)
    )


async def test_get_asset_content_of_another_user_is_not_found(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
) -> None:
    _, asset = owned
    for variant in ("", "thumbnail"):
        await assert_not_found(
            assets.GetAssetContent(
                assets_pb2.GetAssetContentRequest(asset_id=asset.id, variant=variant),
                metadata=stranger,
            )
        )


async def test_delete_asset_of_another_user_is_not_found_and_deletes_nothing(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
    identity: FakeIdentity,
) -> None:
    owner_id, asset = owned
    await assert_not_found(
        assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=stranger)
    )
    owner = (("authorization", f"Bearer {identity.issue_token(owner_id)}"),)
    still = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id), metadata=owner)
    assert still.asset.id == asset.id


async def test_get_download_url_of_another_user_is_not_found(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
) -> None:
    _, asset = owned
    await assert_not_found(
        assets.GetDownloadUrl(
            assets_pb2.GetDownloadUrlRequest(asset_id=asset.id), metadata=stranger
        )
    )


async def test_confirm_upload_of_another_user_is_not_found(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
) -> None:
    _, asset = owned
    await assert_not_found(
        assets.ConfirmUpload(assets_pb2.ConfirmUploadRequest(asset_id=asset.id), metadata=stranger)
    )


async def test_list_assets_never_shows_another_users_assets(
    assets: assets_pb2_grpc.AssetServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    stranger: Metadata,
) -> None:
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=stranger)
    assert list(listed.assets) == []


async def test_get_asset_for_owner_with_another_owner_is_not_found(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    service_credential: Metadata,
) -> None:
    _, asset = owned
    await assert_not_found(
        internal.GetAssetForOwner(
            assets_pb2.GetAssetForOwnerRequest(asset_id=asset.id, owner_id=str(uuid.uuid4())),
            metadata=service_credential,
        )
    )


async def test_read_asset_with_another_owner_is_not_found(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    service_credential: Metadata,
) -> None:
    _, asset = owned
    call = internal.ReadAsset(
        assets_pb2.ReadAssetRequest(asset_id=asset.id, owner_id=str(uuid.uuid4())),
        metadata=service_credential,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_delete_assets_with_another_owner_deletes_nothing(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    service_credential: Metadata,
) -> None:
    owner_id, asset = owned
    response = await internal.DeleteAssets(
        assets_pb2.DeleteAssetsRequest(owner_id=str(uuid.uuid4()), asset_ids=[asset.id]),
        metadata=service_credential,
    )
    assert response.deleted_count == 0
    kept = await internal.GetAssetForOwner(
        assets_pb2.GetAssetForOwnerRequest(asset_id=asset.id, owner_id=str(owner_id)),
        metadata=service_credential,
    )
    assert kept.asset.id == asset.id


async def test_a_deleted_asset_is_not_found_everywhere(
    assets: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, auth = new_user()
    asset = await upload(assets, auth, images.jpeg(64, 64))
    await assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=auth)

    await assert_not_found(
        assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id), metadata=auth)
    )
    await assert_not_found(
        assets.GetAssetContent(assets_pb2.GetAssetContentRequest(asset_id=asset.id), metadata=auth)
    )
    await assert_not_found(
        assets.GetDownloadUrl(assets_pb2.GetDownloadUrlRequest(asset_id=asset.id), metadata=auth)
    )
    await assert_not_found(
        assets.ConfirmUpload(assets_pb2.ConfirmUploadRequest(asset_id=asset.id), metadata=auth)
    )
    await assert_not_found(
        internal.GetAssetForOwner(
            assets_pb2.GetAssetForOwnerRequest(asset_id=asset.id, owner_id=str(owner_id)),
            metadata=service_credential,
        )
    )
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert list(listed.assets) == []


async def test_public_rpcs_need_an_access_token(
    assets: assets_pb2_grpc.AssetServiceStub, owned: tuple[uuid.UUID, assets_pb2.Asset]
) -> None:
    _, asset = owned
    for call in (
        assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id)),
        assets.ListAssets(assets_pb2.ListAssetsRequest()),
        assets.GetAsset(
            assets_pb2.GetAssetRequest(asset_id=asset.id),
            metadata=(("authorization", "Bearer not-a-token"),),
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_internal_rpcs_refuse_callers_without_the_service_credential(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    owned: tuple[uuid.UUID, assets_pb2.Asset],
    new_user: NewUser,
) -> None:
    owner_id, asset = owned
    _, user_token = new_user()
    forged = (("x-pixelshop-service-token", "forged"),)
    for metadata in ((), user_token, forged):
        calls = [
            internal.GetAssetForOwner(
                assets_pb2.GetAssetForOwnerRequest(asset_id=asset.id, owner_id=str(owner_id)),
                metadata=metadata,
            ),
            internal.DeleteAssets(
                assets_pb2.DeleteAssetsRequest(owner_id=str(owner_id), asset_ids=[asset.id]),
                metadata=metadata,
            ),
            internal.PurgeUser(
                assets_pb2.PurgeUserRequest(user_id=str(owner_id)), metadata=metadata
            ),
            internal.StoreAsset(
                iter([assets_pb2.StoreAssetRequest(chunk=images.jpeg(16, 16))]), metadata=metadata
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        stream = internal.ReadAsset(
            assets_pb2.ReadAssetRequest(asset_id=asset.id, owner_id=str(owner_id)),
            metadata=metadata,
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream:
                pass
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
