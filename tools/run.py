"""`make run`: the whole suite on one machine with the embedded defaults.

Starts (or reuses) the embedded Postgres under .pixelshop/ — or uses PIXELSHOP_DATABASE_URL —
provisions and migrates every built service, starts each service as its own process on
its own port, then the gateway, waits until all are healthy, prints the URL and stays in
the foreground. Ctrl-C (or SIGTERM) stops everything it started, gracefully. Data stays
in .pixelshop/, so running it again loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from runtime.config import EMBEDDED_PG_DATABASE, runtime_role
from tools.pgcluster import PostgresCluster, PostgresUnavailable, free_ports
from tools.provision import ALL_SERVICES, EMBEDDED_PORT, ROOT, STATE_DIR, provision

SERVICE_PORTS = {
    "identity": 50051,
    "projects": 50052,
    "assets": 50053,
    "presets": 50054,
    "billing": 50055,
}
GATEWAY_PORT = 8080
START_TIMEOUT = 60.0
# The usual local dev-server origins (Vite) may call the API from a browser under make run.
DEV_CORS_ORIGINS = "http://localhost:5173,http://127.0.0.1:5173"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def runnable_services() -> list[str]:
    """Services built in this checkout; the rest are simply not started."""
    return [s for s in ALL_SERVICES if (ROOT / "services" / s / "__main__.py").exists()]


def internal_secret() -> str:
    """The service credential key: from the environment, else made once and kept."""
    given = os.environ.get("PIXELSHOP_INTERNAL_SECRET")
    if given:
        return given
    path = STATE_DIR / "internal-secret"
    if not path.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def service_database_url(admin_url: str, service: str) -> str:
    """The runtime role's URL on the same server as the admin URL."""
    password = os.environ.get(f"PIXELSHOP_{service.upper()}_DB_PASSWORD") or None
    url = make_url(admin_url).set(
        drivername="postgresql+asyncpg", username=runtime_role(service), password=password
    )
    return url.render_as_string(hide_password=False)


def child_environment(
    admin_url: str, services: list[str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What every child sees: the secret, each service's database URL and every address."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PIXELSHOP_INTERNAL_SECRET", internal_secret())
    env.setdefault("PYTHONUNBUFFERED", "1")
    # What the services keep on disk lives with the rest of make run's state.
    env.setdefault("PIXELSHOP_IDENTITY_MAILBOX_DIR", str(STATE_DIR / "mailbox"))
    env.setdefault("PIXELSHOP_ASSETS_STORAGE_DIR", str(STATE_DIR / "objects"))
    env.setdefault("PIXELSHOP_GATEWAY_CORS_ORIGINS", DEV_CORS_ORIGINS)
    # Uploads reserve storage with billing; PIXELSHOP_ASSETS_QUOTA=unlimited opts out.
    env.setdefault("PIXELSHOP_ASSETS_QUOTA", "billing")
    # Projects reserves ai_edits, storage and projects units the same way.
    env.setdefault("PIXELSHOP_PROJECTS_QUOTA", "billing")
    for service in services:
        env.setdefault(
            f"PIXELSHOP_{service.upper()}_DATABASE_URL", service_database_url(admin_url, service)
        )
    for service in ALL_SERVICES:
        address = f"127.0.0.1:{port_of(service, env)}"
        env.setdefault(f"PIXELSHOP_{service.upper()}_ADDR", address)
    return env


def port_of(service: str, env: Mapping[str, str]) -> int:
    return int(env.get(f"PIXELSHOP_{service.upper()}_PORT", SERVICE_PORTS[service]))


async def wait_serving(service: str, port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{service} exited with code {child.process.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{service} did not become healthy on port {port}")


def wait_gateway(port: int, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"gateway exited with code {child.process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"gateway did not answer on port {port}")


def stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in reversed(children):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def suite_ports(services: Sequence[str], *extra: str) -> dict[str, str]:
    """`PIXELSHOP_<SERVICE>_PORT` for each service, `PIXELSHOP_GATEWAY_PORT` and each of
    `extra` (variable names), all free and all different, for a suite beside others."""
    names = [f"PIXELSHOP_{service.upper()}_PORT" for service in services]
    names += ["PIXELSHOP_GATEWAY_PORT", *extra]
    return {name: str(port) for name, port in zip(names, free_ports(len(names)), strict=True)}


def start_suite(
    admin_url: str, base_env: Mapping[str, str] | None = None
) -> tuple[list[Child], int]:
    """Starts every built service and the gateway; answers the children and gateway port."""
    services = runnable_services()
    env = child_environment(admin_url, services, base_env)
    children: list[Child] = []
    try:
        for service in services:
            process = subprocess.Popen([sys.executable, "-m", f"services.{service}"], env=env)
            children.append(Child(service, process))
        for child in children:
            asyncio.run(wait_serving(child.name, port_of(child.name, env), child))
        gateway_port = int(env.get("PIXELSHOP_GATEWAY_PORT", GATEWAY_PORT))
        gateway = Child("gateway", subprocess.Popen([sys.executable, "-m", "gateway"], env=env))
        children.append(gateway)
        wait_gateway(gateway_port, gateway)
    except BaseException:
        stop_children(children)
        raise
    return children, gateway_port


def main() -> int:
    cluster: PostgresCluster | None = None
    admin_url = os.environ.get("PIXELSHOP_DATABASE_URL", "")
    try:
        if not admin_url:
            cluster = PostgresCluster(root=STATE_DIR / "postgres", port=EMBEDDED_PORT)
            cluster.start()
            admin_url = cluster.admin_url(EMBEDDED_PG_DATABASE)
        provision(admin_url)
    except PostgresUnavailable as error:
        print(f"make run: {error}", file=sys.stderr)
        return 1

    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    children: list[Child] = []
    code = 0
    try:
        children, port = start_suite(admin_url)
        names = ", ".join(c.name for c in children)
        origins = os.environ.get("PIXELSHOP_GATEWAY_CORS_ORIGINS", DEV_CORS_ORIGINS)
        print(
            f"\nPixelshop is running: http://127.0.0.1:{port}  ({names})\n"
            f"API reference: http://127.0.0.1:{port}/docs  (OpenAPI: /openapi.json)\n"
            f"Browsers may call it from: {origins or 'no origin (CORS off)'}\n"
            "Press Ctrl-C to stop.\n",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            dead = [c for c in children if c.process.poll() is not None]
            if dead:
                print(
                    f"make run: {dead[0].name} exited ({dead[0].process.returncode}); "
                    "stopping everything",
                    file=sys.stderr,
                )
                code = 1
                break
            time.sleep(0.5)
    except RuntimeError as error:
        print(f"make run: {error}", file=sys.stderr)
        code = 1
    finally:
        stop_children(children)
        if cluster is not None:
            cluster.stop()
    print("make run: stopped", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
