"""grpc.aio server bootstrap shared by every service.

`start_server` wires what every service has (the call interceptor, health for the empty
name and each service name, reflection, metrics) around the servicers a service's
composition root passes in, and answers a `RunningServer` whose `port` is the bound one
(tests pass port 0). `serve` runs a server until SIGINT/SIGTERM and shuts down
gracefully: health flips to NOT_SERVING, in-flight calls get the grace period, then the
service's own resources close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runtime.auth import AccessTokenVerifier, JwksKeySource, ServiceTokens
from runtime.config import ServiceSettings
from runtime.interceptors import AuthPolicy, CallInterceptor
from runtime.metrics import Metrics

log = logging.getLogger("pixelshop.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Two processes must never share a port silently.
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass(frozen=True)
class Registration:
    """One gRPC service a server exposes."""

    name: str  # full proto name, e.g. "pixelshop.identity.v1.IdentityService"
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    metrics: Metrics
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    metrics_server: asyncio.Server | None = None

    async def stop(self, grace: float = 5.0) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.metrics_server is not None:
            self.metrics_server.close()
        for close in reversed(self.on_close):
            with contextlib.suppress(Exception):
                await close()


def jwks_verifier(
    settings: ServiceSettings, fetch_jwks: Callable[[], Awaitable[Any]]
) -> AccessTokenVerifier:
    return AccessTokenVerifier(
        JwksKeySource(fetch_jwks), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )


async def start_server(
    settings: ServiceSettings,
    registrations: Sequence[Registration],
    policy: AuthPolicy,
    verifier: AccessTokenVerifier,
    *,
    port: int | None = None,
    metrics: Metrics | None = None,
) -> RunningServer:
    metrics = metrics or Metrics(settings.service_name)
    tokens = ServiceTokens(settings.internal_secret.reveal(), settings.service_name)
    server = grpc.aio.server(
        interceptors=[CallInterceptor(policy, verifier, tokens, metrics)], options=SERVER_OPTIONS
    )
    names = [r.name for r in registrations]
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{settings.host}:{settings.port if port is None else port}")
    if bound == 0:
        raise RuntimeError(f"{settings.service_name} could not listen on {settings.host}:{port}")
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, bound, health_servicer, names, metrics)
    if settings.metrics_port:
        running.metrics_server = await metrics.serve(settings.host, settings.metrics_port)
    log.info("listening", extra={"port": bound, "services": names})
    return running


async def serve(running: RunningServer, grace: float) -> None:
    """Runs until SIGINT or SIGTERM, then shuts down gracefully."""
    # Everything built at start-up (modules, the composition root) lives as long as the
    # process: moved out of the collector's generations, it is no longer walked by every
    # full collection, which otherwise lands as a pause of milliseconds in some request.
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": grace})
    await running.stop(grace)
