"""A deleted account's images go: identity's `user.deleted` event reaches assets."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from services.assets.settings import AssetsSettings
from services.assets.tests.test_upload import upload
from tests.support.fake_identity import FakeIdentity
from tests.support.images import image_bytes


async def test_user_deleted_event_purges_the_users_assets(
    settings: AssetsSettings, start_server: Any, identity: FakeIdentity, new_user: Any
) -> None:
    server = await start_server(replace(settings, event_poll_seconds=0.05))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = assets_pb2_grpc.AssetServiceStub(channel)
        leaving, leaving_auth = new_user()
        _, staying_auth = new_user()
        gone = await upload(
            stub, leaving_auth, image_bytes("PNG", (64, 64)), content_type="image/png"
        )
        kept = await upload(
            stub, staying_auth, image_bytes("PNG", (64, 64)), content_type="image/png"
        )

        identity.add_event("user.deleted", leaving)
        listing = assets_pb2.ListAssetsRequest()
        for _ in range(200):
            if not (await stub.ListAssets(listing, metadata=leaving_auth)).assets:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the deleted user's asset is still there")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetAsset(assets_pb2.GetAssetRequest(asset_id=gone.id), metadata=leaving_auth)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        still = await stub.GetAsset(
            assets_pb2.GetAssetRequest(asset_id=kept.id), metadata=staying_auth
        )
        assert still.asset.id == kept.id
