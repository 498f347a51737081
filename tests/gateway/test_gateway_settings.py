"""Settings from the environment, the rate limiter's arithmetic, and `python -m gateway`."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
from gateway_harness import REPO, FakeClock, gateway_process, read_log

from gateway.ratelimit import ClientRateLimiter
from gateway.settings import (
    DEFAULT_DESCRIPTOR_SET,
    DEFAULT_UPSTREAMS,
    GatewaySettings,
    SettingsError,
)

PROJECTS = "pixelshop.projects.v1.ProjectService"


def test_defaults_with_an_empty_environment() -> None:
    settings = GatewaySettings.from_env({})

    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.descriptor_set == REPO / "gen" / "pixelshop.binpb"
    assert DEFAULT_DESCRIPTOR_SET.is_file()
    assert dict(settings.upstreams) == {
        "identity": "127.0.0.1:50051",
        "projects": "127.0.0.1:50052",
        "assets": "127.0.0.1:50053",
        "presets": "127.0.0.1:50054",
        "billing": "127.0.0.1:50055",
    }
    assert settings.cors_origins == ()
    assert settings.json_body_max_bytes == 1024 * 1024
    assert settings.upload_body_max_bytes == 64 * 1024 * 1024
    assert settings.inflight_max_bytes == 512 * 1024 * 1024
    assert settings.request_decompression == ""
    assert settings.auth_rate_limit_per_minute == 600
    # Upstream deadlines come from the edge table Envoy's route timeouts are made from.
    assert settings.timeout_seconds == 0.0
    assert settings.upstream_timeout("projects") == 180.0
    assert settings.upstream_timeout("identity") == 30.0
    assert settings.upstream_timeout("projects", f"{PROJECTS}.Reapply") == 900.0
    assert settings.upstream_timeout("projects", f"{PROJECTS}.Undo") == 180.0
    assert (settings.request_headers_timeout_seconds, settings.body_idle_timeout_seconds) == (
        10.0,
        30.0,
    )
    assert (settings.request_timeout_seconds, settings.idle_timeout_seconds) == (300.0, 60.0)


def test_every_variable_is_read() -> None:
    settings = GatewaySettings.from_env(
        {
            "PIXELSHOP_GATEWAY_HOST": "0.0.0.0",
            "PIXELSHOP_GATEWAY_PORT": "9090",
            "PIXELSHOP_GATEWAY_DESCRIPTOR_SET": str(DEFAULT_DESCRIPTOR_SET),
            "PIXELSHOP_GATEWAY_IDENTITY_ADDR": "identity:50051",
            "PIXELSHOP_GATEWAY_PROJECTS_ADDR": "dns:///projects:50052",
            "PIXELSHOP_GATEWAY_ASSETS_ADDR": "unix:/run/assets.sock",
            "PIXELSHOP_GATEWAY_PRESETS_ADDR": "presets:2",
            "PIXELSHOP_GATEWAY_BILLING_ADDR": "billing:3",
            "PIXELSHOP_GATEWAY_CORS_ORIGINS": " https://a.test, http://localhost:5173 ,",
            "PIXELSHOP_GATEWAY_JSON_BODY_MAX_BYTES": "1024",
            "PIXELSHOP_GATEWAY_UPLOAD_BODY_MAX_BYTES": "4096",
            "PIXELSHOP_GATEWAY_INFLIGHT_MAX_BYTES": "8192",
            "PIXELSHOP_GATEWAY_REQUEST_DECOMPRESSION": "GZIP",
            "PIXELSHOP_GATEWAY_AUTH_RATE_LIMIT_PER_MINUTE": "0",
            "PIXELSHOP_GATEWAY_TIMEOUT_SECONDS": "2.5",
            "PIXELSHOP_GATEWAY_REQUEST_HEADERS_TIMEOUT_SECONDS": "1",
            "PIXELSHOP_GATEWAY_BODY_IDLE_TIMEOUT_SECONDS": "2",
            "PIXELSHOP_GATEWAY_REQUEST_TIMEOUT_SECONDS": "3",
            "PIXELSHOP_GATEWAY_IDLE_TIMEOUT_SECONDS": "4",
        }
    )

    assert (settings.host, settings.port) == ("0.0.0.0", 9090)
    assert settings.upstreams["projects"] == "dns:///projects:50052"
    assert set(settings.upstreams) == set(DEFAULT_UPSTREAMS)
    assert settings.cors_origins == ("https://a.test", "http://localhost:5173")
    assert (settings.json_body_max_bytes, settings.upload_body_max_bytes) == (1024, 4096)
    assert (settings.inflight_max_bytes, settings.auth_rate_limit_per_minute) == (8192, 0)
    assert settings.request_decompression == "gzip"
    assert settings.upstream_timeout("projects") == settings.timeout_seconds == 2.5
    assert settings.upstream_timeout("projects", f"{PROJECTS}.Reapply") == 2.5
    assert (
        settings.request_headers_timeout_seconds,
        settings.body_idle_timeout_seconds,
        settings.request_timeout_seconds,
        settings.idle_timeout_seconds,
    ) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIXELSHOP_GATEWAY_PORT", "http"),
        ("PIXELSHOP_GATEWAY_PORT", "70000"),
        ("PIXELSHOP_GATEWAY_HOST", " "),
        ("PIXELSHOP_GATEWAY_DESCRIPTOR_SET", "/nonexistent/pixelshop.binpb"),
        ("PIXELSHOP_GATEWAY_IDENTITY_ADDR", "local host:1"),
        ("PIXELSHOP_GATEWAY_BILLING_ADDR", "billing"),
        ("PIXELSHOP_GATEWAY_ASSETS_ADDR", ""),
        ("PIXELSHOP_GATEWAY_CORS_ORIGINS", "https://a.test/app"),
        ("PIXELSHOP_GATEWAY_JSON_BODY_MAX_BYTES", "0"),
        ("PIXELSHOP_GATEWAY_UPLOAD_BODY_MAX_BYTES", "64MiB"),
        ("PIXELSHOP_GATEWAY_INFLIGHT_MAX_BYTES", "-1"),
        ("PIXELSHOP_GATEWAY_REQUEST_DECOMPRESSION", "br"),
        ("PIXELSHOP_GATEWAY_AUTH_RATE_LIMIT_PER_MINUTE", "-1"),
        ("PIXELSHOP_GATEWAY_TIMEOUT_SECONDS", "-1"),
        ("PIXELSHOP_GATEWAY_TIMEOUT_SECONDS", "nan"),
        ("PIXELSHOP_GATEWAY_REQUEST_HEADERS_TIMEOUT_SECONDS", "0"),
        ("PIXELSHOP_GATEWAY_IDLE_TIMEOUT_SECONDS", "inf"),
    ],
)
def test_bad_values_fail_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        GatewaySettings.from_env({name: value})


def test_rate_limiter_refills_continuously() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(60, clock=clock)  # one a second, bursts of 60

    assert [limiter.acquire("a") for _ in range(60)] == [0.0] * 60
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0  # per client
    clock.advance(0.5)
    assert limiter.acquire("a") == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.acquire("a") == 0.0


def test_rate_limiter_forgets_idle_clients() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(1, clock=clock, max_clients=2)
    limiter.acquire("a")
    limiter.acquire("b")
    clock.advance(60)  # a and b are full again

    limiter.acquire("c")

    assert len(limiter) == 1
    assert limiter.acquire("c") > 0  # c is tracked


def test_rate_limiter_resets_when_every_client_is_active() -> None:
    clock = FakeClock()
    limiter = ClientRateLimiter(1, clock=clock, max_clients=2)
    limiter.acquire("a")
    limiter.acquire("b")

    assert limiter.acquire("c") == 0.0
    assert len(limiter) == 1


# --- the process ------------------------------------------------------------------------------


async def test_python_m_gateway_serves_until_sigterm() -> None:
    async with gateway_process(PIXELSHOP_GATEWAY_PORT="0") as process:
        listening = await read_log(process)
        assert listening["msg"] == "gateway listening"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listening['port']}") as http:
            health = await http.get("/healthz")
            missing = await http.get("/v1/nothing")
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), 60)
        assert process.stderr is not None
        rest = [json.loads(line) for line in (await process.stderr.read()).splitlines()]

    assert health.status_code == 200
    assert missing.status_code == 404
    assert returncode == 0
    access = [e for e in rest if e["logger"] == "gateway.access"]
    assert [(e["path"], e["status"]) for e in access] == [("/v1/nothing", 404)]
    assert rest[-1]["msg"] == "gateway stopped"


async def test_python_m_gateway_refuses_bad_settings() -> None:
    async with gateway_process(PIXELSHOP_GATEWAY_JSON_BODY_MAX_BYTES="lots") as process:
        entry = await read_log(process)
        returncode = await asyncio.wait_for(process.wait(), 60)

    assert returncode == 2
    assert entry["level"] == "error"
    assert "PIXELSHOP_GATEWAY_JSON_BODY_MAX_BYTES" in str(entry["msg"])


def test_make_run_allows_the_local_dev_server_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.run import DEV_CORS_ORIGINS, child_environment

    monkeypatch.setenv("PIXELSHOP_INTERNAL_SECRET", "x" * 40)  # nothing written to .pixelshop/

    env = child_environment("postgresql://x@127.0.0.1/db", [], {})
    settings = GatewaySettings.from_env(env)

    assert settings.cors_origins == ("http://localhost:5173", "http://127.0.0.1:5173")
    assert env["PIXELSHOP_GATEWAY_CORS_ORIGINS"] == DEV_CORS_ORIGINS
    # Set explicitly (even empty), the variable wins.
    assert (
        child_environment(
            "postgresql://x@127.0.0.1/db", [], {"PIXELSHOP_GATEWAY_CORS_ORIGINS": ""}
        )["PIXELSHOP_GATEWAY_CORS_ORIGINS"]
        == ""
    )
