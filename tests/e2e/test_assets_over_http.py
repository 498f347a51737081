"""Issue 2 end to end: images through the gateway, validated by their content."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import bearer, sign_up
from tests.support.images import HTML, SVG, image_bytes, png_bomb, truncated_png


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
    uploaded = await http.post(
        "/v1/assets:upload?filename=holiday%20photo.img",
        headers={**bearer(account), "Content-Type": declared},
        content=data,
    )
    assert uploaded.status_code == 200, uploaded.text
    asset = uploaded.json()["asset"]
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
    response = await http.post(
        "/v1/assets:upload?filename=x.png",
        headers={**bearer(account), "Content-Type": "image/png"},
        content=body,
    )
    assert response.status_code == 400, response.text
    assert needle in response.json()["message"].lower()


async def test_another_users_asset_is_404(http: httpx.AsyncClient) -> None:
    owner, stranger = await sign_up(http), await sign_up(http)
    uploaded = await http.post(
        "/v1/assets:upload",
        headers={**bearer(owner), "Content-Type": "image/png"},
        content=image_bytes("PNG", (64, 64)),
    )
    asset_id = uploaded.json()["asset"]["id"]
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
    http: httpx.AsyncClient,
) -> None:
    # Issue 7 item 5: the gateway forwards Idempotency-Key as metadata; a browser retry
    # answers the first asset, with one object and one storage charge.
    account, other = await sign_up(http), await sign_up(http)
    data = image_bytes("PNG", (320, 200))

    async def send(who: dict[str, Any], body: bytes, key: str) -> httpx.Response:
        return await http.post(
            "/v1/assets:upload?filename=retry.png",
            headers={**bearer(who), "Content-Type": "image/png", "Idempotency-Key": key},
            content=body,
        )

    first, again = await send(account, data, "upload-1"), await send(account, data, "upload-1")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["asset"]["id"] == first.json()["asset"]["id"]
    listed = (await http.get("/v1/assets", headers=bearer(account))).json()
    assert [a["id"] for a in listed["assets"]] == [first.json()["asset"]["id"]]
    usage = (await http.get("/v1/billing/usage", headers=bearer(account))).json()
    storage = next(m for m in usage["metrics"] if m["metric"] == "USAGE_METRIC_STORAGE_BYTES")
    assert storage["used"] == str(len(data))

    other_bytes = await send(account, image_bytes("PNG", (64, 64)), "upload-1")
    assert other_bytes.status_code == 409, other_bytes.text
    assert "Idempotency-Key" in other_bytes.json()["message"]
    # Keys are per user.
    theirs = await send(other, data, "upload-1")
    assert theirs.status_code == 200
    assert theirs.json()["asset"]["id"] != first.json()["asset"]["id"]


async def test_deleting_the_account_purges_images_and_presets(http: httpx.AsyncClient) -> None:
    """identity's outbox reaches assets and presets, which purge the user's data."""
    account = await sign_up(http)
    await http.post(
        "/v1/assets:upload",
        headers={**bearer(account), "Content-Type": "image/png"},
        content=image_bytes("PNG", (64, 64)),
    )
    await http.post(
        "/v1/presets",
        headers=bearer(account),
        json={"name": "Mine", "prompt": "Make it moody.", "category": "PRESET_CATEGORY_FILTER"},
    )
    deleted = await http.request(
        "DELETE", "/v1/users/me", headers=bearer(account), json={"password": account["password"]}
    )
    assert deleted.status_code == 200, deleted.text
    # Other services trust the (still unexpired) access token, so it can look for leftovers.
    for _ in range(100):
        assets = (await http.get("/v1/assets", headers=bearer(account))).json()
        mine = (await http.get("/v1/presets?scope=mine", headers=bearer(account))).json()
        if not assets.get("assets") and not mine.get("presets"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the deleted account's images or presets are still there")
