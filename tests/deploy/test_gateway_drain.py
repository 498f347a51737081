"""The gateway pod's preStop hook (deploy/k8s/base/gateway/drain.sh, ADR 0024), run with
bash against a stand-in for Envoy's admin interface.

The stand-in answers the way Envoy's admin does where the hook depends on it: a mutation
only on POST (a GET is refused with 400), `/stats?filter=REGEX` as `name: value` text
lines of the stats whose names match, streamed with chunked encoding and split mid-line.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.conftest import K8S
from tools import envoy_config

DRAIN_HOOK = K8S / "base" / "gateway" / "drain.sh"
IN_FLIGHT = f"http.{envoy_config.PUBLIC_STAT_PREFIX}.downstream_rq_active"
DRAIN_PATH = "/drain_listeners"
# Generous: only a hook that hangs (waits past its deadline) gets near it.
HANG = 60


class FakeEnvoyAdmin:
    """Envoy's admin interface on 127.0.0.1. `in_flight` is what the public listener's
    gauge reads on each /stats request (the last value repeats; None: no such gauge)."""

    def __init__(
        self,
        in_flight: Sequence[int | None],
        *,
        drain_status: int = 200,
        chunked: bool = True,
    ) -> None:
        self.in_flight = list(in_flight)
        self.drain_status = drain_status
        self.chunked = chunked
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        admin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                admin.answer(self, "GET")

            def do_POST(self) -> None:
                admin.answer(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def stats(self) -> dict[str, int]:
        """Every stat Envoy would list, the public gauge's value taken from the script."""
        with self._lock:
            value = self.in_flight.pop(0) if len(self.in_flight) > 1 else self.in_flight[0]
        known = {
            # The admin interface counts the hook's own request; the ops listener the probes.
            "http.admin.downstream_rq_active": 1,
            "http.ops.downstream_rq_active": 2,
            "listener.0.0.0.0_8080.downstream_cx_active": 12,
        }
        if value is not None:
            known[IN_FLIGHT] = value
        return known

    def answer(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self.requests.append((method, handler.path))
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == DRAIN_PATH:
            if method != "POST":
                status, body = 400, "This endpoint requires POST.\n"
            else:
                status, body = self.drain_status, "OK\n"
        elif url.path == "/stats" and method == "GET":
            pattern = re.compile(query.get("filter", [""])[0])
            lines = [f"{name}: {value}" for name, value in sorted(self.stats().items())]
            status, body = 200, "".join(f"{line}\n" for line in lines if pattern.search(line))
        else:
            status, body = 404, "invalid path\n"
        data = body.encode()
        handler.send_response(status)
        handler.send_header("content-type", "text/plain; charset=UTF-8")
        if self.chunked:
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            # Small chunks, so a line arrives in pieces as it may from Envoy.
            for start in range(0, len(data), 7):
                piece = data[start : start + 7]
                handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        else:
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

    def stats_reads(self) -> list[str]:
        return [path for method, path in self.requests if path.startswith("/stats")]

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeEnvoyAdmin]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join()


def run_hook(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash, "bash is part of the machine image (and of the Envoy image the hook runs in)"
    return subprocess.run(
        [
            bash,
            str(DRAIN_HOOK),
            "--admin",
            f"127.0.0.1:{port}",
            "--stat",
            IN_FLIGHT,
            "--interval",
            "0.05",
            # Not PID 1's stderr as in the pod: this machine's init is not Envoy.
            "--log",
            "/dev/stderr",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_hook_posts_the_drain_then_returns_once_no_request_is_in_flight(chunked: bool) -> None:
    with FakeEnvoyAdmin([3, 2, 2, 0], chunked=chunked).running() as admin:
        done = run_hook(admin.port, "--deadline-seconds", "60", "--min-seconds", "0")
    assert done.returncode == 0, done.stderr
    method, path = admin.requests[0]
    url = urllib.parse.urlsplit(path)
    assert (method, url.path) == ("POST", DRAIN_PATH)
    # Graceful: the listener keeps accepting (with `Connection: close`) until
    # --drain-time-s; inbound only: the ops listener keeps serving probes and Prometheus.
    assert set(urllib.parse.parse_qs(url.query, keep_blank_values=True)) == {
        "graceful",
        "inboundonly",
    }
    # It asked for the public listener's gauge until it read 0, and then stopped.
    assert admin.stats_reads() == [f"/stats?filter={IN_FLIGHT}"] * 4
    assert len(admin.requests) == 5
    assert "drained" in done.stderr


def test_hook_stays_for_its_minimum_even_with_nothing_in_flight() -> None:
    """The endpoint's removal needs a moment to reach kube-proxy and the load balancer;
    until then new requests may still arrive."""
    with FakeEnvoyAdmin([0]).running() as admin:
        done = run_hook(admin.port, "--deadline-seconds", "60", "--min-seconds", "1")
    assert done.returncode == 0, done.stderr
    assert len(admin.stats_reads()) >= 2


def test_hook_gives_up_at_its_deadline() -> None:
    with FakeEnvoyAdmin([5]).running() as admin:
        done = run_hook(admin.port, "--deadline-seconds", "1", "--min-seconds", "0")
    assert done.returncode == 1
    assert "gave up" in done.stderr
    assert "5 requests in flight" in done.stderr
    assert len(admin.stats_reads()) >= 2


def test_hook_waits_for_the_requests_in_flight_when_envoy_refuses_the_drain() -> None:
    with FakeEnvoyAdmin([1, 1, 0], drain_status=503).running() as admin:
        done = run_hook(admin.port, "--deadline-seconds", "60", "--min-seconds", "0")
    # Flagged (the kubelet records a failed hook), but only once nothing is in flight.
    assert done.returncode == 1
    assert "refused the drain (HTTP 503" in done.stderr
    assert len(admin.stats_reads()) == 3


def test_hook_never_takes_a_missing_gauge_for_zero() -> None:
    with FakeEnvoyAdmin([None]).running() as admin:
        done = run_hook(admin.port, "--deadline-seconds", "1", "--min-seconds", "0")
    assert done.returncode == 1
    assert "unknown number of requests in flight" in done.stderr
    assert len(admin.stats_reads()) >= 2


def test_hook_returns_at_once_when_no_envoy_answers() -> None:
    # A deadline the test would not wait for: returning before HANG shows it did not wait.
    done = run_hook(closed_port(), "--deadline-seconds", "900")
    assert done.returncode == 1
    assert "no Envoy to drain" in done.stderr


@pytest.mark.parametrize(
    "options",
    [(), ("--deadline-seconds", "soon"), ("--deadline-seconds", "9", "--admin", "127.0.0.1")],
    ids=["no-deadline", "bad-deadline", "admin-without-port"],
)
def test_hook_refuses_bad_options(options: tuple[str, ...]) -> None:
    with FakeEnvoyAdmin([0]).running() as admin:
        done = run_hook(admin.port, *options)
    assert done.returncode == 2
    assert "usage" in done.stderr
    assert not admin.requests
