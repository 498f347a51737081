"""Composition root: the aiohttp application, its request path, start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping

import grpc
from aiohttp import web

from gateway.cors import CorsPolicy
from gateway.descriptors import DescriptorSet
from gateway.errors import ErrorReply, StatusEncoder
from gateway.headers import request_id_of, request_metadata, response_headers
from gateway.ratelimit import ClientRateLimiter
from gateway.routes import Route, RouteError, RouteTable
from gateway.settings import GatewaySettings, upstream_env_name
from gateway.transcoder import Message, TranscodeError
from gateway.upstreams import Upstreams

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("gateway.access")

AUTH_PATH_PREFIX = "/v1/auth:"
# In-flight requests get this long to finish after SIGTERM (Kubernetes waits 30 s by default).
SHUTDOWN_GRACE_SECONDS = 25.0


class Gateway:
    """The HTTP request path: CORS, rate limit, route, transcode, call upstream, answer."""

    def __init__(
        self,
        settings: GatewaySettings,
        descriptors: DescriptorSet,
        routes: RouteTable,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = sorted({r.method.upstream for r in routes.routes} - set(settings.upstreams))
        if missing:
            raise RouteError(
                "no upstream address for service(s) "
                + ", ".join(f"{s} (set {upstream_env_name(s)})" for s in missing)
            )
        self._settings = settings
        self._routes = routes
        self._status = StatusEncoder(descriptors.pool)
        self._cors = CorsPolicy(settings.cors_origins)
        self._limiter = (
            ClientRateLimiter(settings.auth_rate_limit_per_minute, clock=clock)
            if settings.auth_rate_limit_per_minute > 0
            else None
        )
        self._upstreams: Upstreams | None = None

    @property
    def routes(self) -> RouteTable:
        return self._routes

    async def upstream_channels(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: channels live exactly as long as the server runs."""
        self._upstreams = Upstreams(
            self._settings.upstreams,
            {r.method.grpc_path: r.method for r in self._routes.routes}.values(),
        )
        try:
            yield
        finally:
            upstreams, self._upstreams = self._upstreams, None
            await upstreams.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request_id_of(request.headers.get("X-Request-Id"))
        origin = self._cors.allowed_origin(request.headers.get("Origin"))
        try:
            response = await self._respond(request, request_id, origin)
        except Exception:
            # Details go to the log with the request id, never to the client.
            logger.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            response = self._error(
                self._status.gateway_error(
                    500, grpc.StatusCode.INTERNAL, "internal error", reason="INTERNAL"
                )
            )
        response.headers["X-Request-Id"] = request_id
        if origin is not None:
            response.headers.update(self._cors.response_headers(origin))
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "request",
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.path,
                        "status": response.status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "request_id": request_id,
                    }
                },
            )
        return response

    async def _respond(
        self, request: web.Request, request_id: str, origin: str | None
    ) -> web.StreamResponse:
        method = request.method
        path, _, query = request.raw_path.partition("?")
        if origin is not None and self._cors.is_preflight(method, request.headers):
            return web.Response(status=200, headers=self._cors.preflight_headers())
        if self._limiter is not None and path.startswith(AUTH_PATH_PREFIX):
            wait = self._limiter.acquire(request.remote or "unknown")
            if wait > 0:
                return self._error(
                    self._status.gateway_error(
                        429,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "too many requests to the auth endpoints from this address",
                        reason="RATE_LIMITED",
                        retry_after_seconds=wait,
                    )
                )
        length = request.content_length
        if length is not None and length > self._settings.max_body_bytes:
            return self._too_large()
        try:
            match = self._routes.match(method, path)
            if match is None:
                return self._error(
                    self._status.gateway_error(
                        404,
                        grpc.StatusCode.NOT_FOUND,
                        f"no route for {method} {path[:200]}",
                        reason="ROUTE_NOT_FOUND",
                    )
                )
            body = b""
            if match.route.request.reads_body:
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    return self._too_large()
            message = match.route.request.build(
                match.variables, query, body, request.headers.get("Content-Type", "")
            )
        except TranscodeError as error:
            return self._error(
                self._status.gateway_error(
                    400, grpc.StatusCode.INVALID_ARGUMENT, str(error), reason="BAD_REQUEST"
                )
            )
        metadata = request_metadata(request.headers, request_id, request.remote)
        return await self._call(match.route, message, metadata)

    async def _call(
        self, route: Route, message: Message, metadata: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        assert self._upstreams is not None, "the application is not running"
        invoke = self._upstreams.callable_for(route.method)
        call = invoke(message, metadata=metadata, timeout=self._settings.timeout_seconds)
        try:
            if route.method.server_streaming:
                # Collected before answering, so that a failure mid-stream is still an error.
                body, content_type = route.response.encode_stream([m async for m in call])
            else:
                body, content_type = route.response.encode(await call)
            headers = response_headers(
                await call.initial_metadata(), await call.trailing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            reply = self._status.from_rpc_error(error)
            headers = response_headers(error.initial_metadata(), error.trailing_metadata())
            return self._error(reply, headers)
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(body=body, headers=headers)

    def _too_large(self) -> web.Response:
        return self._error(
            self._status.gateway_error(
                413,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body is larger than {self._settings.max_body_bytes} bytes",
                reason="REQUEST_TOO_LARGE",
                metadata={"max_bytes": str(self._settings.max_body_bytes)},
            )
        )

    @staticmethod
    def _error(reply: ErrorReply, headers: Mapping[str, str] | None = None) -> web.Response:
        merged = {**(headers or {}), **reply.headers, "Content-Type": "application/json"}
        return web.Response(status=reply.http_status, body=reply.body, headers=merged)


GATEWAY = web.AppKey("gateway", Gateway)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Upstream health is each service's own probe."""
    return web.json_response({"status": "SERVING"})


def create_app(
    settings: GatewaySettings, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The gateway application; routes are compiled here, channels open when it starts."""
    descriptors = DescriptorSet.load(settings.descriptor_set)
    gateway = Gateway(
        settings, descriptors, RouteTable.from_descriptor_set(descriptors), clock=clock
    )
    # The body limit is checked by aiohttp while reading (and by us from Content-Length).
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.upstream_channels)
    app.router.add_get("/healthz", healthz)
    # Every other path goes to the transcoder, which matches the raw path itself.
    app.router.add_route("*", r"/{path:[\s\S]*}", gateway.handle)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving `app`; returns the runner (for cleanup) and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


async def serve(settings: GatewaySettings) -> None:
    """Runs the gateway until SIGINT or SIGTERM, then drains in-flight requests and stops."""
    app = create_app(settings)
    runner, port = await start(app, settings.host, settings.port)
    logger.info(
        "gateway listening",
        extra={
            "fields": {
                "host": settings.host,
                "port": port,
                "routes": len(app[GATEWAY].routes.routes),
            }
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        logger.info("gateway stopping")
        await runner.cleanup()
        logger.info("gateway stopped")
