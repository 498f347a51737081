"""A deleted account's images go: identity's `user.deleted` event reaches assets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from services.assets.settings import AssetsSettings
from services.assets.tests.test_upload import upload
from tests.support.fake_identity import FakeIdentity
from tests.support.images import image_bytes


async def is_refused(call: Awaitable[Any]) -> bool:
    """True once the call is refused as unauthenticated; any other error fails the test."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
        return True
    return False


async def test_user_deleted_event_purges_the_users_assets(
    settings: AssetsSettings,
    start_server: Any,
    identity: FakeIdentity,
    new_user: Any,
    migrated_db: str,
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
        for _ in range(200):  # the tombstone lands, then every call of the user is refused
            if await is_refused(stub.ListAssets(listing, metadata=leaving_auth)):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the deleted user's token is still accepted")
        database = await asyncpg.connect(migrated_db)
        try:
            for _ in range(200):  # and the purge removes what the user had
                purged = await database.fetchval(
                    "SELECT purged_at IS NOT NULL FROM assets.deleted_users WHERE user_id = $1",
                    leaving,
                )
                if purged:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the deleted user was never purged")
            left = await database.fetchval(
                "SELECT count(*) FROM assets.assets WHERE owner_id = $1", leaving
            )
            assert left == 0
            assert gone.id not in {
                str(row["id"]) for row in await database.fetch("SELECT id FROM assets.assets")
            }
        finally:
            await database.close()
        still = await stub.GetAsset(
            assets_pb2.GetAssetRequest(asset_id=kept.id), metadata=staying_auth
        )
        assert still.asset.id == kept.id
