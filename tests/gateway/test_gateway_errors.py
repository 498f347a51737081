"""Errors: gRPC codes -> HTTP statuses exactly as Envoy maps them, with google.rpc.Status JSON."""

from __future__ import annotations

import dataclasses
import socket

import grpc
import httpx
import pytest
from gateway_fakes import Recorder
from gateway_harness import run_gateway

from gateway.edge import EDGE
from gateway.settings import GatewaySettings

PROJECTS = "pixelshop.projects.v1.ProjectService"
# Envoy's table; every code not listed in it is a 500.
EXPECTED_HTTP_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def test_the_table_names_every_error_code() -> None:
    assert set(EXPECTED_HTTP_STATUS) == {c.name for c in grpc.StatusCode} - {"OK"}


@pytest.mark.parametrize(("code", "http_status"), EXPECTED_HTTP_STATUS.items())
async def test_status_details_become_status_json(
    client: httpx.AsyncClient, code: str, http_status: int
) -> None:
    response = await client.get(f"/v1/projects/fail-{code}")

    assert response.status_code == http_status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-fake-reason"] == code.lower()  # trailing metadata -> header
    body = response.json()
    assert body["code"] == grpc.StatusCode[code].value[0]
    assert body["message"] == f"fake {code}"
    assert body["details"][0] == {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": f"FAKE_{code}",
        "domain": "fake.pixelshop",
        "metadata": {"id": f"fail-{code}"},
    }


@pytest.mark.parametrize(("code", "http_status"), EXPECTED_HTTP_STATUS.items())
async def test_code_and_message_become_status_json_without_details(
    client: httpx.AsyncClient, code: str, http_status: int
) -> None:
    response = await client.get(f"/v1/projects/plain-{code}")

    assert response.status_code == http_status
    assert response.json() == {"code": grpc.StatusCode[code].value[0], "message": f"plain {code}"}


async def test_resource_exhausted_with_retry_info_sets_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/projects/fail-RESOURCE_EXHAUSTED")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"  # 1.2 s rounded up
    assert response.json()["details"][1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "1.200s",
    }


async def test_upstream_down_is_503(base_settings: GatewaySettings) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    upstreams = {**base_settings.upstreams, "projects": f"127.0.0.1:{closed_port}"}
    async with run_gateway(dataclasses.replace(base_settings, upstreams=upstreams)) as client:
        response = await client.get("/v1/projects/p-1")
        other_service = await client.get("/v1/tiers")

    assert response.status_code == 503
    assert response.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "Traceback" not in response.text
    assert other_service.status_code == 200


