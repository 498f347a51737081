"""Issue 9 end to end: projects and the edit history through the gateway, with the real
identity, assets, presets and billing; the image at every step is checked by its pixels."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
from PIL import Image, ImageStat

from tests.support.api import (
    apply_edit,
    bearer,
    count,
    create_project,
    image_of,
    sign_up,
    uploaded,
    usage,
)


def quadrants(size: tuple[int, int]) -> bytes:
    """Red, green, blue and yellow quadrants: a crop is told apart by its colour."""
    width, height = size
    image = Image.new("RGB", size, (220, 30, 30))
    image.paste((30, 200, 40), (width // 2, 0, width, height // 2))
    image.paste((30, 40, 210), (0, height // 2, width // 2, height))
    image.paste((230, 220, 40), (width // 2, height // 2, width, height))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


async def upload(http: httpx.AsyncClient, account: dict[str, Any], data: bytes) -> str:
    return await uploaded(http, account, data, filename="photo.jpg", content_type="image/jpeg")


def saturation(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("HSV")).mean[1])


def mostly(image: Image.Image) -> tuple[int, ...]:
    return tuple(round(v) for v in ImageStat.Stat(image).mean)


async def move(
    http: httpx.AsyncClient, account: dict[str, Any], project_id: str, verb: str, **body: Any
) -> dict[str, Any]:
    response = await http.post(
        f"/v1/projects/{project_id}:{verb}", headers=bearer(account), json=body
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["project"])


async def test_filter_crop_undo_redo_branch_jump_reset_and_reapply(
    http: httpx.AsyncClient,
) -> None:
    account = await sign_up(http)
    original_id = await upload(http, account, quadrants((320, 240)))
    created = await create_project(http, account, original_id)
    assert created.status_code == 200, created.text
    project = created.json()["project"]
    pid = project["id"]
    assert project["currentAssetId"] == original_id
    assert project.get("editCount", 0) == 0

    gray = await apply_edit(http, account, pid, filter={"prompt": "black and white"})
    assert gray.status_code == 200, gray.text
    gray_edit = gray.json()["edit"]
    assert gray_edit["status"] == "EDIT_STATUS_SUCCEEDED"
    gray_image = await image_of(http, account, gray_edit["resultAssetId"])
    assert saturation(gray_image) < 3
    assert gray_image.size == (320, 240)

    crop = await apply_edit(
        http, account, pid, crop={"x": 160, "y": 120, "width": 160, "height": 120}
    )
    assert crop.status_code == 200, crop.text
    crop_edit = crop.json()["edit"]
    assert crop_edit["parentId"] == gray_edit["id"]
    cropped = await image_of(http, account, crop_edit["resultAssetId"])
    assert cropped.size == (160, 120)
    # The yellow quadrant, in gray: bright and flat.
    assert min(mostly(cropped)) > 150
    assert saturation(cropped) < 3

    undone = await move(http, account, pid, "undo")
    assert undone["headEditId"] == gray_edit["id"]
    assert undone["currentAssetId"] == gray_edit["resultAssetId"]
    redone = await move(http, account, pid, "redo")
    assert redone["currentAssetId"] == crop_edit["resultAssetId"]
    await move(http, account, pid, "undo")

    branch = await apply_edit(http, account, pid, adjust={"prompt": "make it darker"})
    assert branch.status_code == 200, branch.text
    branch_edit = branch.json()["edit"]
    assert branch_edit["parentId"] == gray_edit["id"]
    darker = await image_of(http, account, branch_edit["resultAssetId"])
    assert (
        ImageStat.Stat(darker.convert("L")).mean[0]
        < ImageStat.Stat(gray_image.convert("L")).mean[0] - 20
    )

    history = await http.get(f"/v1/projects/{pid}/edits", headers=bearer(account))
    assert history.status_code == 200, history.text
    edits = history.json()["edits"]
    assert [e["seq"] for e in edits] == [1, 2, 3]
    assert [e.get("onHeadPath", False) for e in edits] == [True, False, True]
    assert [e.get("parentId", "") for e in edits] == ["", gray_edit["id"], gray_edit["id"]]
    one = await http.get(f"/v1/projects/{pid}/edits/{crop_edit['id']}", headers=bearer(account))
    assert one.json()["edit"]["crop"]["width"] == 160

    jumped = await move(http, account, pid, "jump", editId=crop_edit["id"])
    assert jumped["currentAssetId"] == crop_edit["resultAssetId"]
    assert (jumped["width"], jumped["height"]) == (160, 120)
    reset = await move(http, account, pid, "reset")
    assert reset["currentAssetId"] == original_id
    assert reset.get("headEditId", "") == ""
    back = await image_of(http, account, reset["currentAssetId"])
    assert saturation(back) > 100

    undo_at_original = await http.post(f"/v1/projects/{pid}:undo", headers=bearer(account), json={})
    assert undo_at_original.status_code == 400
    assert "nothing to undo" in undo_at_original.json()["message"]

    # Re-apply the crop onto a photo of another size: it scales by its fractions.
    other_asset = await upload(http, account, quadrants((640, 480)))
    other = await create_project(http, account, other_asset, "Other")
    other_id = other.json()["project"]["id"]
    reapplied = await http.post(
        f"/v1/projects/{other_id}:reapply",
        headers=bearer(account),
        json={"requestId": str(uuid.uuid4()), "sourceProjectId": pid, "editIds": [crop_edit["id"]]},
    )
    assert reapplied.status_code == 200, reapplied.text
    body = reapplied.json()
    assert body["completed"] is True
    new_crop = body["edits"][0]
    assert new_crop["reappliedFromId"] == crop_edit["id"]
    assert (new_crop["crop"]["x"], new_crop["crop"]["y"]) == (320, 240)
    assert (body["project"]["width"], body["project"]["height"]) == (320, 240)
    scaled = await image_of(http, account, body["project"]["currentAssetId"])
    assert scaled.size == (320, 240)
    r, g, b = mostly(scaled)
    # The yellow quadrant, in colour this time.
    assert min(r, g) > 180
    assert b < 100


async def test_bad_input_and_another_users_token(http: httpx.AsyncClient) -> None:
    owner, stranger = await sign_up(http), await sign_up(http)
    asset_id = await upload(http, owner, quadrants((64, 48)))
    created = await create_project(http, owner, asset_id, "Mine")
    pid = created.json()["project"]["id"]
    outside = await apply_edit(http, owner, pid, crop={"x": 0, "y": 0, "width": 65, "height": 10})
    assert outside.status_code == 400
    assert outside.json()["message"].startswith("crop.width:")
    for method, path in (
        ("GET", f"/v1/projects/{pid}"),
        ("GET", f"/v1/projects/{pid}/edits"),
        ("POST", f"/v1/projects/{pid}:undo"),
        ("DELETE", f"/v1/projects/{pid}"),
    ):
        response = await http.request(
            method, path, headers=bearer(stranger), json={} if method == "POST" else None
        )
        assert response.status_code == 404, (method, path)
    stolen = await create_project(http, stranger, asset_id, "Theirs")
    assert stolen.status_code == 400


def used(metrics: dict[str, dict[str, Any]], metric: str) -> tuple[int, int, int]:
    """(used, reserved, limit) of one metric, as GET /v1/billing/usage shows it."""
    value = metrics[f"USAGE_METRIC_{metric}"]
    return count(value, "used"), count(value, "reserved"), count(value, "limit")


async def test_free_plan_limits_ai_edits_and_projects(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    asset_id = await upload(http, account, quadrants((32, 24)))
    assert used(await usage(http, account), "PROJECTS") == (0, 0, 20)
    projects = []
    for index in range(20):
        response = await create_project(http, account, asset_id, f"Project {index}")
        assert response.status_code == 200, response.text
        projects.append(response.json()["project"]["id"])
    assert used(await usage(http, account), "PROJECTS") == (20, 0, 20)
    refused = await create_project(http, account, asset_id, "21st")
    assert refused.status_code == 429, refused.text
    # The refusal held nothing back and counted nothing.
    assert used(await usage(http, account), "PROJECTS") == (20, 0, 20)

    pid = projects[0]
    for _ in range(25):
        response = await apply_edit(http, account, pid, filter={"prompt": "warmer"})
        assert response.status_code == 200, response.text
    assert used(await usage(http, account), "AI_EDITS") == (25, 0, 25)
    over = await apply_edit(http, account, pid, filter={"prompt": "warmer"})
    assert over.status_code == 429, over.text
    crop = await apply_edit(http, account, pid, crop={"x": 0, "y": 0, "width": 16, "height": 12})
    assert crop.status_code == 200, crop.text
    # Neither the refused edit nor the crop (free) is counted.
    assert used(await usage(http, account), "AI_EDITS") == (25, 0, 25)

    # Deleting a project gives its unit back: the count drops, and a project fits again.
    deleted = await http.delete(f"/v1/projects/{projects[-1]}", headers=bearer(account))
    assert deleted.status_code == 200, deleted.text
    assert used(await usage(http, account), "PROJECTS") == (19, 0, 20)
    again = await create_project(http, account, asset_id, "Room again")
    assert again.status_code == 200, again.text
    assert used(await usage(http, account), "PROJECTS") == (20, 0, 20)
    # Only the one unit came back: the next is refused again.
    full = await create_project(http, account, asset_id, "One too many")
    assert full.status_code == 429, full.text
    # Deleting the same project twice credits it once.
    twice = await http.delete(f"/v1/projects/{projects[-1]}", headers=bearer(account))
    assert twice.status_code == 404, twice.text
    assert used(await usage(http, account), "PROJECTS") == (20, 0, 20)
