"""gRPC core's polling I/O engine in every process (ADR 0027): chosen before grpc loads,
with names this grpc still knows, and never over an operator's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.grpc_io import POLLING_IO
from tools.provision import ROOT

# A server answering one call over a channel, as every process serves and calls.
ROUND_TRIP = """
import asyncio, grpc
async def main():
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "t.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await channel.unary_unary("/t.Echo/Echo")(b"ping") == b"ping"
    await server.stop(None)
asyncio.run(main())
"""


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"} | env
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def loaded_before_grpc(package: str) -> str:
    return (
        f"import sys, os; import {package}; import grpc; modules = list(sys.modules); "
        "assert modules.index('runtime.grpc_io') < modules.index('grpc'), 'grpc loaded first'; "
        "print(os.environ['GRPC_EXPERIMENTS'])"
    )


@pytest.mark.parametrize("package", ["services", "gateway", "tools"])
def test_every_entry_package_chooses_the_engine_before_grpc_loads(package: str) -> None:
    # `python -m services.projects`, `python -m gateway`, `python -m tools.bench`: the
    # package's __init__ runs before the command's module imports anything.
    result = python(loaded_before_grpc(package))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == POLLING_IO


def test_the_tests_load_grpc_after_choosing_it_too() -> None:
    modules = list(sys.modules)
    assert modules.index("runtime.grpc_io") < modules.index("grpc")
    assert os.environ["GRPC_EXPERIMENTS"] == POLLING_IO


def test_this_grpc_knows_every_experiment_named() -> None:
    # An upgrade that retires one would log "Unknown experiment" and quietly run the
    # default engine: this fails first, and ADR 0027 says what to measure then.
    result = python("import services\n" + ROUND_TRIP)
    assert result.returncode == 0, result.stderr
    assert "experiment" not in result.stderr.lower(), result.stderr


def test_a_misspelt_experiment_is_what_that_check_would_see() -> None:
    # The check above can fail: core reports a name it does not know on stderr.
    result = python(ROUND_TRIP, GRPC_EXPERIMENTS="-event_engine_clients")
    assert "Unknown experiment: event_engine_clients" in result.stderr


def test_an_operators_own_setting_wins() -> None:
    for chosen in ("", "-event_engine_client"):
        result = python(loaded_before_grpc("services"), GRPC_EXPERIMENTS=chosen)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == chosen