async def test_upstream_deadline_is_504(base_settings: GatewaySettings) -> None:
    async with run_gateway(dataclasses.replace(base_settings, timeout_seconds=0.2)) as client:
        response = await client.get("/v1/projects/hang")

    assert response.status_code == 504
    assert response.json()["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_each_rpc_gets_its_deadline_from_the_edge_table(
    base_settings: GatewaySettings, recorder: Recorder
) -> None:
    """A Reapply runs several AI edits: its own entry in edge.py gives it a longer deadline
    than the rest of projects (ApplyEdit keeps one edit's); the setting overrides them all."""
    calls = {
        "Reapply": ("POST", "/v1/projects/p-1:reapply"),
        "ApplyEdit": ("POST", "/v1/projects/p-1/edits"),
        "GetProject": ("GET", "/v1/projects/p-1"),
        "ListTiers": ("GET", "/v1/tiers"),
    }

    async def remaining(client: httpx.AsyncClient) -> dict[str, float]:
        recorder.calls.clear()
        for http_method, url in calls.values():
            body = {"json": {}} if http_method == "POST" else {}
            assert (await client.request(http_method, url, **body)).status_code == 200, url
        left: dict[str, float] = {}
        for call in recorder.calls:
            assert call.time_remaining is not None, f"{call.path} arrived without a deadline"
            left[call.path.rpartition("/")[2]] = call.time_remaining
        assert set(left) == set(calls)
        return left

    def given(seconds: float) -> float:
        """The deadline a call that arrived with `seconds` left was given: gRPC rounds a
        timeout up on the wire (to whole units), and the way there takes a little."""
        return next((d for d in sorted(deadlines) if d / 2 < seconds <= d + 1), None)

    deadlines = {
        EDGE.timeout("projects", f"{PROJECTS}.Reapply"),
        EDGE.timeout("projects", f"{PROJECTS}.ApplyEdit"),
        EDGE.timeout("projects"),
        EDGE.timeout("identity"),
        2.5,
    }
    assert len(deadlines) == 4  # ApplyEdit keeps projects' 180 s
    async with run_gateway(base_settings) as client:
        left = await remaining(client)
    assert {name: given(seconds) for name, seconds in left.items()} == {
        "Reapply": 900.0,
        "ApplyEdit": 180.0,
        "GetProject": 180.0,
        "ListTiers": 30.0,
    }

    async with run_gateway(dataclasses.replace(base_settings, timeout_seconds=2.5)) as client:
        overridden = await remaining(client)
    assert all(seconds <= 2.5 + 1 for seconds in overridden.values()), overridden


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "message"),
    [
        ("POST", "/v1/projects", {"content": b'{"name": "x",'}, "request body is not valid JSON"),
        (
            "POST",
            "/v1/projects/p-1:jump",
            {"content": b"\xff\xfe{"},
            "request body is not valid JSON",
        ),
        (
            "POST",
            "/v1/projects/p-1:jump",
            {"json": ["editId"]},
            "request body must be a JSON object",
        ),
        ("PATCH", "/v1/presets/s-1", {"json": {"expectedVersion": "three"}}, "expectedVersion"),
        ("POST", "/v1/projects", {"json": {"editCount": True}}, "editCount"),
        ("POST", "/v1/projects/p-1/edits", {"json": {"crop": {"x": 1}, "retouch": {}}}, "oneof"),
        ("POST", "/v1/projects/p-1:jump", {"content": b"[" * 50_000 + b"]" * 50_000}, "JSON"),
        ("GET", "/v1/presets?pageSize=ten", {}, "page_size"),
        ("GET", "/v1/assets?kind=NOT_A_KIND", {}, "NOT_A_KIND"),
        ("GET", "/v1/presets?query=%FF", {}, "'query'"),
    ],
    ids=[
        "truncated-json",
        "not-utf8",
        "array-body",
        "string-for-int",
        "bool-for-int",
        "two-oneof-members",
        "deeply-nested",
        "bad-int-query",
        "bad-enum-query",
        "bad-utf8-query",
    ],
)
async def test_bad_input_is_400_invalid_argument_naming_the_problem(
    client: httpx.AsyncClient,
    recorder: Recorder,
    method: str,
    url: str,
    kwargs: dict[str, object],
    message: str,
) -> None:
    response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert message in body["message"]
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert "Traceback" not in response.text
    assert recorder.calls == []  # nothing reached the upstream


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/"),
        ("PUT", "/v1/projects/p-1"),  # the path exists, the method does not: 404 like Envoy
        ("GET", "/v1/projects/p-1:undo"),  # the verb exists for POST only
        ("POST", "/v1/projects/p-1/edits/e-1/more"),
        ("GET", "/healthz/extra"),
    ],
)
async def test_unknown_route_is_404_status_json(
    client: httpx.AsyncClient, recorder: Recorder, method: str, url: str
) -> None:
    response = await client.request(method, url)

    assert response.status_code == 404
    body = response.json()
    assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert body["details"][0]["reason"] == "ROUTE_NOT_FOUND"
    assert recorder.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "/pixelshop.identity.v1.IdentityInternalService/SetUserTier",
        "/pixelshop.billing.v1.BillingInternalService/ReserveUsage",
        "/v1/users/u-1:setUserTier",
        "/v1/billing:reserveUsage",
    ],
)
async def test_internal_services_are_not_reachable(
    client: httpx.AsyncClient, recorder: Recorder, url: str
) -> None:
    response = await client.post(url, json={"userId": "u-1", "tierCode": "pro"})

    assert response.status_code == 404
    assert recorder.calls == []
