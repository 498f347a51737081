"""The conformance tables run against any gateway at GATEWAY_URL (issue 10, item 7).

Here the "other" gateway is `python -m gateway` as its own process; where Envoy runs, the
same command checks it (gateway/README.md, "Checking another gateway").
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from gateway_harness import GATEWAY_URL, REPO

from tests.support.waiting import answering, eventually_sync
from tools.pgcluster import free_ports

TABLES = ("tests/gateway/test_gateway_conformance.py", "tests/gateway/test_gateway_errors.py")


def _against_a_gateway_process(*paths: str) -> subprocess.CompletedProcess[str]:
    """`paths` run by pytest against `python -m gateway` in its own process (as in
    production, ADR 0026), every upstream being the suite's fake."""
    gateway_port, upstream_port = free_ports(2)
    upstream = f"127.0.0.1:{upstream_port}"
    env = {
        **os.environ,
        "PIXELSHOP_GATEWAY_PORT": str(gateway_port),
        "PIXELSHOP_GATEWAY_CORS_ORIGINS": "https://app.pixelshop.test",
        "PIXELSHOP_GATEWAY_LOG_LEVEL": "WARNING",
        **{
            f"PIXELSHOP_GATEWAY_{name}_ADDR": upstream
            for name in ("IDENTITY", "PROJECTS", "ASSETS", "PRESETS", "BILLING")
        },
    }
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=REPO, env=env)
    try:
        health = f"http://127.0.0.1:{gateway_port}/healthz"
        eventually_sync(
            lambda: answering(health, gateway, "the gateway"), "the gateway to answer /healthz"
        )
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", *paths],
            cwd=REPO,
            env={
                **os.environ,
                "GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
                "GATEWAY_UPSTREAM_PORT": str(upstream_port),
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        gateway.terminate()
        gateway.wait(30)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout.strip().splitlines()[-1]
    return run


def _skipped(run: subprocess.CompletedProcess[str]) -> list[str]:
    """The skips: only cases that configure or look inside the in-process gateway."""
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    reasons = ("configures the in-process Python gateway", "looks inside the Python gateway")
    assert all(any(reason in line for reason in reasons) for line in skipped), skipped
    return skipped


@pytest.mark.skipif(bool(GATEWAY_URL), reason="already running against GATEWAY_URL")
def test_the_conformance_tables_run_against_a_gateway_at_gateway_url() -> None:
    run = _against_a_gateway_process(*TABLES)
    # Only the cases that reconfigure the Python gateway (a dead upstream, a tiny deadline)
    # are skipped; every table case ran against the other gateway.
    assert len(_skipped(run)) <= 2, run.stdout[-3000:]


@pytest.mark.skipif(bool(GATEWAY_URL), reason="already running against GATEWAY_URL")
def test_the_hostile_clients_meet_the_gateway_as_it_runs_in_production() -> None:
    """The other tests run the gateway in process; here its own connection handling
    (gateway/protocol.py) meets the hostile clients as `python -m gateway` runs it."""
    run = _against_a_gateway_process("tests/gateway/test_gateway_hostile.py")
    _skipped(run)
    passed = int(run.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 10, run.stdout[-3000:]
