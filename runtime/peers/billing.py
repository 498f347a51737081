"""Quota reservations with billing: reserve before the side effect, then commit or release.

`Quota` is what assets and projects depend on. `BillingQuota` talks to the billing
service; `UnlimitedQuota` grants everything and is used only where billing is not
deployed (PIXELSHOP_<SVC>_QUOTA=unlimited), so that the calls are already in place.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeAlias

import grpc
from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc

from runtime.clients import PeerChannel
from runtime.errors import QuotaExceeded, Unavailable

AI_EDITS = billing_pb2.USAGE_METRIC_AI_EDITS
STORAGE_BYTES = billing_pb2.USAGE_METRIC_STORAGE_BYTES
PROJECTS = billing_pb2.USAGE_METRIC_PROJECTS

Metric: TypeAlias = billing_pb2.UsageMetric


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


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    """Billing down or slow is something to retry, not an internal error of the caller."""
    return Unavailable(f"usage accounting is unavailable ({error.code().name}); try again")


class BillingQuota:
    def __init__(self, peer: PeerChannel) -> None:
        self._peer = peer
        self._stub = billing_pb2_grpc.BillingInternalServiceStub(peer.channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._peer.metadata(), timeout=10)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise QuotaExceeded(error.details() or "usage limit reached") from error
            raise _unavailable(error) from error

    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str:
        request = billing_pb2.ReserveUsageRequest(
            user_id=str(user_id), metric=metric, amount=amount, idempotency_key=key
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
            user_id=str(user_id), metric=metric, amount=amount, idempotency_key=key
        )
        await self._call(self._stub.CreditUsage, request)
