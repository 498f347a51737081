"""Headless Chromium uses the API as a frontend would (issue 10, item 6): from an allowed
origin it signs up, uploads an image as a Blob, shows its content in an <img>, sends a
preflighted PATCH and reads an error body; from another origin the browser blocks it;
/docs loads with no request leaving the machine."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.browser.conftest import IMAGE_SIZE, Stack
from tests.support.api import new_credentials, sign_up


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context()
    page = await context.new_page()
    try:
        yield page
    finally:
        await context.close()


async def test_a_page_from_an_allowed_origin_uses_the_api(stack: Stack, page: Any) -> None:
    # Every call but the first carries Authorization, the PATCH is not a "simple" method and
    # JSON is not a simple Content-Type: Chromium sends each only after a preflight that the
    # gateway answered with those methods and headers allowed (Playwright does not show
    # preflights; a failed one would reject the fetch).
    await page.goto(stack.allowed_page)
    tag = uuid.uuid4().hex[:8]

    signed_up = await page.evaluate(
        "([e, u, p]) => pixelshop.signUp(e, u, p)",
        [f"ada-{tag}@example.com", f"ada_{tag}", f"correct horse {tag}"],
    )
    assert signed_up["status"] == 200, signed_up
    token = signed_up["body"]["accessToken"]
    assert signed_up["requestId"]  # an exposed header the script may read

    uploaded = await page.evaluate("(t) => pixelshop.upload(t)", token)
    assert uploaded["status"] == 200, uploaded
    asset = uploaded["body"]["asset"]
    assert (asset["width"], asset["height"]) == IMAGE_SIZE

    shown = await page.evaluate("([t, id]) => pixelshop.show(t, id)", [token, asset["id"]])
    assert shown["status"] == 200
    assert shown["type"] == "image/png"
    assert (shown["width"], shown["height"]) == IMAGE_SIZE  # rendered by the browser

    renamed = await page.evaluate("([t, n]) => pixelshop.rename(t, n)", [token, "Ada L."])
    assert renamed["status"] == 200, renamed
    assert renamed["body"]["user"]["displayName"] == "Ada L."

    missing = await page.evaluate("(t) => pixelshop.missing(t)", token)
    assert missing["status"] == 404
    assert missing["body"]["code"] == 5  # google.rpc.Status, readable cross-origin


async def test_a_page_from_another_origin_is_blocked_by_the_browser(
    stack: Stack, page: Any
) -> None:
    await page.goto(stack.allowed_page)
    allowed = await page.evaluate("() => pixelshop.tiers()")
    await page.goto(stack.other_page)
    blocked = await page.evaluate("() => pixelshop.tiers()")

    assert allowed["status"] == 200
    assert "TypeError" in blocked["blocked"]  # no Access-Control-Allow-Origin for it


async def test_docs_load_offline_and_a_developer_authorizes_and_tries_a_call(
    stack: Stack, page: Any
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as http:
        developer = await sign_up(http, **new_credentials("dev"))
    token = developer["accessToken"]
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    await page.goto(stack.gateway + "/docs")
    operation = page.locator("#operations-IdentityService-GetCurrentUser")
    await operation.wait_for(timeout=60_000)  # the operations rendered from /openapi.json
    await page.click("button.authorize")
    await page.fill(".modal-ux input[type=text], .modal-ux input[type=password]", token)
    await page.click(".modal-ux .auth-btn-wrapper button.authorize")
    await page.click(".modal-ux button.btn-done")
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.execute").click()  # "Try it out" is on (tryItOutEnabled)
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    await status.wait_for(timeout=30_000)

    assert (await status.inner_text()).strip() == "200"
    body = await operation.locator(".live-responses-table .microlight").first.inner_text()
    assert developer["username"] in body  # the call went out with the bearer token
    gateway_origin = urllib.parse.urlsplit(stack.gateway).netloc
    hosts = {urllib.parse.urlsplit(url).netloc for url in requested if not url.startswith("data:")}
    assert hosts == {gateway_origin}, requested  # nothing left the machine
    assert any(url.endswith("/openapi.json") for url in requested)
    assert "Pixelshop API" in await page.content()
