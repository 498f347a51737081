"""What the gateway does before transcoding: CORS, the auth rate limit, body size limits;
plus health and the access log."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from gateway_fakes import Recorder
from gateway_harness import ALLOWED_ORIGIN, FakeClock, in_process_only, run_gateway

from gateway.settings import GatewaySettings
from runtime.logs import JsonFormatter

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


async def test_preflight_from_an_allowed_origin_is_answered(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await client.options("/v1/projects", headers={"Origin": ALLOWED_ORIGIN, **PREFLIGHT})

    assert response.status_code == 200
    headers = response.headers
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert headers["access-control-allow-methods"] == "GET, POST, PATCH, DELETE"
    assert headers["access-control-allow-headers"] == (
        "authorization, content-type, idempotency-key, x-request-id"
    )
    assert int(headers["access-control-max-age"]) > 0
    assert recorder.calls == []


async def test_preflight_from_another_origin_gets_nothing(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/v1/projects", headers={"Origin": "https://evil.test", **PREFLIGHT}
    )

    assert response.status_code == 404  # passed on to routing, as Envoy does; no route
    assert not [h for h in response.headers if h.startswith("access-control-")]


async def test_allowed_origin_gets_cors_headers_on_answers_and_errors(
    client: httpx.AsyncClient,
) -> None:
    ok = await client.get("/v1/projects/p-1", headers={"Origin": ALLOWED_ORIGIN})
    error = await client.get("/v1/projects/fail-NOT_FOUND", headers={"Origin": ALLOWED_ORIGIN})

    for response in (ok, error):
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-request-id" in response.headers["access-control-expose-headers"]
        assert response.headers["vary"] == "Origin"


async def test_other_origin_gets_no_cors_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/projects/p-1", headers={"Origin": "https://evil.test"})

    assert response.status_code == 200
    assert not [h for h in response.headers if h.startswith("access-control-")]


async def test_wildcard_origin_allows_any(base_settings: GatewaySettings) -> None:
    settings = dataclasses.replace(base_settings, cors_origins=("*",))
    async with run_gateway(settings) as client:
        response = await client.get("/v1/tiers", headers={"Origin": "http://localhost:5173"})

    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.fixture
async def limited(
    base_settings: GatewaySettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeClock]]:
    clock = FakeClock()
    settings = dataclasses.replace(base_settings, auth_rate_limit_per_minute=2)
    async with run_gateway(settings, clock=clock) as client:
        yield client, clock


async def test_auth_rate_limit_answers_429_with_retry_after(
    limited: tuple[httpx.AsyncClient, FakeClock], recorder: Recorder
) -> None:
    client, clock = limited
    log_in = {"login": "ann", "password": "guess"}

    first = await client.post("/v1/auth:logIn", json=log_in)
    second = await client.post("/v1/auth:refresh", json={"refreshToken": "r"})
    third = await client.post("/v1/auth:logIn", json=log_in)
    not_auth = await client.get("/v1/users/me")  # only /v1/auth:* paths are limited

    assert (first.status_code, second.status_code, not_auth.status_code) == (200, 200, 200)
    assert third.status_code == 429
    assert third.headers["retry-after"] == "30"  # 2 a minute: one token every 30 s
    body = third.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert [d["@type"].rsplit(".", 1)[1] for d in body["details"]] == ["ErrorInfo", "RetryInfo"]
    assert body["details"][0]["reason"] == "RATE_LIMITED"
    assert len(recorder.calls) == 3

    clock.advance(30)
    assert (await client.post("/v1/auth:logIn", json=log_in)).status_code == 200
    assert (await client.post("/v1/auth:logIn", json=log_in)).status_code == 429


async def test_rate_limit_zero_turns_it_off(base_settings: GatewaySettings) -> None:
    settings = dataclasses.replace(base_settings, auth_rate_limit_per_minute=0)
    async with run_gateway(settings) as client:
        statuses = {(await client.post("/v1/auth:logIn", json={})).status_code for _ in range(5)}

    assert statuses == {200}


@pytest.fixture
async def small_body_client(base_settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with run_gateway(
        dataclasses.replace(base_settings, json_body_max_bytes=1024, upload_body_max_bytes=1024)
    ) as client:
        yield client


async def test_body_at_the_limit_is_accepted(small_body_client: httpx.AsyncClient) -> None:
    body = b"{}" + b" " * 1022

    response = await small_body_client.post("/v1/projects/p-1:undo", content=body)

    assert response.status_code == 200


async def test_body_over_the_limit_by_content_length_is_413(
    small_body_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    response = await small_body_client.post(
        "/v1/assets:upload", content=b"x" * 1025, headers={"Content-Type": "image/png"}
    )

    assert response.status_code == 413
    body = response.json()
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert body["details"][0]["reason"] == "REQUEST_TOO_LARGE"
    assert recorder.calls == []


async def test_chunked_body_over_the_limit_is_413_while_reading(
    small_body_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 512

    response = await small_body_client.post(
        "/v1/assets:upload", content=chunks(), headers={"Content-Type": "image/png"}
    )

    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413
    assert recorder.calls == []


async def test_healthz(client: httpx.AsyncClient, recorder: Recorder) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert recorder.calls == []


@in_process_only
async def test_one_json_access_log_line_per_request(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        await client.get("/v1/projects/p-1?secret=no", headers={"X-Request-Id": "req-log"})

    records = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter("gateway").format(records[0]))
    assert line["method"] == "GET"
    assert line["path"] == "/v1/projects/p-1"  # the query may hold personal data: not logged
    assert line["status"] == 200
    assert line["request_id"] == "req-log"
    assert isinstance(line["duration_ms"], float)
    assert {"ts", "level", "msg", "service"} <= set(line)
