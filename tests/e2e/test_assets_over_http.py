"""Issue 2 end to end: images through the gateway, validated by their content."""

from __future__ import annotations

import hashlib
import io

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Suite
from tests.support.api import (
    Account,
    bearer,
    create_preset,
    delete_account,
    sign_up,
    upload,
    uploaded,
    usage,
)
from tests.support.images import HTML, SVG, image_bytes, png_bomb, truncated_png
from tests.support.waiting import eventually


@pytest.mark.parametrize(
    ("fmt", "declared", "mime"),
    [
        ("PNG", "image/png", "image/png"),
        ("JPEG", "image/jpeg", "image/jpeg"),
        ("WEBP", "image/webp", "image/webp"),
        # The header lies; the content decides.
        ("PNG", "image/jpeg", "image/png"),
    ],
)
async def test_upload_round_trip(
    http: httpx.AsyncClient, fmt: str, declared: str, mime: str
) -> None:
    account = await sign_up(http)
    data = image_bytes(fmt, (1200, 800))
    sent = await upload(http, account, data, filename="holiday photo.img", content_type=declared)
    assert sent.status_code == 200, sent.text
    asset = sent.json()["asset"]
    assert asset["mimeType"] == mime
    assert (asset["width"], asset["height"]) == (1200, 800)
    assert asset["sizeBytes"] == str(len(data))
    assert asset["sha256"] == hashlib.sha256(data).hexdigest()

    fetched = await http.get(f"/v1/assets/{asset['id']}", headers=bearer(account))
    assert fetched.json()["asset"]["id"] == asset["id"]

    content = await http.get(f"/v1/assets/{asset['id']}:content", headers=bearer(account))
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"] == mime
    assert content.headers["x-content-type-options"] == "nosniff"
    assert content.headers["content-disposition"].startswith("inline")

    thumb = await http.get(
        f"/v1/assets/{asset['id']}:content?variant=thumbnail", headers=bearer(account)
    )
    assert thumb.status_code == 200
    image = Image.open(io.BytesIO(thumb.content))
    image.load()
    assert max(image.size) <= 512
    assert thumb.headers["content-type"].startswith("image/")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (HTML, "html"),
        (SVG, "svg"),
        (truncated_png(), "truncated"),
        (b"", "empty"),
        (png_bomb(), "pixels"),
        (b"GIF89a" + b"\x00" * 64, "gif"),
    ],
    ids=["html", "svg", "truncated-png", "empty", "bomb", "gif"],
)
async def test_bad_uploads_are_400_with_a_clear_message(
    http: httpx.AsyncClient, body: bytes, needle: str
) -> None:
    account = await sign_up(http)
    response = await upload(http, account, body, filename="x.png")
    assert response.status_code == 400, response.text
    assert needle in response.json()["message"].lower()


async def test_another_users_asset_is_404(http: httpx.AsyncClient) -> None:
    owner, stranger = await sign_up(http), await sign_up(http)
    asset_id = await uploaded(http, owner, image_bytes("PNG", (64, 64)))
    for method, path in (
        ("GET", f"/v1/assets/{asset_id}"),
        ("GET", f"/v1/assets/{asset_id}:content"),
        ("GET", f"/v1/assets/{asset_id}:content?variant=thumbnail"),
        ("DELETE", f"/v1/assets/{asset_id}"),
    ):
        response = await http.request(method, path, headers=bearer(stranger))
        assert response.status_code == 404, (method, path, response.text)
    listed = (await http.get("/v1/assets", headers=bearer(stranger))).json()
    assert asset_id not in [a["id"] for a in listed.get("assets", [])]
    # The owner still has it, and can delete it.
    assert (await http.get(f"/v1/assets/{asset_id}", headers=bearer(owner))).status_code == 200
    assert (await http.delete(f"/v1/assets/{asset_id}", headers=bearer(owner))).status_code == 200
    assert (await http.get(f"/v1/assets/{asset_id}", headers=bearer(owner))).status_code == 404


async def test_an_upload_retried_with_its_idempotency_key_stores_and_charges_once(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    # Issue 7 item 5: the gateway forwards Idempotency-Key as metadata; a browser retry
    # answers the first asset, with one object and one storage charge.
    account, other = await sign_up(http), await sign_up(http)
    data = image_bytes("PNG", (320, 200))

    async def send(who: Account, body: bytes, key: str) -> httpx.Response:
        return await upload(http, who, body, filename="retry.png", headers={"Idempotency-Key": key})

    first, again = await send(account, data, "upload-1"), await send(account, data, "upload-1")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    asset_id = first.json()["asset"]["id"]
    assert again.json()["asset"]["id"] == asset_id
    listed = (await http.get("/v1/assets", headers=bearer(account))).json()
    assert [a["id"] for a in listed["assets"]] == [asset_id]
    assert (await usage(http, account))["USAGE_METRIC_STORAGE_BYTES"]["used"] == str(len(data))
    # One original and its thumbnail in the bucket, under the one asset.
    objects = suite.s3.keys(containing=account["user"]["id"])
    assert len(objects) == 2, objects
    assert all(asset_id in key for key in objects), objects

    other_bytes = await send(account, image_bytes("PNG", (64, 64)), "upload-1")
    assert other_bytes.status_code == 409, other_bytes.text
    assert "Idempotency-Key" in other_bytes.json()["message"]
    # Keys are per user.
    theirs = await send(other, data, "upload-1")
    assert theirs.status_code == 200
    assert theirs.json()["asset"]["id"] != first.json()["asset"]["id"]


async def test_deleting_the_account_purges_images_and_presets(
    http: httpx.AsyncClient, suite: Suite
) -> None:
    """identity's outbox reaches assets and presets, which purge the user's data."""
    account = await sign_up(http)
    await uploaded(http, account, image_bytes("PNG", (64, 64)))
    made = await create_preset(http, account, name="Mine", prompt="Make it moody.")
    assert made.status_code == 200, made.text
    await delete_account(http, account)

    async def gone() -> bool:
        # Once every service knows of the deletion it refuses the (still unexpired) token;
        # until then the token can look for leftovers.
        assets = await http.get("/v1/assets", headers=bearer(account))
        mine = await http.get("/v1/presets?scope=mine", headers=bearer(account))
        listed_nothing = all(
            r.status_code == 401 or (r.status_code == 200 and not r.json().get(key))
            for r, key in ((assets, "assets"), (mine, "presets"))
        )
        return listed_nothing and not suite.s3.keys(containing=account["user"]["id"])

    await eventually(
        gone,
        "the deleted account's images (and their objects) and presets to be gone",
        state=lambda: suite.s3.keys(containing=account["user"]["id"]),
    )
