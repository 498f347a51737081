"""The one server interceptor every service runs.

For each call it: takes the request id from metadata (or makes one), authenticates the
caller as the method requires (anonymous, user access token, or service credential),
refuses the token of an account deleted since it was issued (`AuthPolicy.refused_user`),
runs the handler, turns a DomainError into a google.rpc.Status with details (and a lost
database race into ABORTED, a timeout into DEADLINE_EXCEEDED, a lost database into
UNAVAILABLE), turns any other exception into a bare INTERNAL (logged with its trace,
never sent), and writes one structured log line and one metric with the method, the
code answered and the duration. A handler may answer its message already serialized,
as `Encoded` bytes, which are sent unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError

from runtime.auth import SERVICE_TOKEN_METADATA, AccessTokenVerifier, ServiceTokens, bearer_token
from runtime.context import client_var, principal_var, request_id_var, service_caller_var
from runtime.db import connection_lost
from runtime.errors import (
    Aborted,
    DeadlineExceeded,
    DomainError,
    Unauthenticated,
    Unavailable,
    internal_status,
)
from runtime.metrics import Metrics
from runtime.tombstones import DELETED_MESSAGE

log = logging.getLogger("pixelshop.rpc")

MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class AuthPolicy:
    """Which methods need what. Methods of services outside `user_services` and
    `internal_services` (health, reflection) pass through untouched."""

    user_services: frozenset[str]
    internal_services: frozenset[str] = frozenset()
    # Full method names ("/pkg.Service/Method") callable without a token.
    anonymous_methods: frozenset[str] = field(default_factory=frozenset)
    # Answers True for a deleted account (runtime.tombstones): its still-valid access token
    # gets UNAUTHENTICATED on every method that takes a user token.
    refused_user: Callable[[uuid.UUID], bool] | None = None

    def requirement(self, method: str) -> str | None:
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if service in self.internal_services:
            return "service"
        if service in self.user_services:
            return "anonymous" if method in self.anonymous_methods else "user"
        return None


class Encoded:
    """A response message its handler has already serialized (a history page framed from
    encoded edits, ADR 0023): the interceptor's handlers send its bytes as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _sending_encoded(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serialize is None:
        return None

    def serializer(message: Any) -> bytes:
        return message.data if type(message) is Encoded else serialize(message)

    return serializer


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            result[key] = value
    return result


def _lost_race(error: BaseException) -> bool:
    """A deadlock or serialization failure: Postgres rolled back, the call may be retried."""
    cause = getattr(error, "orig", None)
    original = getattr(cause, "__cause__", None) or cause
    return isinstance(
        original,
        (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError),
    ) or getattr(cause, "sqlstate", None) in ("40P01", "40001")


def _lost_connection(error: BaseException) -> bool:
    """A dropped or refused database connection: the caller may simply retry."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    cause = error.orig if isinstance(error, DBAPIError) else error
    return cause is not None and connection_lost(cause)


class CallInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        policy: AuthPolicy,
        verifier: AccessTokenVerifier,
        service_tokens: ServiceTokens,
        metrics: Metrics | None = None,
    ) -> None:
        self._policy = policy
        self._verifier = verifier
        self._service_tokens = service_tokens
        self._metrics = metrics
        # The wrapped handler per method, built on its first call: the server answers the
        # same handler object for a method every time, so every later call reuses it.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        requirement = self._policy.requirement(method)
        if handler is None or requirement is None:
            return handler
        wrapped = self._wrap(handler, method, requirement)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler, method: str, requirement: str
    ) -> grpc.RpcMethodHandler:
        serializer = _sending_encoded(handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, requirement),
                request_deserializer=handler.request_deserializer,
                response_serializer=serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method, requirement),
                request_deserializer=handler.request_deserializer,
                response_serializer=serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, requirement),
                request_deserializer=handler.request_deserializer,
                response_serializer=serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method, requirement),
            request_deserializer=handler.request_deserializer,
            response_serializer=serializer,
        )

    async def _enter(self, context: grpc.aio.ServicerContext[Any, Any], requirement: str) -> None:
        metadata = _metadata(context)
        request_id = metadata.get("x-request-id", "")[:MAX_REQUEST_ID] or uuid.uuid4().hex
        request_id_var.set(request_id)
        forwarded = metadata.get("x-forwarded-for", "")
        address = forwarded.split(",")[-1].strip() if forwarded else context.peer()
        # gRPC clients overwrite user-agent with their own; the gateway forwards the browser's.
        agent = metadata.get("x-forwarded-user-agent") or metadata.get("user-agent", "")
        client_var.set((address, agent[:512]))
        principal_var.set(None)
        service_caller_var.set(None)
        if requirement == "service":
            token = metadata.get(SERVICE_TOKEN_METADATA, "")
            service_caller_var.set(self._service_tokens.verify(token))
        elif requirement == "user":
            authorization = metadata.get("authorization", "")
            if not authorization:
                raise Unauthenticated("a valid access token is required")
            principal = await self._verifier.verify(bearer_token(authorization))
            refused = self._policy.refused_user
            if refused is not None and refused(principal.user_id):
                raise Unauthenticated(DELETED_MESSAGE, reason="ACCOUNT_DELETED")
            principal_var.set(principal)

    def _failure(self, error: BaseException, method: str) -> Any:
        """The status a failed call answers (a `grpc_status` Status: code, details and the
        google.rpc.Status trailer), logged as the error deserves."""
        if isinstance(error, DomainError):
            status = error.to_status()
        elif _lost_race(error):
            status = Aborted("a concurrent change got in the way; retry").to_status()
        elif isinstance(error, TimeoutError):
            log.warning("timed out in %s", method, exc_info=error)
            status = DeadlineExceeded("the call took too long; retry").to_status()
        elif _lost_connection(error):
            log.warning("database unavailable in %s: %s", method, type(error).__name__)
            status = Unavailable("the database is unavailable; retry shortly").to_status()
        else:
            log.error("unhandled error in %s", method, exc_info=error)
            status = internal_status()
        return rpc_status.to_status(status)

    def _finish(self, method: str, start: float, code: grpc.StatusCode) -> None:
        duration = time.perf_counter() - start
        if self._metrics is not None:
            self._metrics.observe_rpc(method, code.name, duration)
        if log.isEnabledFor(logging.INFO):  # no record built when the access log is off
            log.info(
                "rpc",
                extra={
                    "method": method,
                    "code": code.name,
                    "duration_ms": round(duration * 1000, 2),
                },
            )

    def _wrap_unary(self, behavior: Any, method: str, requirement: str) -> Any:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                await self._enter(context, requirement)
                return await behavior(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                code = context.code() or grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                failure = self._failure(error, method)
                code = failure.code
                await context.abort(failure.code, failure.details, failure.trailing_metadata)
            finally:
                self._finish(method, start, code)

        return wrapped

    def _wrap_stream(self, behavior: Any, method: str, requirement: str) -> Any:
        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                await self._enter(context, requirement)
                async for response in behavior(request, context):
                    yield response
            except (grpc.aio.AbortError, asyncio.CancelledError):
                code = context.code() or grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                failure = self._failure(error, method)
                code = failure.code
                await context.abort(failure.code, failure.details, failure.trailing_metadata)
            finally:
                self._finish(method, start, code)

        return wrapped
