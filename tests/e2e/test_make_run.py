"""`make run` itself: starts everything with the embedded defaults, stops cleanly on Ctrl-C,
and a second run finds the data of the first."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import uuid

import httpx

from tests.support.images import image_bytes
from tests.support.waiting import answering, eventually_sync
from tools.provision import ALL_SERVICES
from tools.run import suite_ports

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _environment(state: pathlib.Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PIXELSHOP_") or k == "PIXELSHOP_PG_BIN"
    }
    env.update(
        {
            "PIXELSHOP_STATE_DIR": str(state),
            "PIXELSHOP_IDENTITY_ARGON2_MEMORY_KIB": "1024",
            "PIXELSHOP_IDENTITY_ARGON2_TIME_COST": "1",
        }
    )
    env.update(suite_ports(ALL_SERVICES, "PIXELSHOP_PG_PORT"))
    return env


def _start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen([sys.executable, "-m", "tools.run"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{env['PIXELSHOP_GATEWAY_PORT']}"
    try:
        eventually_sync(
            lambda: answering(f"{base}/healthz", process, "make run"),
            "make run to serve HTTP",
            timeout=90,
            interval=0.3,
        )
    except BaseException:
        process.kill()
        raise
    return process, base


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=60)


def test_make_run_keeps_data_across_restarts(tmp_path: pathlib.Path) -> None:
    env = _environment(tmp_path / "state")
    credentials = {
        "email": f"again-{uuid.uuid4().hex[:8]}@example.com",
        "username": f"again_{uuid.uuid4().hex[:8]}",
        "password": "survives a restart",
    }
    process, base = _start(env)
    try:
        signed_up = httpx.post(f"{base}/v1/auth:signUp", json=credentials, timeout=30)
        assert signed_up.status_code == 200, signed_up.text
        # make run starts billing, and assets charges uploads to it by default.
        token = {"Authorization": f"Bearer {signed_up.json()['accessToken']}"}
        picture = image_bytes("PNG", (40, 30))
        uploaded = httpx.post(
            f"{base}/v1/assets:upload?filename=run.png",
            headers={**token, "Content-Type": "image/png"},
            content=picture,
            timeout=30,
        )
        assert uploaded.status_code == 200, uploaded.text
        usage = httpx.get(f"{base}/v1/billing/usage", headers=token, timeout=30)
        assert usage.status_code == 200, usage.text
        storage = {m["metric"]: m for m in usage.json()["metrics"]}["USAGE_METRIC_STORAGE_BYTES"]
        assert storage["used"] == str(len(picture))
    finally:
        assert _stop(process) == 0
    # Postgres was stopped with everything else; the service key was kept.
    assert not (tmp_path / "state" / "postgres" / "data" / "postmaster.pid").exists()
    assert (tmp_path / "state" / "internal-secret").exists()

    process, base = _start(env)
    try:
        logged_in = httpx.post(
            f"{base}/v1/auth:logIn",
            json={"login": credentials["username"], "password": credentials["password"]},
            timeout=30,
        )
        assert logged_in.status_code == 200, logged_in.text
    finally:
        assert _stop(process) == 0
