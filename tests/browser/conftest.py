"""A real browser against the real suite: identity and assets as processes behind the Python
gateway, a page server on two local origins (one allowed by CORS, one not), and Debian's
headless Chromium driven by Playwright (`make test` installs `chromium` when missing)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.engine import make_url

from tests.support.images import image_bytes
from tests.support.settings import INTERNAL_SECRET
from tools.pgcluster import free_ports
from tools.provision import provision
from tools.run import (
    Child,
    child_environment,
    stop_children,
    suite_ports,
    wait_gateway,
    wait_serving,
)

CHROMIUM = "/usr/bin/chromium"
# No sandbox as root; nothing in the background that would call out of the machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVICES = ("identity", "assets")
IMAGE_SIZE = (37, 23)  # odd numbers: a size nobody gets by accident
PAGE = (pathlib.Path(__file__).parent / "page.html").read_text()


@dataclass
class Stack:
    gateway: str  # http://127.0.0.1:PORT
    allowed_page: str  # a page origin the gateway's CORS allows
    other_page: str  # a page origin it does not


@pytest.fixture(scope="package")
def browser_db(pg_admin_url: str) -> str:
    url = make_url(pg_admin_url)
    own = url.set(database=f"{url.database}_browser").render_as_string(hide_password=False)
    provision(own, list(SERVICES))
    return own


@pytest.fixture(scope="package")
def page_ports() -> tuple[int, int]:
    first, second = free_ports(2)
    return first, second


@pytest.fixture(scope="package")
def gateway_url(
    browser_db: str, page_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    state = tmp_path_factory.mktemp("browser")
    base = dict(os.environ)
    base.update(
        {
            "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
            "PIXELSHOP_LOG_JSON": "true",
            "PIXELSHOP_LOG_LEVEL": "WARNING",
            "PIXELSHOP_IDENTITY_ARGON2_MEMORY_KIB": "1024",
            "PIXELSHOP_IDENTITY_ARGON2_TIME_COST": "1",
            "PIXELSHOP_IDENTITY_MAILBOX_DIR": str(state / "mailbox"),
            "PIXELSHOP_ASSETS_STORAGE_DIR": str(state / "objects"),
            "PIXELSHOP_ASSETS_QUOTA": "unlimited",
            "PIXELSHOP_GATEWAY_CORS_ORIGINS": f"http://127.0.0.1:{page_ports[0]}",
        }
    )
    base.update(suite_ports(SERVICES))
    env = child_environment(browser_db, list(SERVICES), base)
    children: list[Child] = []
    try:
        for service in SERVICES:
            process = subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=env)
            children.append(Child(service, process))
        for child in children:
            port = int(env[f"PIXELSHOP_{child.name.upper()}_PORT"])
            asyncio.run(wait_serving(child.name, port, child))
        gateway = Child("gateway", subprocess.Popen([sys.executable, "-m", "gateway"], env=env))
        children.append(gateway)
        port = int(env["PIXELSHOP_GATEWAY_PORT"])
        wait_gateway(port, gateway)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_children(children)


@pytest.fixture(scope="package")
async def stack(gateway_url: str, page_ports: tuple[int, int]) -> AsyncIterator[Stack]:
    """The same test page on two origins: 127.0.0.1:A is allowed, 127.0.0.1:B is not."""
    image = image_bytes("PNG", IMAGE_SIZE)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.replace("GATEWAY", gateway_url), content_type="text/html")

    async def photo(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/photo.png", photo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in page_ports:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Stack(
            gateway=gateway_url,
            allowed_page=f"http://127.0.0.1:{page_ports[0]}/",
            other_page=f"http://127.0.0.1:{page_ports[1]}/",
        )
    finally:
        await runner.cleanup()


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
