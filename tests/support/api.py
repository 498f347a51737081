"""The public HTTP API as the end-to-end tests call it through a gateway: accounts, uploads,
presets, projects, usage. Each helper sends one request the way a browser would; those
that answer a value check the status first, those that answer the response leave the
status to the test."""

from __future__ import annotations

import io
import urllib.parse
import uuid
from typing import Any

import httpx
from PIL import Image

Account = dict[str, Any]


def new_credentials(prefix: str = "user") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    return {
        "email": f"{prefix}-{tag}@example.com",
        "username": f"{prefix}_{tag}",
        "password": f"long enough {tag}",
    }


async def sign_up(http: httpx.AsyncClient, **overrides: Any) -> Account:
    """A new account: the sign-up answer plus the credentials it was made with."""
    body = {**new_credentials(), **overrides}
    response = await http.post("/v1/auth:signUp", json=body)
    assert response.status_code == 200, response.text
    return {
        **response.json(),
        "password": body["password"],
        "email": body["email"],
        "username": body["username"],
    }


def bearer(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account['accessToken']}"}


async def delete_account(http: httpx.AsyncClient, account: Account) -> None:
    deleted = await http.request(
        "DELETE", "/v1/users/me", headers=bearer(account), json={"password": account["password"]}
    )
    assert deleted.status_code == 200, deleted.text


async def upload(
    http: httpx.AsyncClient,
    account: Account,
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str = "image/png",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST /v1/assets:upload with the raw image as the body."""
    path = "/v1/assets:upload"
    if filename is not None:
        path += "?" + urllib.parse.urlencode({"filename": filename})
    return await http.post(
        path,
        headers={**bearer(account), "Content-Type": content_type, **(headers or {})},
        content=data,
    )


async def uploaded(http: httpx.AsyncClient, account: Account, data: bytes, **options: Any) -> str:
    """Uploads `data` and answers the new asset's id."""
    response = await upload(http, account, data, **options)
    assert response.status_code == 200, response.text
    return str(response.json()["asset"]["id"])


async def image_of(http: httpx.AsyncClient, account: Account, asset_id: str) -> Image.Image:
    """An asset's content, decoded (RGB)."""
    response = await http.get(f"/v1/assets/{asset_id}:content", headers=bearer(account))
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image.convert("RGB")


async def create_preset(http: httpx.AsyncClient, account: Account, **fields: Any) -> httpx.Response:
    body = {
        "name": f"Mine {uuid.uuid4().hex[:6]}",
        "prompt": "Make it look like a summer afternoon.",
        "category": "PRESET_CATEGORY_FILTER",
        "visibility": "PRESET_VISIBILITY_UNLISTED",
        **fields,
    }
    return await http.post("/v1/presets", headers=bearer(account), json=body)


async def a_system_preset(http: httpx.AsyncClient, account: Account) -> str:
    listed = await http.get("/v1/presets?scope=system", headers=bearer(account))
    assert listed.status_code == 200, listed.text
    return str(listed.json()["presets"][0]["id"])


async def create_project(
    http: httpx.AsyncClient, account: Account, asset_id: str, name: str = "Holiday"
) -> httpx.Response:
    return await http.post(
        "/v1/projects", headers=bearer(account), json={"name": name, "originalAssetId": asset_id}
    )


async def apply_edit(
    http: httpx.AsyncClient, account: Account, project_id: str, **body: Any
) -> httpx.Response:
    """POST /v1/projects/{id}/edits with a fresh request id (`body`: the action)."""
    return await http.post(
        f"/v1/projects/{project_id}/edits",
        headers=bearer(account),
        json={"requestId": str(uuid.uuid4()), **body},
    )


async def usage(http: httpx.AsyncClient, account: Account) -> dict[str, dict[str, Any]]:
    """GET /v1/billing/usage, by metric name (USAGE_METRIC_…)."""
    response = await http.get("/v1/billing/usage", headers=bearer(account))
    assert response.status_code == 200, response.text
    return {value["metric"]: value for value in response.json()["metrics"]}


def count(value: dict[str, Any], field: str) -> int:
    """An int64 field of a usage value (proto3 JSON: a string, omitted when zero)."""
    return int(value.get(field, "0"))
