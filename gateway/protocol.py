"""The HTTP/1.1 connection, hardened: what aiohttp does before a request reaches the gateway.

aiohttp answers malformed requests itself, as text/plain, and logs each one at error level
with a traceback whose message quotes the offending bytes (an Authorization header too).
`EdgeRequestHandler` answers them like every other local reply (google.rpc.Status JSON,
codes from gateway/edge.py), logs one line at info without header values, and closes a
connection whose request headers do not arrive within the headers timeout (slowloris).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger("gateway.edge")

# What a malformed request is told, by the kind of parser error; never its bytes.
_PARSER_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (http_exceptions.LineTooLong, 431, "the request line or a header is too large"),
    (http_exceptions.BadHttpMethod, 400, "malformed HTTP request: bad method"),
    (http_exceptions.BadStatusLine, 400, "malformed HTTP request: bad request line"),
    (http_exceptions.InvalidURLError, 400, "malformed HTTP request: bad URL"),
    (http_exceptions.InvalidHeader, 400, "malformed HTTP request: bad header"),
    (http_exceptions.TransferEncodingError, 400, "malformed HTTP request: bad chunked body"),
    (http_exceptions.ContentLengthError, 400, "malformed HTTP request: bad Content-Length"),
    (http_exceptions.ContentEncodingError, 400, "request body does not match its encoding"),
)
TOO_MANY_HEADERS = "Too many headers"  # aiohttp's message starts so
# After a 408 on headers, what the client still sends is read and dropped for this long,
# so that closing does not reset the connection before the client has read the answer.
LINGER_SECONDS = 1.0


class LocalReplies:
    """Builds the JSON error responses the connection layer sends (set by the Gateway)."""

    def __init__(self, render: Any) -> None:
        # render(http_status, message) -> (body bytes, headers)
        self.render = render


def parser_error_reply(error: BaseException | None) -> tuple[int, str, str]:
    """(HTTP status, message for the client, kind for the log) of a parser error."""
    if isinstance(error, http_exceptions.BadHttpMessage) and str(error.message).startswith(
        TOO_MANY_HEADERS
    ):
        return 431, "the request has too many headers", "TooManyHeaders"
    for kind, status, message in _PARSER_ERRORS:
        if isinstance(error, kind):
            return status, message, type(error).__name__
    return 400, "malformed HTTP request", type(error).__name__ if error else "Unknown"


class EdgeServer(web.Server):
    """aiohttp's server, making `EdgeRequestHandler`s."""

    def __init__(
        self, *args: Any, replies: LocalReplies, headers_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.replies = replies
        self.headers_timeout = headers_timeout

    def __call__(self) -> RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRequestHandler(RequestHandler):
    """One connection. Adds the request headers timeout and JSON answers to parser errors."""

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._replies = manager.replies
        self._headers_timeout = manager.headers_timeout
        self._headers_timer: asyncio.TimerHandle | None = None
        self._handling = False

    def data_received(self, data: bytes) -> None:
        parsed_before = self._request_count
        super().data_received(data)
        if self._request_count != parsed_before:
            self._stop_headers_timer()  # a request's headers are complete
        elif data and self._awaiting_headers() and self._headers_timer is None:
            # The first bytes of a request: its headers must be complete in time. The
            # connection is no longer idle (as in Envoy, the stream has begun).
            if self._keepalive_handle is not None:
                self._keepalive_handle.cancel()
                self._keepalive_handle = None
            self._headers_timer = self._loop.call_later(
                self._headers_timeout, self._headers_timed_out
            )

    def _awaiting_headers(self) -> bool:
        """No request is queued or being handled: incoming bytes start a new request."""
        return not self._messages and not self._request_in_progress and not self._upgraded

    def _stop_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_timed_out(self) -> None:
        self._headers_timer = None
        if self.transport is None or not self._awaiting_headers():
            return
        logger.info(
            "request headers timed out",
            extra={"fields": {"status": 408, "reason": "REQUEST_TIMEOUT", "peer": self._peer()}},
        )
        body, headers = self._replies.render(408, "request headers not received in time")
        self.transport.write(_raw_response(408, "Request Timeout", body, headers))
        self._close = True  # data_received ignores what else arrives
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._loop.call_later(LINGER_SECONDS, self.force_close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_headers_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Parser errors (and anything that escaped the gateway): JSON, one log line."""
        if status == 400 or isinstance(exc, http_exceptions.HttpProcessingError):
            status, text, kind = parser_error_reply(exc)
            logger.info(
                "malformed request",
                extra={"fields": {"status": status, "kind": kind, "peer": self._peer()}},
            )
        else:
            text = "internal error" if status == 500 else "request timed out"
            logger.error(
                "request failed outside the gateway",
                extra={"fields": {"status": status, "kind": type(exc).__name__}},
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        body, headers = self._replies.render(status, text)
        response = web.Response(status=status, body=body, headers=headers)
        response.force_close()
        return response

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _raw_response(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("ascii") + body


class EdgeRunner(web.AppRunner):
    """An AppRunner whose connections are `EdgeRequestHandler`s."""

    def __init__(
        self,
        app: web.Application,
        *,
        replies: LocalReplies,
        headers_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._replies = replies
        self._headers_timeout = headers_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return EdgeServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            replies=self._replies,
            headers_timeout=self._headers_timeout,
            **server._kwargs,
        )
