"""Errors as `google.rpc.Status` JSON with Envoy's gRPC -> HTTP status mapping.

Upstream errors keep the Status the service sent in the `grpc-status-details-bin` trailer
(Envoy's `convert_grpc_status: true`); errors the gateway raises itself (no route, bad JSON,
too large, rate limited) use the same shape with a google.rpc.ErrorInfo detail.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

from gateway.edge import ERROR_DOMAIN, LOCAL_REPLIES

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Envoy's mapping (source/common/grpc/status.cc); everything else is 500.
HTTP_STATUS_BY_GRPC_CODE: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def http_status_of(code: grpc.StatusCode) -> int:
    return HTTP_STATUS_BY_GRPC_CODE.get(code, 500)


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error response, ready to send: HTTP status, Status JSON, extra headers."""

    http_status: int
    body: bytes
    headers: Mapping[str, str]


class StatusEncoder:
    """Prints google.rpc.Status as JSON, resolving `details` types in the gateway's pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def from_rpc_error(self, error: grpc.aio.AioRpcError) -> ErrorReply:
        code = error.code()
        status = _status_from_trailers(error.trailing_metadata())
        if status is None:
            status = status_pb2.Status(code=code.value[0], message=error.details() or "")
        headers = {}
        retry_after = _retry_after(status)
        if retry_after is not None and code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            headers["Retry-After"] = retry_after
        return ErrorReply(http_status_of(code), self.encode(status), headers)

    def gateway_error(
        self,
        http_status: int,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> ErrorReply:
        """An error the gateway answers itself, without calling upstream."""
        status = status_pb2.Status(code=code.value[0], message=message)
        info = error_details_pb2.ErrorInfo(
            reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata or {})
        )
        status.details.add().Pack(info)
        headers = {}
        if retry_after_seconds is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(retry_after_seconds * 1e9))
            status.details.add().Pack(retry)
            headers["Retry-After"] = str(max(1, math.ceil(retry_after_seconds)))
        return ErrorReply(http_status, self.encode(status), headers)

    def local_reply(
        self,
        http_status: int,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after_seconds: float | None = None,
    ) -> ErrorReply:
        """An answer the edge gives itself: code and reason from edge.LOCAL_REPLIES, the
        table Envoy's local_reply_config is generated from."""
        reply = LOCAL_REPLIES[http_status]
        return self.gateway_error(
            http_status,
            grpc.StatusCode[_CODE_NAMES[reply.grpc_code]],
            message,
            reason=reply.reason,
            metadata=metadata,
            retry_after_seconds=retry_after_seconds,
        )

    def encode(self, status: Any) -> bytes:
        try:
            printed = json_format.MessageToDict(status, descriptor_pool=self._pool)
        except (TypeError, KeyError, json_format.Error):
            # A detail of a type the pool does not know: keep the rest rather than fail.
            printed = json_format.MessageToDict(
                self._known_details_only(status), descriptor_pool=self._pool
            )
        return json.dumps(printed, ensure_ascii=False, separators=(",", ":")).encode()

    def _known_details_only(self, status: Any) -> Any:
        kept = status_pb2.Status(code=status.code, message=status.message)
        for detail in status.details:
            try:
                self._pool.FindMessageTypeByName(detail.TypeName())
            except KeyError:
                logger.warning("dropping error detail of unknown type %s", detail.type_url)
                continue
            kept.details.append(detail)
        return kept


def _status_from_trailers(trailers: Any) -> Any | None:
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer: fall back to code + message
                logger.warning("ignoring a malformed %s trailer", STATUS_DETAILS_KEY)
                return None
    return None


def _retry_after(status: Any) -> str | None:
    """Seconds from a google.rpc.RetryInfo detail, rounded up, as a Retry-After value."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return str(max(0, math.ceil(retry.retry_delay.ToNanoseconds() / 1e9)))
    return None
