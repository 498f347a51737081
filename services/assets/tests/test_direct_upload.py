"""Direct uploads to S3 (presigned PUT, then ConfirmUpload) and presigned downloads.

moto does not check presigned signatures, expiry or the signed headers, so the tests
check what the service puts into its URLs (expiry, signed content type and length) and
that ConfirmUpload validates whatever actually arrived, exactly like an upload.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from services.assets.server import build
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.conftest import Metadata, StartServer
from services.assets.tests.test_upload import field_violation, upload

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    # Only ever the local moto server's http:// URLs.
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status, dict(response.headers), response.read()


@pytest.fixture
async def s3_assets(
    s3_settings: AssetsSettings, start_server: StartServer
) -> AsyncIterator[assets_pb2_grpc.AssetServiceStub]:
    server = await start_server(s3_settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield assets_pb2_grpc.AssetServiceStub(channel)


async def create_url(
    stub: assets_pb2_grpc.AssetServiceStub,
    auth: Metadata,
    size: int,
    content_type: str = "image/jpeg",
    filename: str = "direct.jpg",
) -> assets_pb2.CreateUploadUrlResponse:
    return await stub.CreateUploadUrl(
        assets_pb2.CreateUploadUrlRequest(
            filename=filename, content_type=content_type, size_bytes=size
        ),
        metadata=auth,
    )


async def test_a_direct_upload_is_validated_and_made_ready_on_confirmation(
    s3_assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    data = images.jpeg(1024, 768, orientation=8)
    before = datetime.datetime.now(datetime.UTC)

    created = await create_url(s3_assets, auth, len(data))

    after = datetime.datetime.now(datetime.UTC)
    assert created.headers["Content-Type"] == "image/jpeg"
    expires = created.expire_time.ToDatetime(tzinfo=datetime.UTC)
    assert before + datetime.timedelta(seconds=900) <= expires + datetime.timedelta(seconds=1)
    assert expires <= after + datetime.timedelta(seconds=900)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(created.upload_url).query)
    assert query["X-Amz-Expires"] == ["900"]
    # S3 refuses a PUT with another type or size: both headers are signed.
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) >= {"content-type", "content-length"}
    # Not listed (nor readable) before it is confirmed.
    listed = await s3_assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert list(listed.assets) == []

    status, _, _ = await asyncio.to_thread(
        http, "PUT", created.upload_url, data, dict(created.headers)
    )
    assert status == 200
    confirmed = await s3_assets.ConfirmUpload(
        assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
    )

    asset = confirmed.asset
    assert asset.id == created.asset_id
    assert asset.state == assets_pb2.ASSET_STATE_READY
    assert (asset.width, asset.height) == (768, 1024)
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert asset.filename == "direct.jpg"
    assert list(asset.variants) == ["thumbnail"]
    again = await s3_assets.ConfirmUpload(
        assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
    )
    assert again.asset == asset


async def test_confirming_content_that_is_not_an_image_deletes_it(
    s3_assets: assets_pb2_grpc.AssetServiceStub,
    s3_settings: AssetsSettings,
    new_user: NewUser,
) -> None:
    owner_id, auth = new_user()
    html = b"<html><script>alert(1)</script></html>"
    created = await create_url(s3_assets, auth, len(html))
    await asyncio.to_thread(http, "PUT", created.upload_url, html, dict(created.headers))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await s3_assets.ConfirmUpload(
            assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "content: is HTML, not a JPEG, PNG or WebP image"

    components = build(s3_settings)
    try:
        assert await components.store.list_objects(f"users/{owner_id}/") == []
    finally:
        await components.close()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await s3_assets.ConfirmUpload(
            assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_confirming_more_bytes_than_announced_is_refused(
    s3_assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    # Real S3 would refuse this PUT (Content-Length is signed); moto does not, and the
    # service must not rely on the store to have checked.
    _, auth = new_user()
    data = images.jpeg(200, 200)
    created = await create_url(s3_assets, auth, 100)
    await asyncio.to_thread(http, "PUT", created.upload_url, data, {"Content-Type": "image/jpeg"})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await s3_assets.ConfirmUpload(
            assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == f"content: is {len(data)} bytes, not the 100 announced"


async def test_confirming_before_the_upload_arrived_is_a_failed_precondition(
    s3_assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    created = await create_url(s3_assets, auth, 1000)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await s3_assets.ConfirmUpload(
            assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_pending_direct_upload_is_not_found_for_another_user(
    s3_assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    _, stranger = new_user()
    data = images.jpeg(64, 64)
    created = await create_url(s3_assets, auth, len(data))
    await asyncio.to_thread(http, "PUT", created.upload_url, data, dict(created.headers))
    for call in (
        s3_assets.ConfirmUpload(
            assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=stranger
        ),
        s3_assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=created.asset_id), metadata=auth),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("size", "content_type", "field", "message"),
    [
        (16 * 1024 * 1024, "image/jpeg", "size_bytes", "size_bytes: is 16.0 MiB, over your plan"),
        (0, "image/jpeg", "size_bytes", "size_bytes: must be positive"),
        (100, "image/gif", "content_type", "content_type: must be one of image/jpeg, image/png"),
        (100, "text/html", "content_type", "content_type: must be one of"),
    ],
)
async def test_create_upload_url_checks_type_and_size_first(
    s3_assets: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    size: int,
    content_type: str,
    field: str,
    message: str,
) -> None:
    _, auth = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create_url(s3_assets, auth, size, content_type)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field
    assert (raised.value.details() or "").startswith(message)


async def test_a_download_url_serves_the_bytes_with_safe_headers(
    s3_assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    data = images.png(300, 200)
    asset = await upload(s3_assets, auth, data, content_type="image/png", filename="café.png")

    response = await s3_assets.GetDownloadUrl(
        assets_pb2.GetDownloadUrlRequest(asset_id=asset.id), metadata=auth
    )

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.url).query)
    assert query["X-Amz-Expires"] == ["300"]
    status, headers, body = await asyncio.to_thread(http, "GET", response.url)
    assert status == 200
    assert body == data
    assert headers["content-type"] == "image/png"
    assert headers["Content-Disposition"] == (
        "inline; filename=\"cafe.png\"; filename*=UTF-8''caf%C3%A9.png"
    )

    thumbnail = await s3_assets.GetDownloadUrl(
        assets_pb2.GetDownloadUrlRequest(asset_id=asset.id, variant="thumbnail"), metadata=auth
    )
    _, headers, body = await asyncio.to_thread(http, "GET", thumbnail.url)
    assert headers["content-type"] == "image/jpeg"
    assert images.decode(body).size == (300, 200)


async def test_the_directory_backend_has_no_presigned_urls(
    directory_settings: AssetsSettings, start_server: StartServer, new_user: NewUser
) -> None:
    server = await start_server(directory_settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = assets_pb2_grpc.AssetServiceStub(channel)
        _, auth = new_user()
        asset = await upload(stub, auth, images.jpeg(32, 32))

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await create_url(stub, auth, 100)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert raised.value.details() == "direct upload needs the s3 storage backend"

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetDownloadUrl(
                assets_pb2.GetDownloadUrlRequest(asset_id=asset.id), metadata=auth
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert raised.value.details() == "download URLs need the s3 storage backend"


async def test_the_upload_url_cannot_replace_a_confirmed_asset(
    s3_assets: assets_pb2_grpc.AssetServiceStub, s3_settings: AssetsSettings, new_user: NewUser
) -> None:
    # The presigned PUT stays valid until it expires, after ConfirmUpload too: what it
    # writes must never become the validated asset's bytes.
    owner_id, auth = new_user()
    data = images.jpeg(320, 240)
    created = await create_url(s3_assets, auth, len(data))
    await asyncio.to_thread(http, "PUT", created.upload_url, data, dict(created.headers))
    confirmed = await s3_assets.ConfirmUpload(
        assets_pb2.ConfirmUploadRequest(asset_id=created.asset_id), metadata=auth
    )
    components = build(s3_settings)
    try:
        stored = await components.store.list_objects(f"users/{owner_id}/")
    finally:
        await components.close()
    assert sorted(o.key.rpartition("/")[2] for o in stored) == ["original", "thumbnail"]

    html = b"<html><script>alert(1)</script></html>"
    swapped = html + b" " * (len(data) - len(html))  # the signed size, other content
    status, _, _ = await asyncio.to_thread(
        http, "PUT", created.upload_url, swapped, dict(created.headers)
    )
    assert status == 200

    body = await s3_assets.GetAssetContent(
        assets_pb2.GetAssetContentRequest(asset_id=created.asset_id), metadata=auth
    )
    assert body.data == data
    assert hashlib.sha256(body.data).hexdigest() == confirmed.asset.sha256
    download = await s3_assets.GetDownloadUrl(
        assets_pb2.GetDownloadUrlRequest(asset_id=created.asset_id), metadata=auth
    )
    _, _, downloaded = await asyncio.to_thread(http, "GET", download.url)
    assert downloaded == data
