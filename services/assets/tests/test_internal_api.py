"""The internal service other services call with the service credential."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc
from sqlalchemy import func, select

from runtime.server import RunningServer
from services.assets.models import assets as assets_table
from services.assets.models import owner_prefix
from services.assets.server import AssetsComponents
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.conftest import Metadata, StartServer
from services.assets.tests.test_upload import field_violation, upload
from tools.pgcluster import free_port

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]
CHUNK = 16 * 1024


def store_requests(
    owner_id: uuid.UUID | str,
    data: bytes,
    *,
    kind: int = assets_pb2.ASSET_KIND_EDIT_RESULT,
    filename: str = "result.png",
    idempotency_key: str = "",
) -> Iterable[assets_pb2.StoreAssetRequest]:
    yield assets_pb2.StoreAssetRequest(
        header=assets_pb2.StoreAssetHeader(
            owner_id=str(owner_id), filename=filename, kind=kind, idempotency_key=idempotency_key
        )
    )
    for start in range(0, len(data), CHUNK):
        yield assets_pb2.StoreAssetRequest(chunk=data[start : start + CHUNK])


async def read_all(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    credential: Metadata,
    asset_id: str,
    owner_id: uuid.UUID,
    variant: str = "",
) -> tuple[list[assets_pb2.ReadAssetResponse], bytes]:
    messages = [
        message
        async for message in internal.ReadAsset(
            assets_pb2.ReadAssetRequest(asset_id=asset_id, owner_id=str(owner_id), variant=variant),
            metadata=credential,
        )
    ]
    return messages, b"".join(m.chunk for m in messages)


async def test_store_asset_streams_an_edit_result_in(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    assets: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, auth = new_user()
    data = images.png(900, 700)
    assert len(data) > 4 * CHUNK  # really several messages

    response = await internal.StoreAsset(
        store_requests(owner_id, data), metadata=service_credential
    )

    asset = response.asset
    assert asset.kind == assets_pb2.ASSET_KIND_EDIT_RESULT
    assert (asset.mime_type, asset.width, asset.height) == ("image/png", 900, 700)
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    # It belongs to the user: they see it, filtered by kind too.
    listed = await assets.ListAssets(
        assets_pb2.ListAssetsRequest(kind=assets_pb2.ASSET_KIND_EDIT_RESULT), metadata=auth
    )
    assert [a.id for a in listed.assets] == [asset.id]
    uploads = await assets.ListAssets(
        assets_pb2.ListAssetsRequest(kind=assets_pb2.ASSET_KIND_UPLOAD), metadata=auth
    )
    assert list(uploads.assets) == []


async def test_store_asset_with_the_same_idempotency_key_answers_the_same_asset(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, _ = new_user()
    data = images.jpeg(300, 200)
    first = await internal.StoreAsset(
        store_requests(owner_id, data, idempotency_key="edit-42"), metadata=service_credential
    )
    again = await internal.StoreAsset(
        store_requests(owner_id, data, idempotency_key="edit-42"), metadata=service_credential
    )
    assert again.asset == first.asset
    # The key is per owner: another user's "edit-42" is a different asset.
    other_id, _ = new_user()
    other = await internal.StoreAsset(
        store_requests(other_id, data, idempotency_key="edit-42"), metadata=service_credential
    )
    assert other.asset.id != first.asset.id


async def test_store_asset_stops_reading_past_the_owners_byte_limit(
    server: RunningServer,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, _ = new_user("free")
    sent = 0

    async def endless() -> AsyncIterator[assets_pb2.StoreAssetRequest]:
        nonlocal sent
        yield assets_pb2.StoreAssetRequest(
            header=assets_pb2.StoreAssetHeader(
                owner_id=str(owner_id), kind=assets_pb2.ASSET_KIND_EDIT_RESULT
            )
        )
        chunk = b"\xff\xd8\xff" + b"\x00" * (1024 * 1024 - 3)
        while sent < 40:  # 40 MiB, far past Free's 15 MiB
            sent += 1
            yield assets_pb2.StoreAssetRequest(chunk=chunk)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(endless(), metadata=service_credential)
    assert sent < 40
    # The server's answer, as it counted it. The client sees it too, unless one of its own
    # writes races the server's early end: grpc.aio then reports INTERNAL "Internal error
    # from Core" instead (grpc/grpc#36066), which only the load of a full run provokes.
    method = "/pixelshop.assets.v1.AssetInternalService/StoreAsset"
    answered = f'code="INVALID_ARGUMENT",method="{method}"'
    assert answered in server.metrics.render()
    if raised.value.details() == "Internal error from Core":
        return
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over" in (raised.value.details() or "") or "larger" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([assets_pb2.StoreAssetRequest(chunk=b"abc")], "header"),
        ([], "header"),
        (
            [
                assets_pb2.StoreAssetRequest(
                    header=assets_pb2.StoreAssetHeader(owner_id="nope", kind=1)
                )
            ],
            "header.owner_id",
        ),
        (
            [
                assets_pb2.StoreAssetRequest(
                    header=assets_pb2.StoreAssetHeader(owner_id=str(uuid.uuid4()))
                )
            ],
            "header.kind",
        ),
        (
            [
                assets_pb2.StoreAssetRequest(
                    header=assets_pb2.StoreAssetHeader(owner_id=str(uuid.uuid4()), kind=9)
                )
            ],
            "header.kind",
        ),
        (
            [
                assets_pb2.StoreAssetRequest(
                    header=assets_pb2.StoreAssetHeader(
                        owner_id=str(uuid.uuid4()), kind=1, filename="a\x00b"
                    )
                )
            ],
            "header.filename",
        ),
        (
            [
                assets_pb2.StoreAssetRequest(
                    header=assets_pb2.StoreAssetHeader(
                        owner_id=str(uuid.uuid4()), kind=1, idempotency_key="k" * 256
                    )
                )
            ],
            "header.idempotency_key",
        ),
    ],
    ids=["no-header", "empty", "owner", "no-kind", "unknown-kind", "nul-name", "long-key"],
)
async def test_store_asset_validates_its_header(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    service_credential: Metadata,
    messages: list[assets_pb2.StoreAssetRequest],
    field: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(iter(messages), metadata=service_credential)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field


async def test_store_asset_refuses_a_second_header(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, _ = new_user()
    messages = [*store_requests(owner_id, images.jpeg(64, 64)), *store_requests(owner_id, b"")]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(iter(messages), metadata=service_credential)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_read_asset_streams_the_bytes_with_metadata_first(
    assets: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, auth = new_user()
    data = images.png(1500, 1100)
    assert len(data) > 1024 * 1024  # more than one chunk
    asset = await upload(assets, auth, data, content_type="image/png", filename="big.png")

    messages, received = await read_all(internal, service_credential, asset.id, owner_id)

    assert received == data
    assert len(messages) > 1
    assert messages[0].asset == asset
    assert all(not m.HasField("asset") for m in messages[1:])

    _, thumbnail = await read_all(internal, service_credential, asset.id, owner_id, "thumbnail")
    assert images.decode(thumbnail).size == (512, 375)


async def test_get_asset_for_owner_answers_the_metadata(
    assets: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    owner_id, auth = new_user()
    asset = await upload(assets, auth, images.webp(100, 50), content_type="image/webp")
    response = await internal.GetAssetForOwner(
        assets_pb2.GetAssetForOwnerRequest(asset_id=asset.id, owner_id=str(owner_id)),
        metadata=service_credential,
    )
    assert response.asset == asset


async def test_delete_assets_deletes_the_owners_assets_and_ignores_unknown_ids(
    assets: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
    components: AssetsComponents,
) -> None:
    owner_id, auth = new_user()
    doomed = [await upload(assets, auth, images.jpeg(32, 32)) for _ in range(2)]
    kept = await upload(assets, auth, images.jpeg(32, 32))

    response = await internal.DeleteAssets(
        assets_pb2.DeleteAssetsRequest(
            owner_id=str(owner_id), asset_ids=[a.id for a in doomed] + [str(uuid.uuid4())]
        ),
        metadata=service_credential,
    )

    assert response.deleted_count == 2
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert [a.id for a in listed.assets] == [kept.id]
    remaining = {
        o.key.split("/")[2] for o in await components.store.list_objects(owner_prefix(owner_id))
    }
    assert remaining == {kept.id}

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.DeleteAssets(
            assets_pb2.DeleteAssetsRequest(owner_id=str(owner_id), asset_ids=[kept.id, "x"]),
            metadata=service_credential,
        )
    assert field_violation(raised.value) == "asset_ids[1]"


async def test_purge_user_removes_every_row_and_object_of_the_user(
    assets: assets_pb2_grpc.AssetServiceStub,
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
    components: AssetsComponents,
) -> None:
    owner_id, auth = new_user()
    bystander_id, bystander = new_user()
    for _ in range(3):
        await upload(assets, auth, images.jpeg(32, 32))
    deleted_earlier = await upload(assets, auth, images.jpeg(32, 32))
    await assets.DeleteAsset(
        assets_pb2.DeleteAssetRequest(asset_id=deleted_earlier.id), metadata=auth
    )
    kept = await upload(assets, bystander, images.jpeg(32, 32))
    # A leftover of a crashed upload, with no row at all.
    await components.store.put(
        f"{owner_prefix(owner_id)}{uuid.uuid4()}/original", b"x", "image/jpeg"
    )

    response = await internal.PurgeUser(
        assets_pb2.PurgeUserRequest(user_id=str(owner_id)), metadata=service_credential
    )

    assert response.deleted_count == 3
    assert await components.store.list_objects(owner_prefix(owner_id)) == []
    async with components.database.transaction() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(assets_table)
            .where(assets_table.c.owner_id == owner_id)
        )
    assert rows == 0
    # Nobody else is touched, and purging again is harmless.
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=bystander)
    assert [a.id for a in listed.assets] == [kept.id]
    again = await internal.PurgeUser(
        assets_pb2.PurgeUserRequest(user_id=str(owner_id)), metadata=service_credential
    )
    assert again.deleted_count == 0
    assert bystander_id != owner_id


async def test_store_asset_answers_unavailable_when_identity_is_down(
    settings: AssetsSettings, start_server: StartServer, service_credential: Metadata
) -> None:
    # Nothing listens there: the owner's plan limits cannot be read.
    server = await start_server(replace(settings, identity_addr=f"127.0.0.1:{free_port()}"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = assets_pb2_grpc.AssetInternalServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.StoreAsset(
                store_requests(uuid.uuid4(), images.jpeg(32, 32)), metadata=service_credential
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "cannot read the user's plan right now; try again"


async def test_the_server_runs_the_sweeper_in_the_background_when_asked(
    settings: AssetsSettings, start_server: StartServer
) -> None:
    server = await start_server(replace(settings, sweep_interval_seconds=3600))
    assert [task.get_name() for task in server.background] == [
        "assets-events",
        "assets-tombstones",
        "assets-sweeper",
    ]
    assert not any(task.done() for task in server.background)
    await server.stop(0)
    assert all(task.done() for task in server.background)


async def test_store_asset_with_a_reused_idempotency_key_and_other_bytes_is_refused(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    assets: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    # A retry carries the same bytes; other bytes under the same key are another image,
    # and answering the first one's asset would silently lose them.
    owner_id, auth = new_user()
    first = await internal.StoreAsset(
        store_requests(owner_id, images.jpeg(300, 200), idempotency_key="edit-7"),
        metadata=service_credential,
    )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.StoreAsset(
            store_requests(owner_id, images.png(64, 64), idempotency_key="edit-7"),
            metadata=service_credential,
        )

    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency_key" in (raised.value.details() or "")
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert [a.id for a in listed.assets] == [first.asset.id]


async def test_store_asset_keys_are_taken_as_sent_and_too_long_is_refused(
    internal: assets_pb2_grpc.AssetInternalServiceStub,
    new_user: NewUser,
    service_credential: Metadata,
) -> None:
    """runtime.validation's one rule for idempotency keys: a key that differs by a
    space is another key (it was trimmed into the same one), and a key FindStoredAsset
    cannot hold is INVALID_ARGUMENT naming the field."""
    owner_id, _ = new_user()
    first = await internal.StoreAsset(
        store_requests(owner_id, images.jpeg(300, 200), idempotency_key="edit-8"),
        metadata=service_credential,
    )
    other = await internal.StoreAsset(
        store_requests(owner_id, images.png(64, 64), idempotency_key="edit-8 "),
        metadata=service_credential,
    )
    assert other.asset.id != first.asset.id
    found = await internal.FindStoredAsset(
        assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id), idempotency_key="edit-8 "),
        metadata=service_credential,
    )
    assert found.asset.id == other.asset.id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await internal.FindStoredAsset(
            assets_pb2.FindStoredAssetRequest(owner_id=str(owner_id), idempotency_key="k" * 256),
            metadata=service_credential,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "idempotency_key"
