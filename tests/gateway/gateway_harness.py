"""Runs the gateway on a real HTTP port for a test, with an httpx client pointed at it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from gateway.server import create_app, start
from gateway.settings import GatewaySettings

ALLOWED_ORIGIN = "https://app.pixelshop.test"

RunGateway = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def run_gateway(
    settings: GatewaySettings, clock: Callable[[], float] = time.monotonic, **client: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The same start-up path as `serve`, on port 0; stopped (channels closed) on exit."""
    app = create_app(settings, clock=clock)
    runner, port = await start(app, "127.0.0.1", 0)
    try:
        # The timeout only stops a broken test from hanging; nothing asserts on time.
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, **client
        ) as http:
            yield http
    finally:
        await runner.cleanup()
