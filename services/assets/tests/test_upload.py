"""Uploading over HTTP (UploadAsset with an HttpBody) and reading back, on both backends."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.api import httpbody_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc

from services.assets.models import owner_prefix
from services.assets.server import AssetsComponents
from services.assets.tests import images
from services.assets.tests.conftest import Metadata
from services.assets.tests.modes import (
    HIGH,
    SOURCES,
    THUMBNAIL_SIZE,
    WIDE,
    assert_thumbnail_shows,
    encode_as,
)

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


async def upload(
    stub: assets_pb2_grpc.AssetServiceStub,
    auth: Metadata,
    data: bytes,
    *,
    content_type: str = "image/jpeg",
    filename: str = "photo.jpg",
) -> assets_pb2.Asset:
    response = await stub.UploadAsset(
        assets_pb2.UploadAssetRequest(
            filename=filename,
            content=httpbody_pb2.HttpBody(content_type=content_type, data=data),
        ),
        metadata=auth,
    )
    return response.asset


async def content(
    stub: assets_pb2_grpc.AssetServiceStub, auth: Metadata, asset_id: str, variant: str = ""
) -> tuple[httpbody_pb2.HttpBody, dict[str, str]]:
    call = stub.GetAssetContent(
        assets_pb2.GetAssetContentRequest(asset_id=asset_id, variant=variant), metadata=auth
    )
    body = await call
    headers = {key: value for key, value in (await call.initial_metadata() or ())}
    return body, headers


def field_violation(error: grpc.aio.AioRpcError) -> str:
    """The field the BadRequest detail names."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return bad_request.field_violations[0].field
    raise AssertionError("no BadRequest detail")


@pytest.mark.parametrize(
    ("make", "mime_type", "filename"),
    [
        (lambda: images.png(640, 480), "image/png", "photo.png"),
        (lambda: images.jpeg(640, 480), "image/jpeg", "photo.jpg"),
        (lambda: images.webp(640, 480), "image/webp", "photo.webp"),
    ],
    ids=["png", "jpeg", "webp"],
)
async def test_an_upload_round_trips_with_its_metadata(
    assets: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    make: Callable[[], bytes],
    mime_type: str,
    filename: str,
) -> None:
    _, auth = new_user()
    data = make()

    asset = await upload(assets, auth, data, content_type=mime_type, filename=filename)

    assert asset.mime_type == mime_type
    assert (asset.width, asset.height) == (640, 480)
    assert asset.size_bytes == len(data)
    assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert asset.filename == filename
    assert asset.kind == assets_pb2.ASSET_KIND_UPLOAD
    assert asset.state == assets_pb2.ASSET_STATE_READY
    assert list(asset.variants) == ["thumbnail"]
    assert asset.create_time.seconds > 0

    body, headers = await content(assets, auth, asset.id)
    assert body.data == data
    assert body.content_type == mime_type
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"] == (
        f"inline; filename=\"{filename}\"; filename*=UTF-8''{filename}"
    )
    assert headers["cache-control"].startswith("private, max-age=")

    fetched = await assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id), metadata=auth)
    assert fetched.asset == asset


