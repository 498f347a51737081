"""`python -m services.assets` as an operator runs it: serve until SIGTERM, or sweep once."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.settings import INTERNAL_SECRET, runtime_url
from tools.pgcluster import free_port

REPOSITORY = pathlib.Path(__file__).resolve().parents[3]


def environment(migrated_db: str, tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
        "PIXELSHOP_ASSETS_DATABASE_URL": runtime_url(migrated_db, "assets"),
        "PIXELSHOP_ASSETS_STORAGE_DIR": str(tmp_path / "objects"),
        "PIXELSHOP_LOG_JSON": "true",
        **extra,
    }


def test_sweep_runs_one_pass_and_reports_it(migrated_db: str, tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.assets", "sweep"],
        cwd=tmp_path,  # anywhere: nothing depends on the working directory
        env=environment(migrated_db, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "abandoned_pending",
        "purged_deleted",
        "settled_reservations",
        "removed_orphans",
    }


async def test_serve_becomes_healthy_and_stops_on_sigterm(
    migrated_db: str, tmp_path: pathlib.Path
) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.assets",
        cwd=tmp_path,
        env=environment(migrated_db, tmp_path, PIXELSHOP_ASSETS_PORT=str(port)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        status = None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(300):  # until it listens (or dies); no timing is asserted
                if process.returncode is not None:
                    break
                try:
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service="pixelshop.assets.v1.AssetService"),
                        timeout=1,
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
                    continue
                status = reply.status
                break
        assert status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
