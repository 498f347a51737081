"""Composition root: the aiohttp application, its request path, start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from aiohttp import http_exceptions, web

from gateway import docs
from gateway.cors import CorsPolicy
from gateway.descriptors import DescriptorSet
from gateway.edge import EDGE, LOCAL_REPLIES, NO_STORE
from gateway.errors import ErrorReply, StatusEncoder
from gateway.headers import HeaderError, checked_header, request_id_of, request_metadata
from gateway.headers import response_headers as upstream_response_headers
from gateway.inflight import ByteBudget, Reservation
from gateway.protocol import EdgeRunner, LocalReplies
from gateway.ratelimit import ClientRateLimiter
from gateway.routes import Route, RouteError, RouteTable
from gateway.settings import GatewaySettings, upstream_env_name
from gateway.transcoder import BodyMode, Message, TranscodeError
from gateway.upstreams import Upstreams

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("gateway.access")

# In-flight requests get this long to finish after SIGTERM (Kubernetes waits 30 s by default).
SHUTDOWN_GRACE_SECONDS = 25.0
# aiohttp reads bodies in chunks of this size, pausing the socket beyond twice it.
READ_BUFFER_BYTES = 64 * 1024
# A body is held about three times over at its peak: as read, in the request message, and
# serialized for gRPC. The in-flight budget counts every copy, so it bounds memory itself.
HELD_COPIES = 3
_IDENTITY = "identity"


class LocalError(Exception):
    """A request the edge answers itself (413, 415, 408, 503...): an ErrorReply to send."""

    def __init__(self, reply: ErrorReply, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class ClientGone(Exception):
    """The client closed the connection while its request was being read."""


class Gateway:
    """The HTTP request path: CORS, edge checks, route, rate limit, body, upstream, answer."""

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
        self._budget = ByteBudget(settings.inflight_max_bytes)
        self._upstreams: Upstreams | None = None
        # Rate limits are keyed by the matched RPC: every method with a binding under the
        # limit's prefix shares one bucket per client address (as Envoy's one auth route).
        self._limited: dict[str, ClientRateLimiter] = {}
        self._no_store = {r.method.full_name for r in routes.routes if r.method.carries_credentials}
        for limit in EDGE.rate_limits:
            methods = routes.methods_bound_under(limit.http_path_prefix)
            if any(m in self._no_store for m in methods):
                self._no_store |= methods  # Envoy adds response headers per route
            per_minute = settings.auth_rate_limit_per_minute
            if per_minute > 0 and methods:
                limiter = ClientRateLimiter(per_minute, clock=clock)
                self._limited.update(dict.fromkeys(methods, limiter))

    @property
    def routes(self) -> RouteTable:
        return self._routes

    @property
    def budget(self) -> ByteBudget:
        return self._budget

    @property
    def no_store(self) -> frozenset[str]:
        """Methods answered with Cache-Control: no-store (tokens or signed URLs inside)."""
        return frozenset(self._no_store)

    def render_local_reply(self, http_status: int, message: str) -> tuple[bytes, dict[str, str]]:
        """For the connection layer (gateway/protocol.py): body and headers of a local reply."""
        reply = self._status.local_reply(http_status, message)
        return reply.body, {**reply.headers, "Content-Type": "application/json"}

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
        origin = self._cors.allowed_origin(_ascii_or_none(request.headers.get("Origin")))
        reason = ""
        reservation = self._budget.reservation()
        try:
            response = await self._respond(request, request_id, origin, reservation)
        except LocalError as error:
            reason = error.reason
            response = self._error(error.reply)
            if not request.content.is_eof():
                response.force_close()  # the rest of the body is not worth reading
        except ClientGone:
            reason = "CLIENT_CLOSED"
            response = web.Response(status=499)
        except Exception:
            # Details go to the log with the request id, never to the client.
            logger.exception("unhandled error", extra={"fields": {"request_id": request_id}})
            reason = "INTERNAL"
            response = self._error(
                self._status.gateway_error(
                    500, grpc.StatusCode.INTERNAL, "internal error", reason="INTERNAL"
                )
            )
        finally:
            reservation.release()
        response.headers["X-Request-Id"] = request_id
        if origin is not None:
            response.headers.update(self._cors.response_headers(origin))
        if access_logger.isEnabledFor(logging.INFO):
            fields: dict[str, Any] = {
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_id": request_id,
            }
            if reason:
                fields["reason"] = reason
            access_logger.info("request", extra={"fields": fields})
        return response

    async def _respond(
        self, request: web.Request, request_id: str, origin: str | None, reservation: Reservation
    ) -> web.StreamResponse:
        method = request.method
        if origin is not None and self._cors.is_preflight(method, request.headers):
            return web.Response(status=200, headers=self._cors.preflight_headers())
        self._check_header_size(request)
        try:
            encoding = checked_header(request.headers, "Content-Encoding").strip().lower()
        except HeaderError as error:
            raise self._bad_header(error) from None
        # Before routing, as Envoy's 415 route comes before every other route.
        gzip = self._check_encoding(encoding)
        path, _, query = request.raw_path.partition("?")
        try:
            match = self._routes.match(method, path)
        except TranscodeError as error:
            raise self._local(400, str(error)) from None
        if match is None:
            raise self._local(404, f"no route for {method} {path[:200]}", "ROUTE_NOT_FOUND")
        route = match.route
        limiter = self._limited.get(route.method.full_name)
        if limiter is not None:
            wait = limiter.acquire(request.remote or "unknown")
            if wait > 0:
                raise LocalError(
                    self._status.local_reply(
                        429,
                        "too many requests to the auth endpoints from this address",
                        retry_after_seconds=wait,
                    ),
                    "RATE_LIMITED",
                )
        try:
            content_type = checked_header(request.headers, "Content-Type")
            metadata = request_metadata(request.headers, request_id, request.remote)
        except HeaderError as error:
            raise self._bad_header(error) from None
        limit = (
            self._settings.upload_body_max_bytes
            if route.request.body_mode is BodyMode.RAW
            else self._settings.json_body_max_bytes
        )
        length = request.content_length
        if length is not None and length > limit and not gzip:
            raise self._too_large(limit)
        body = b""
        if route.request.reads_body:
            body = await self._read_body(request, limit, reservation, gzip=gzip)
        try:
            if len(body) > EDGE.bodies.parse_off_loop_bytes:
                # Parsing (or copying) a big body would stall every other client.
                message = await asyncio.to_thread(
                    route.request.build, match.variables, query, body, content_type
                )
            else:
                message = route.request.build(match.variables, query, body, content_type)
        except TranscodeError as error:
            raise self._local(400, str(error)) from None
        del body
        response = await self._call(route, message, metadata)
        if route.method.full_name in self._no_store:
            response.headers["Cache-Control"] = NO_STORE
        return response

    def _check_header_size(self, request: web.Request) -> None:
        """Request line plus headers within edge.HeaderLimits, counted as Envoy counts them."""
        size = len(request.raw_path) + sum(len(k) + len(v) for k, v in request.raw_headers)
        if size > EDGE.headers.max_bytes:
            raise self._local(431, "the request headers are too large")

    def _check_encoding(self, encoding: str) -> bool:
        """True for a gzip body to inflate; LocalError 415 for any encoding not configured."""
        if not encoding or encoding == _IDENTITY:
            return False
        if encoding == self._settings.request_decompression:
            return True
        raise self._local(
            415,
            f"compressed request bodies are not accepted (Content-Encoding {encoding[:32]!r})",
        )

    async def _read_body(
        self, request: web.Request, limit: int, reservation: Reservation, *, gzip: bool
    ) -> bytes:
        """The body, within the size limit, the bytes-in-flight budget and the timeouts."""
        announced = request.content_length
        if announced is not None and not reservation.grow_to(announced * HELD_COPIES):
            raise self._overloaded()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.request_timeout_seconds
        inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if gzip else None
        chunks: list[bytes] = []
        size = 0
        while True:
            wait = min(self._settings.body_idle_timeout_seconds, deadline - loop.time())
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise self._local(408, "the request body did not arrive in time") from None
            except http_exceptions.HttpProcessingError as error:
                logger.info(
                    "malformed request body", extra={"fields": {"kind": type(error).__name__}}
                )
                raise self._local(400, "malformed HTTP request: bad body framing") from None
            except ConnectionError:  # aiohttp's "Connection lost" when the client went away
                raise ClientGone from None
            if not chunk:
                if request.content.is_eof():
                    break
                continue
            if inflate is not None:
                try:
                    chunk = inflate.decompress(chunk, limit - size + 1)
                    if inflate.unconsumed_tail:
                        raise self._too_large(limit)
                except zlib.error:
                    raise self._local(400, "request body is not valid gzip") from None
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            if not reservation.grow_to(size * HELD_COPIES):
                raise self._overloaded()
            chunks.append(chunk)
        if inflate is not None and not inflate.eof:
            raise self._local(400, "request body is not valid gzip: it is cut short")
        return b"".join(chunks)

    async def _call(
        self, route: Route, message: Message, metadata: tuple[tuple[str, str], ...]
    ) -> web.StreamResponse:
        assert self._upstreams is not None, "the application is not running"
        invoke = self._upstreams.callable_for(route.method)
        timeout = self._settings.upstream_timeout(route.method.upstream, route.method.full_name)
        call = invoke(message, metadata=metadata, timeout=timeout)
        try:
            if route.method.server_streaming:
                # Collected before answering, so that a failure mid-stream is still an error.
                body, content_type = route.response.encode_stream([m async for m in call])
            else:
                body, content_type = route.response.encode(await call)
            headers = upstream_response_headers(
                await call.initial_metadata(), await call.trailing_metadata()
            )
        except grpc.aio.AioRpcError as error:
            reply = self._status.from_rpc_error(error)
            headers = upstream_response_headers(error.initial_metadata(), error.trailing_metadata())
            return self._error(reply, headers)
        if content_type:
            headers["Content-Type"] = content_type
        return web.Response(body=body, headers=headers)

    def _local(self, http_status: int, message: str, reason: str = "") -> LocalError:
        reply = self._status.local_reply(http_status, message)
        return LocalError(reply, reason or _reason_of(http_status))

    def _bad_header(self, error: HeaderError) -> LocalError:
        reply = self._status.local_reply(400, str(error), metadata={"header": error.header})
        return LocalError(reply, "BAD_HEADER")

    def _too_large(self, limit: int) -> LocalError:
        return LocalError(
            self._status.local_reply(
                413,
                f"request body is larger than {limit} bytes",
                metadata={"max_bytes": str(limit)},
            ),
            "REQUEST_TOO_LARGE",
        )

    def _overloaded(self) -> LocalError:
        logger.warning(
            "request bytes in flight at the limit",
            extra={"fields": {"limit": self._budget.capacity, "used": self._budget.used}},
        )
        return LocalError(
            self._status.local_reply(
                503,
                "the gateway is busy; retry shortly",
                retry_after_seconds=EDGE.overload.retry_after_seconds,
            ),
            "OVERLOADED",
        )

    @staticmethod
    def _error(reply: ErrorReply, headers: Mapping[str, str] | None = None) -> web.Response:
        merged = {**(headers or {}), **reply.headers, "Content-Type": "application/json"}
        return web.Response(status=reply.http_status, body=reply.body, headers=merged)


def _reason_of(http_status: int) -> str:
    return LOCAL_REPLIES[http_status].reason


def _ascii_or_none(value: str | None) -> str | None:
    return value if value and value.isascii() and value.isprintable() else None


GATEWAY = web.AppKey("gateway", Gateway)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Upstream health is each service's own probe."""
    return web.json_response({"status": "SERVING"})


