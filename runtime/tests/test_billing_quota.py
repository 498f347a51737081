"""The quota client against a stand-in billing server speaking billing's real protos."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.clients import PeerChannel
from runtime.errors import FailedPrecondition, QuotaExceeded, Unavailable
from runtime.peers.billing import BillingQuota, Metric, metric_number, metric_of
from tests.support.settings import INTERNAL_SECRET

LIMIT = 100


class Billing(billing_pb2_grpc.BillingInternalServiceServicer):
    def __init__(self) -> None:
        self.reserved: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.metrics: list[int] = []

    async def ReserveUsage(self, request: Any, context: Any) -> Any:
        caller = dict(context.invocation_metadata())[SERVICE_TOKEN_METADATA]
        self.calls.append(
            ("reserve", ServiceTokens(INTERNAL_SECRET, "billing").verify(caller).name)
        )
        self.metrics.append(request.metric)
        if request.idempotency_key == "expired":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the reservation expired")
        if request.amount + sum(self.reserved.values()) > LIMIT:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "storage limit reached")
        self.reserved[request.idempotency_key] = request.amount
        return billing_pb2.ReserveUsageResponse(
            reservation_id=request.idempotency_key, state=billing_pb2.RESERVATION_STATE_RESERVED
        )

    async def ReleaseUsage(self, request: Any, context: Any) -> Any:
        self.reserved.pop(request.reservation_id, None)
        return billing_pb2.ReleaseUsageResponse(state=billing_pb2.RESERVATION_STATE_RELEASED)

    async def CommitUsage(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.INTERNAL, "billing broke")


@pytest.fixture
async def billing() -> AsyncIterator[tuple[Billing, str]]:
    servicer = Billing()
    server = grpc.aio.server()
    billing_pb2_grpc.add_BillingInternalServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_reserve_release_and_over_the_limit(billing: tuple[Billing, str]) -> None:
    servicer, address = billing
    peer = PeerChannel(address, ServiceTokens(INTERNAL_SECRET, "assets"))
    quota = BillingQuota(peer)
    user = uuid.uuid4()
    try:
        first = await quota.reserve(user, Metric.STORAGE_BYTES, 60, "upload-1")
        with pytest.raises(QuotaExceeded, match="storage limit reached"):
            await quota.reserve(user, Metric.STORAGE_BYTES, 60, "upload-2")
        await quota.release(first)
        await quota.reserve(user, Metric.STORAGE_BYTES, 60, "upload-3")
        # Billing failing is something to retry, never the caller's INTERNAL.
        with pytest.raises(Unavailable):
            await quota.commit("upload-3")
    finally:
        await peer.close()
    assert servicer.calls[0] == ("reserve", "assets")


async def test_billing_down_is_unavailable() -> None:
    from tools.pgcluster import free_port

    peer = PeerChannel(f"127.0.0.1:{free_port()}", ServiceTokens(INTERNAL_SECRET, "assets"))
    try:
        with pytest.raises(Unavailable):
            await BillingQuota(peer).reserve(uuid.uuid4(), Metric.STORAGE_BYTES, 1, "k")
    finally:
        await peer.close()


async def test_metrics_are_the_domain_enum_mapped_to_protobuf_in_one_place(
    billing: tuple[Billing, str],
) -> None:
    servicer, address = billing
    peer = PeerChannel(address, ServiceTokens(INTERNAL_SECRET, "projects"))
    quota = BillingQuota(peer)
    user = uuid.uuid4()
    try:
        await quota.reserve(user, Metric.AI_EDITS, 1, "edit-1")
        await quota.reserve(user, Metric.PROJECTS, 1, "project-1")
        await quota.reserve(user, Metric.STORAGE_BYTES, 1, "upload-1")
        # Billing's own refusals keep their meaning; only failures become Unavailable.
        with pytest.raises(FailedPrecondition, match="expired"):
            await quota.reserve(user, Metric.AI_EDITS, 1, "expired")
    finally:
        await peer.close()
    assert servicer.metrics[:3] == [
        billing_pb2.USAGE_METRIC_AI_EDITS,
        billing_pb2.USAGE_METRIC_PROJECTS,
        billing_pb2.USAGE_METRIC_STORAGE_BYTES,
    ]
    assert [metric_number(m) for m in Metric] == [1, 2, 3]
    # The same table read back (billing's API maps requests with it).
    assert [metric_of(metric_number(m)) for m in Metric] == list(Metric)
    for number in (billing_pb2.USAGE_METRIC_UNSPECIFIED, 99):
        with pytest.raises(ValueError, match="unknown usage metric"):
            metric_of(number)
    # One enum for billing's tables and its callers: the stored values, and which reset.
    assert [m.value for m in Metric] == ["ai_edits", "storage_bytes", "projects"]
    assert [m for m in Metric if m.is_gauge] == [Metric.STORAGE_BYTES, Metric.PROJECTS]
