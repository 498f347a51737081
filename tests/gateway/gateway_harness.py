"""Runs the gateway for a test: in process on a real HTTP port with an httpx client pointed
at it, or as its own process (`python -m gateway`) whose JSON log the test reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from gateway.server import create_app, start
from gateway.settings import GatewaySettings

REPO = pathlib.Path(__file__).resolve().parents[2]
ALLOWED_ORIGIN = "https://app.pixelshop.test"
# Another gateway to check (a real Envoy, run with `tools.envoy_config --local-upstream
# 127.0.0.1:$GATEWAY_UPSTREAM_PORT --cors-origin https://app.pixelshop.test`): the
# conformance tables then run against it; tests of the Python gateway's own settings skip.
GATEWAY_URL = os.environ.get("GATEWAY_URL", "").rstrip("/")
GATEWAY_UPSTREAM_PORT = int(os.environ.get("GATEWAY_UPSTREAM_PORT", "50099"))
# For tests that look inside the Python gateway (its log lines, its threads, its pages).
in_process_only = pytest.mark.skipif(
    bool(GATEWAY_URL), reason=f"looks inside the Python gateway; GATEWAY_URL={GATEWAY_URL}"
)

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
    if GATEWAY_URL:
        pytest.skip(f"configures the in-process Python gateway; GATEWAY_URL={GATEWAY_URL} is set")
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


@contextlib.asynccontextmanager
async def gateway_process(**env: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m gateway` with `env` on top of this process's, its log on a pipe; killed
    on exit if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        cwd=REPO,
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_log(process: asyncio.subprocess.Process) -> dict[str, object]:
    """The process's next JSON log line."""
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), 60)
    assert line, "the gateway exited without logging"
    entry: dict[str, object] = json.loads(line)
    return entry