def create_app(
    settings: GatewaySettings, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The gateway application; routes are compiled here, channels open when it starts."""
    descriptors = DescriptorSet.load(settings.descriptor_set)
    routes = RouteTable.from_descriptor_set(descriptors)
    gateway = Gateway(settings, descriptors, routes, clock=clock)
    # Body limits are the gateway's own (per route kind); aiohttp's is only a backstop.
    app = web.Application(
        client_max_size=max(settings.upload_body_max_bytes, settings.json_body_max_bytes) + 1
    )
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.upstream_channels)
    app.router.add_get("/healthz", healthz)
    docs.add_routes(app, descriptors, routes)
    # Every other path goes to the transcoder, which matches the raw path itself.
    app.router.add_route("*", r"/{path:[\s\S]*}", gateway.handle)
    return app


async def start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving `app`; returns the runner (for cleanup) and the bound port."""
    gateway = app[GATEWAY]
    settings = gateway._settings
    runner = EdgeRunner(
        app,
        replies=LocalReplies(gateway.render_local_reply),
        headers_timeout=settings.request_headers_timeout_seconds,
        access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        # Bodies are never inflated behind the gateway's back (a 63 KB gzip bomb is 64 MiB).
        auto_decompress=False,
        keepalive_timeout=settings.idle_timeout_seconds,
        max_line_size=EDGE.headers.max_bytes,
        max_field_size=EDGE.headers.max_bytes,
        max_headers=EDGE.headers.max_count,
        read_bufsize=READ_BUFFER_BYTES,
        # What is left of a refused body is read and dropped for at most this long.
        lingering_time=2.0,
    )
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
                "docs": f"http://{settings.host}:{port}{docs.DOCS_PATH}",
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
