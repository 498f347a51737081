"""Quota reservations with billing: reserve before the side effect, then commit or release.

`Quota` is what assets and projects depend on. `BillingQuota` talks to the billing
service (the default everywhere); `UnlimitedQuota` grants everything and is only an
explicit opt-out (PIXELSHOP_<SVC>_QUOTA=unlimited). Metrics are the domain enum
`runtime.usage.Metric` (re-exported here); their protobuf numbers appear only in this
module (`metric_number`, `metric_of`), which billing's own API uses too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

import grpc
from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc

from runtime.clients import PeerChannel
from runtime.errors import FailedPrecondition, QuotaExceeded, Unauthenticated
from runtime.peers.errors import Verdict, peer_error
from runtime.usage import Metric

__all__ = [
    "METRIC_NUMBERS",
    "BillingQuota",
    "Metric",
    "Quota",
    "UnlimitedQuota",
    "metric_number",
    "metric_of",
]

# Each metric's `billing.v1.UsageMetric` number: the one mapping, both ways.
METRIC_NUMBERS: Mapping[Metric, billing_pb2.UsageMetric] = {
    Metric.AI_EDITS: billing_pb2.USAGE_METRIC_AI_EDITS,
    Metric.STORAGE_BYTES: billing_pb2.USAGE_METRIC_STORAGE_BYTES,
    Metric.PROJECTS: billing_pb2.USAGE_METRIC_PROJECTS,
}
_METRICS_BY_NUMBER: dict[int, Metric] = {int(n): metric for metric, n in METRIC_NUMBERS.items()}


def metric_number(metric: Metric) -> billing_pb2.UsageMetric:
    """The protobuf number of a metric."""
    return METRIC_NUMBERS[metric]


def metric_of(number: int) -> Metric:
    """The metric a protobuf number stands for; ValueError for any other number (an API
    validates the field first, so a client's unknown value is INVALID_ARGUMENT)."""
    try:
        return _METRICS_BY_NUMBER[number]
    except KeyError:
        raise ValueError(f"unknown usage metric {number!r}") from None


class Quota(Protocol):
    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str: ...

    async def commit(self, reservation_id: str) -> None: ...

    async def release(self, reservation_id: str) -> None: ...

    async def credit(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> None: ...


class UnlimitedQuota:
    """Grants every reservation; for deployments without billing."""

    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"unlimited:{user_id}:{metric}:{key}"))

    async def commit(self, reservation_id: str) -> None:
        return None

    async def release(self, reservation_id: str) -> None:
        return None

    async def credit(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> None:
        return None


# Billing's answers as the caller's domain errors (its message names the limit); billing
# down or slow is something to retry (Unavailable), not an internal error of the caller.
_VERDICTS: dict[grpc.StatusCode, Verdict] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: lambda message: QuotaExceeded(
        message or "usage limit reached"
    ),
    grpc.StatusCode.FAILED_PRECONDITION: lambda message: FailedPrecondition(
        message, reason="RESERVATION_EXPIRED"
    ),
    grpc.StatusCode.UNAUTHENTICATED: lambda message: Unauthenticated(
        message or "this account has been deleted", reason="ACCOUNT_DELETED"
    ),
}


class BillingQuota:
    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer
        self._stub = billing_pb2_grpc.BillingInternalServiceStub(peer.channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._peer.metadata(), timeout=10)
        except grpc.aio.AioRpcError as error:
            raise peer_error(
                error,
                peer="billing",
                unavailable="usage accounting is unavailable ({code}); try again",
                verdicts=_VERDICTS,
            ) from error

    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str:
        request = billing_pb2.ReserveUsageRequest(
            user_id=str(user_id),
            metric=metric_number(metric),
            amount=amount,
            idempotency_key=key,
        )
        response = await self._call(self._stub.ReserveUsage, request)
        return str(response.reservation_id)

    async def commit(self, reservation_id: str) -> None:
        request = billing_pb2.CommitUsageRequest(reservation_id=reservation_id)
        await self._call(self._stub.CommitUsage, request)

    async def release(self, reservation_id: str) -> None:
        request = billing_pb2.ReleaseUsageRequest(reservation_id=reservation_id)
        await self._call(self._stub.ReleaseUsage, request)

    async def credit(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> None:
        request = billing_pb2.CreditUsageRequest(
            user_id=str(user_id),
            metric=metric_number(metric),
            amount=amount,
            idempotency_key=key,
        )
        await self._call(self._stub.CreditUsage, request)
