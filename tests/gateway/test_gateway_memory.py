"""The gateway's memory stays bounded under a flood of maximum-size uploads and compressed
bombs, and a small request is answered while the flood is still running (issue 10).

The gateway runs as its own process (`python -m gateway`, default limits), so its resident
set can be read from /proc: the peak (VmHWM) is what the flood cost. Before the hardening,
32 concurrent 64 MiB uploads held 2 GiB and more, and 8 gzip bombs inflated to 512 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import pathlib
from collections.abc import AsyncIterator

import httpx
from gateway_harness import gateway_process, read_log

from tests.support.waiting import eventually

MIB = 1024 * 1024
UPLOAD_LIMIT = 64 * MIB  # the default upload limit: every upload here is maximum-size
INFLIGHT_BUDGET = 512 * MIB  # the default bound on request bytes in flight
UPLOADS = 32
BOMBS = 8
CHUNK = b"\0" * MIB
SERVICES = ("identity", "projects", "assets", "presets", "billing")


def memory_kib(pid: int, field: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@contextlib.asynccontextmanager
async def listening_gateway(upstream: str) -> AsyncIterator[tuple[int, int]]:
    """The gateway process with default limits, every service at `upstream`: its pid and
    port once it says it listens."""
    upstreams = {f"PIXELSHOP_GATEWAY_{s.upper()}_ADDR": upstream for s in SERVICES}
    async with gateway_process(
        PIXELSHOP_GATEWAY_PORT="0", PIXELSHOP_GATEWAY_LOG_LEVEL="INFO", **upstreams
    ) as process:
        entry = await read_log(process)
        while entry.get("msg") != "gateway listening":
            entry = await read_log(process)
        assert process.stderr is not None
        drain = asyncio.create_task(process.stderr.read())  # keep the pipe from filling
        yield process.pid, int(str(entry["port"]))
        drain.cancel()


class Hold:
    """Accepted uploads wait here before their last MiB; `waiting` counts them."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.waiting = 0


async def send(
    port: int, head: bytes, body_size: int, body: bytes = b"", hold: Hold | None = None
) -> int:
    """Sends a request, streaming `body_size` zero bytes (or `body`) until the gateway
    answers; returns the status. A refused upload stops sending at once; an accepted one
    keeps its last MiB until `hold` is set, so that it is still in flight meanwhile."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    try:
        writer.write(head)
        if body:
            writer.write(body)
        sent = 0
        while sent < body_size and not answer.done():
            if hold is not None and body_size - sent <= MIB:
                hold.waiting += 1
                released = asyncio.ensure_future(hold.released.wait())
                # No timeout: the test releases the hold in every case (finally).
                await asyncio.wait([answer, released], return_when="FIRST_COMPLETED")
                released.cancel()
                hold.waiting -= 1
                if answer.done():
                    break
            writer.write(CHUNK[: min(MIB, body_size - sent)])
            sent += MIB
            try:
                await writer.drain()
            except ConnectionError:
                break
        status_line = await asyncio.wait_for(answer, 120)
        return int(status_line.split()[1])
    finally:
        answer.cancel()
        writer.close()


async def test_rss_stays_bounded_under_big_uploads_and_bombs(upstream_address: str) -> None:
    size = UPLOAD_LIMIT
    bomb = gzip.compress(b"\0" * size)
    upload_head = (
        b"POST /v1/assets:upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % size
    )
    bomb_head = (
        b"POST /v1/assets:upload HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Encoding: gzip\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    )
    async with listening_gateway(upstream_address) as (pid, port):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            assert (await http.get("/v1/tiers")).status_code == 200  # warm
            baseline = memory_kib(pid, "VmRSS")
            hold = Hold()
            flood = [
                asyncio.create_task(send(port, upload_head, size, hold=hold))
                for _ in range(UPLOADS)
            ]
            flood += [asyncio.create_task(send(port, bomb_head, 0, bomb)) for _ in range(BOMBS)]

            def flood_state() -> str:
                answered = sum(task.done() for task in flood)
                return f"{answered} answered and {hold.waiting} holding of {len(flood)}"

            try:
                # Until every request is answered or holds its last MiB: the peak.
                await eventually(
                    lambda: sum(task.done() for task in flood) + hold.waiting == len(flood),
                    "the flood's peak (every request answered or holding its last MiB)",
                    state=flood_state,
                    timeout=120,
                    interval=0.05,
                )
                small = await http.get("/v1/tiers")
                running = hold.waiting
            finally:
                hold.released.set()
            statuses = await asyncio.gather(*flood)
        peak = memory_kib(pid, "VmHWM")

    assert small.status_code == 200
    assert running > 0, "the small request finished while uploads were still in flight"
    uploads, bombs = statuses[:UPLOADS], statuses[UPLOADS:]
    assert set(bombs) == {415}  # never inflated
    assert 503 in uploads  # the bytes-in-flight bound turned some away (Retry-After)
    assert set(uploads) <= {200, 429, 503}  # 429: the fake upstream's 4 MiB message limit
    grown_mib = (peak - baseline) / 1024
    # What the budget admits (it counts every copy of a body) plus the interpreter's own
    # slack; far below the 2 GiB and more the flood would hold without it.
    bound_mib = INFLIGHT_BUDGET / MIB + 128
    assert grown_mib < bound_mib, f"RSS grew {grown_mib:.0f} MiB (bound {bound_mib:.0f})"
    from gateway.edge import EDGE

    assert (EDGE.bodies.upload_bytes, EDGE.overload.inflight_request_bytes) == (
        UPLOAD_LIMIT,
        INFLIGHT_BUDGET,
    )
