"""Issue 3 end to end: browsing, sharing, liking and forking presets over HTTP."""

from __future__ import annotations

import httpx

from tests.support.api import bearer, create_preset, sign_up


async def test_system_presets_are_listed_by_category(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    filters = await http.get(
        "/v1/presets?scope=system&category=filter",
        headers=bearer(account),
    )
    assert filters.status_code == 200, filters.text
    names = {p["name"] for p in filters.json()["presets"]}
    assert {"Synthwave", "Anime", "Lomo", "Glitch"} <= names
    adjustments = await http.get(
        "/v1/presets?scope=system&category=adjustment",
        headers=bearer(account),
    )
    names = {p["name"] for p in adjustments.json()["presets"]}
    assert {"Blur Background", "Enhance Details", "Warmer Lighting", "Studio Light"} <= names


async def test_create_share_like_and_fork(http: httpx.AsyncClient) -> None:
    author, fan = await sign_up(http), await sign_up(http)
    created = await create_preset(
        http, author, name="Teal and orange", prompt="Grade the photo in teal and orange."
    )
    assert created.status_code == 200, created.text
    preset = created.json()["preset"]
    assert preset["version"] == 1

    seen = await http.get(f"/v1/presets/{preset['id']}", headers=bearer(fan))
    assert seen.status_code == 200
    liked = await http.post(f"/v1/presets/{preset['id']}:like", headers=bearer(fan), json={})
    assert liked.json()["preset"]["likeCount"] == "1"
    again = await http.post(f"/v1/presets/{preset['id']}:like", headers=bearer(fan), json={})
    assert again.json()["preset"]["likeCount"] == "1"
    forked = await http.post(f"/v1/presets/{preset['id']}:fork", headers=bearer(fan), json={})
    assert forked.status_code == 200, forked.text
    fork = forked.json()["preset"]
    assert fork["forkedFromId"] == preset["id"]
    assert fork["prompt"] == preset["prompt"]

    private = await http.patch(
        f"/v1/presets/{preset['id']}",
        headers=bearer(author),
        json={"visibility": "PRESET_VISIBILITY_PRIVATE"},
    )
    assert private.json()["preset"]["version"] == 2
    assert (await http.get(f"/v1/presets/{preset['id']}", headers=bearer(fan))).status_code == 404


async def test_bad_preset_input_is_400(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    for query in ("pageToken=bogus", "category=99", "orderBy=random", "pageSize=-3"):
        response = await http.get(f"/v1/presets?{query}", headers=bearer(account))
        assert response.status_code == 400, (query, response.text)
    empty = await create_preset(http, account, name="", prompt="x")
    assert empty.status_code == 400
    assert "name" in empty.text


async def test_create_retried_with_an_idempotency_key_makes_one_preset(
    http: httpx.AsyncClient,
) -> None:
    account = await sign_up(http)
    body = {"name": "Retried look", "prompt": "Cool shadows.", "category": "PRESET_CATEGORY_FILTER"}
    headers = {**bearer(account), "Idempotency-Key": "create-once-7f3a"}
    first = await http.post("/v1/presets", headers=headers, json=body)
    second = await http.post("/v1/presets", headers=headers, json=body)
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["preset"]["id"] == second.json()["preset"]["id"]
    other = await http.post("/v1/presets", headers=headers, json={**body, "name": "Other"})
    assert other.status_code == 409, other.text
    mine = await http.get("/v1/presets?scope=mine", headers=bearer(account))
    assert [p["id"] for p in mine.json()["presets"]] == [first.json()["preset"]["id"]]


async def test_a_name_with_a_right_to_left_override_is_400(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    response = await create_preset(http, account, name="Sepia\u202egnp.exe", prompt="x")
    assert response.status_code == 400
    assert "preset.name" in response.text