async def test_the_thumbnail_is_a_smaller_valid_image_of_the_right_type(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    opaque = await upload(
        assets, auth, images.png(1600, 1200), content_type="image/png", filename="photo.png"
    )
    transparent = await upload(
        assets, auth, images.png(1600, 1200, mode="RGBA"), content_type="image/png"
    )

    body, headers = await content(assets, auth, opaque.id, "thumbnail")
    thumbnail = images.decode(body.data)
    assert body.content_type == "image/jpeg"
    assert thumbnail.format == "JPEG"
    assert thumbnail.size == (512, 384)
    assert len(body.data) < opaque.size_bytes
    assert headers["x-content-type-options"] == "nosniff"
    assert 'filename="photo-thumbnail.jpg"' in headers["content-disposition"]

    # Alpha survives: the thumbnail of a transparent PNG is a PNG.
    body, _ = await content(assets, auth, transparent.id, "thumbnail")
    assert body.content_type == "image/png"
    assert images.decode(body.data).mode == "RGBA"


async def test_an_exif_rotated_jpeg_reports_its_upright_size(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    # Stored 800 x 600 landscape, shown rotated a quarter turn: a 600 x 800 portrait.
    asset = await upload(assets, auth, images.jpeg(800, 600, orientation=6))

    assert (asset.width, asset.height) == (600, 800)
    body, _ = await content(assets, auth, asset.id, "thumbnail")
    assert images.decode(body.data).size == (384, 512)


async def test_the_content_decides_the_type_not_the_declared_one_nor_the_name(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    data = images.png(320, 240)

    asset = await upload(assets, auth, data, content_type="text/html", filename="page.html")

    assert asset.mime_type == "image/png"
    assert asset.filename == "page.html.png"
    body, headers = await content(assets, auth, asset.id)
    assert body.content_type == "image/png"
    assert 'filename="page.html.png"' in headers["content-disposition"]


async def test_the_file_name_is_sanitized(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    asset = await upload(
        assets, auth, images.jpeg(64, 64), filename="../../etc/\u202eevil\x07 Cafe\u0301.JPG"
    )
    # Basename, no bidi override or control character, NFC, a lower-case extension.
    assert asset.filename == "evil Caf\u00e9.jpg"
    _, headers = await content(assets, auth, asset.id)
    assert headers["content-disposition"] == (
        "inline; filename=\"evil Cafe.jpg\"; filename*=UTF-8''evil%20Caf%C3%A9.jpg"
    )

    unnamed = await upload(assets, auth, images.webp(64, 64), filename="")
    assert unnamed.filename == "image.webp"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<!DOCTYPE html><html><body>hello</body></html>", "content: is HTML, not a JPEG"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
            "content: is an SVG image, not a JPEG",
        ),
        (images.gif(), "content: is a GIF image, not a JPEG"),
        (images.png(800, 600)[:3000], "content: is not a valid PNG image: the file is truncated"),
        (images.jpeg(800, 600)[:4000], "content: is not a valid JPEG image: the file is trunc"),
        (b"", "content: is empty (0 bytes)"),
        (images.png_header(50_000, 50_000), "content: declares more pixels than any plan"),
        (images.png_header(7_000, 7_000), "content: declares 7000 x 7000 pixels (49.0 mega"),
    ],
    ids=["html", "svg", "gif", "truncated-png", "truncated-jpeg", "zero-bytes", "bomb", "pixels"],
)
async def test_what_is_not_an_acceptable_image_is_refused_with_a_clear_message(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser, data: bytes, expected: str
) -> None:
    _, auth = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(assets, auth, data, content_type="image/png")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith(expected)
    assert field_violation(raised.value) == "content"
    listed = await assets.ListAssets(assets_pb2.ListAssetsRequest(), metadata=auth)
    assert list(listed.assets) == []


async def test_a_missing_body_is_refused(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await assets.UploadAsset(assets_pb2.UploadAssetRequest(filename="x.jpg"), metadata=auth)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "content: is required"


async def test_an_upload_over_the_tiers_byte_limit_is_refused(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, free = new_user("free")
    _, pro = new_user("pro")
    # A valid image padded past Free's 15 MiB (JPEG decoders stop at the end marker).
    data = images.jpeg(64, 64) + b"\x00" * (16 * 1024 * 1024)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await upload(assets, free, data)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "content: is 16.0 MiB, over your plan's limit of 15.0 MiB per upload"
    )

    # Pro allows 50 MiB: the same bytes pass.
    asset = await upload(assets, pro, data)
    assert asset.size_bytes == len(data)


async def test_an_unknown_variant_is_an_invalid_argument(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    asset = await upload(assets, auth, images.jpeg(64, 64))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await content(assets, auth, asset.id, "poster")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == "variant"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (assets_pb2.UploadAssetRequest(filename="a\x00.jpg"), "filename"),
        (assets_pb2.UploadAssetRequest(filename="a" * 1025), "filename"),
        (assets_pb2.GetAssetRequest(asset_id="not-a-uuid"), "asset_id"),
        (assets_pb2.GetAssetRequest(asset_id=""), "asset_id"),
        (assets_pb2.GetAssetRequest(asset_id="{12345678-1234-5678-1234-567812345678}"), "asset_id"),
        (assets_pb2.DeleteAssetRequest(asset_id="123"), "asset_id"),
        (assets_pb2.GetAssetContentRequest(asset_id="x"), "asset_id"),
        (assets_pb2.ListAssetsRequest(page_token="garbage"), "page_token"),
        (assets_pb2.ListAssetsRequest(kind=7), "kind"),
        (assets_pb2.ListAssetsRequest(page_size=-1), "page_size"),
        (assets_pb2.ConfirmUploadRequest(asset_id="nope"), "asset_id"),
        (assets_pb2.GetDownloadUrlRequest(asset_id="nope"), "asset_id"),
        (assets_pb2.CreateUploadUrlRequest(content_type="", size_bytes=10), "content_type"),
        (
            assets_pb2.CreateUploadUrlRequest(
                content_type="image/png", size_bytes=10, filename="\x00"
            ),
            "filename",
        ),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value,
)
async def test_bad_input_is_an_invalid_argument_naming_the_field(
    assets: assets_pb2_grpc.AssetServiceStub,
    new_user: NewUser,
    request_: object,
    field: str,
) -> None:
    _, auth = new_user()
    method = {
        assets_pb2.UploadAssetRequest: assets.UploadAsset,
        assets_pb2.GetAssetRequest: assets.GetAsset,
        assets_pb2.DeleteAssetRequest: assets.DeleteAsset,
        assets_pb2.GetAssetContentRequest: assets.GetAssetContent,
        assets_pb2.ListAssetsRequest: assets.ListAssets,
        assets_pb2.ConfirmUploadRequest: assets.ConfirmUpload,
        assets_pb2.GetDownloadUrlRequest: assets.GetDownloadUrl,
        assets_pb2.CreateUploadUrlRequest: assets.CreateUploadUrl,
    }[type(request_)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(request_, metadata=auth)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(raised.value) == field
    assert (raised.value.details() or "").startswith(f"{field}: ")


async def test_delete_hides_the_asset_and_removes_its_objects(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser, components: AssetsComponents
) -> None:
    owner, auth = new_user()
    asset = await upload(assets, auth, images.jpeg(64, 64))
    assert len(await components.store.list_objects(owner_prefix(owner))) == 2

    await assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=auth)

    for call in (
        assets.GetAsset(assets_pb2.GetAssetRequest(asset_id=asset.id), metadata=auth),
        assets.GetAssetContent(assets_pb2.GetAssetContentRequest(asset_id=asset.id), metadata=auth),
        assets.DeleteAsset(assets_pb2.DeleteAssetRequest(asset_id=asset.id), metadata=auth),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert await components.store.list_objects(owner_prefix(owner)) == []


async def test_a_16_bit_greyscale_png_of_2100_px_is_accepted_with_its_thumbnail(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    # The probe's finding: such a PNG was refused as corrupt, because the thumbnail was
    # made before the mode was converted (Pillow cannot reduce 16-bit images).
    from PIL import Image

    _, auth = new_user()
    deep = Image.frombytes("I;16", (2100, 1400), (0x8000).to_bytes(2, "little") * 2100 * 1400)
    asset = await upload(
        assets, auth, images.encode(deep, "PNG"), content_type="image/png", filename="scan.png"
    )

    assert (asset.mime_type, asset.width, asset.height) == ("image/png", 2100, 1400)
    body, _ = await content(assets, auth, asset.id, "thumbnail")
    thumbnail = images.decode(body.data)
    assert (body.content_type, thumbnail.mode, thumbnail.size) == ("image/jpeg", "L", (512, 341))
    assert 120 < thumbnail.getpixel((100, 100)) < 136  # type: ignore[operator]


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("source", list(SOURCES))
async def test_every_mode_uploads_whole_with_a_thumbnail_that_shows_it(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser, source: str, image_format: str
) -> None:
    # Through the real server and store: the original comes back byte for byte, and the
    # stored thumbnail shows the source's colours (16-bit grey, palette with transparency,
    # CMYK, grey with alpha, each as the format holds it).
    _, auth = new_user()
    data = encode_as(source, image_format)
    mime_type = f"image/{image_format.lower()}"
    asset = await upload(
        assets, auth, data, content_type=mime_type, filename=f"{source}.{image_format.lower()}"
    )

    assert (asset.mime_type, asset.width, asset.height) == (mime_type, WIDE, HIGH)
    original, _ = await content(assets, auth, asset.id)
    assert original.data == data
    body, _ = await content(assets, auth, asset.id, "thumbnail")
    thumbnail = images.decode(body.data)
    assert thumbnail.size == THUMBNAIL_SIZE
    transparent = images.decode(data).has_transparency_data
    assert body.content_type == (
        ("image/webp" if image_format == "WEBP" else "image/png") if transparent else "image/jpeg"
    )
    assert_thumbnail_shows(thumbnail, data, source)
