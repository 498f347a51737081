"""Fixtures: fake upstreams on a real grpc.aio server, and the gateway on a real HTTP port
(or the gateway at GATEWAY_URL, e.g. a real Envoy sending every call to the fake upstream
on GATEWAY_UPSTREAM_PORT; gateway/README.md says how to run one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from gateway_fakes import Recorder, start_fake_upstream
from gateway_harness import ALLOWED_ORIGIN, GATEWAY_UPSTREAM_PORT, GATEWAY_URL, run_gateway

from gateway.settings import DEFAULT_UPSTREAMS, GatewaySettings


@pytest.fixture(scope="session")
def session_recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recorder(session_recorder: Recorder) -> Recorder:
    """The calls the fake upstream received during this test."""
    session_recorder.calls.clear()
    return session_recorder


@pytest.fixture(scope="session")
async def upstream_address(session_recorder: Recorder) -> AsyncIterator[str]:
    server, port = await start_fake_upstream(
        session_recorder, GATEWAY_UPSTREAM_PORT if GATEWAY_URL else 0
    )
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture(scope="session")
def base_settings(upstream_address: str) -> GatewaySettings:
    return GatewaySettings(
        port=0,
        upstreams={service: upstream_address for service in DEFAULT_UPSTREAMS},
        cors_origins=(ALLOWED_ORIGIN,),
    )


@pytest.fixture(scope="session")
async def client(base_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with default settings (plus one CORS origin), shared by the session."""
    if GATEWAY_URL:
        async with httpx.AsyncClient(base_url=GATEWAY_URL, timeout=30) as http:
            yield http
        return
    async with run_gateway(base_settings) as http:
        yield http
