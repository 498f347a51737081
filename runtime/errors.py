"""Domain errors: raised by service code, turned into google.rpc.Status by one interceptor.

Every error carries a gRPC code and an `ErrorInfo` reason (UPPER_SNAKE_CASE); invalid
arguments also carry a `BadRequest` field violation naming the field, so a client (and
the gateway's JSON) can point at the exact input. Expected business errors never become
INTERNAL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "pixelshop.app"


class DomainError(Exception):
    """Base of every expected error; subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
        )
        return [info]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details()
        )


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}", reason=reason, metadata={"field": field})
        self.field = field
        self.description = message

    def details(self) -> list[any_pb2.Any]:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=self.field, description=self.description
                    )
                ]
            )
        )
        return [*super().details(), bad_request]


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    """Also what another user's private resource answers: existence is not revealed."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(self, resource: str, resource_id: str = "") -> None:
        suffix = f" {resource_id}" if resource_id else ""
        super().__init__(
            f"{resource}{suffix} not found",
            metadata={"resource": resource, **({"id": resource_id} if resource_id else {})},
        )


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent change won (optimistic concurrency, an edit already running)."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    """Over a quota or a rate limit; `retry_after` (seconds) becomes a RetryInfo detail."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retry_after: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        details = super().details()
        if self.retry_after is not None:
            seconds = max(1, math.ceil(self.retry_after))
            retry = any_pb2.Any()
            retry.Pack(
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
            )
            details.append(retry)
        return details


class QuotaExceeded(ResourceExhausted):
    default_reason = "QUOTA_EXCEEDED"


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unimplemented(DomainError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


def internal_status() -> status_pb2.Status:
    """What an unexpected error answers: no trace, no SQL, nothing to learn from."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
