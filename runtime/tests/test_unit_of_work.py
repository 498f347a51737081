"""ADR 0011 at run time: no peer RPC while a unit of work is open; crash points."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime import workflow
from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.db import Database, RemoteCallInTransaction, refuse_remote_call, unit_of_work_open
from tests.support.settings import INTERNAL_SECRET


@pytest.fixture
async def health_channel() -> AsyncIterator[PeerChannel]:
    server = grpc.aio.server()
    from grpc_health.v1 import health

    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    peer = PeerChannel(f"127.0.0.1:{port}", ServiceTokens(INTERNAL_SECRET, "test"))
    try:
        yield peer
    finally:
        await peer.close()
        await server.stop(None)
        await server.wait_for_termination()


async def _check(peer: PeerChannel) -> None:
    stub = health_pb2_grpc.HealthStub(peer.channel)
    await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)


async def test_a_peer_call_outside_a_transaction_goes_through(
    health_channel: PeerChannel, database: Database
) -> None:
    async with database.transaction() as session:
        await session.execute(sa.text("select 1"))
    await _check(health_channel)


@pytest.mark.parametrize("opener", ["transaction", "read"])
async def test_a_peer_call_inside_a_unit_of_work_fails_loudly(
    health_channel: PeerChannel, database: Database, opener: str
) -> None:
    async with getattr(database, opener)():
        assert unit_of_work_open()
        with pytest.raises(RemoteCallInTransaction, match="Health/Check"):
            await _check(health_channel)
    assert not unit_of_work_open()
    await _check(health_channel)


async def test_adapters_of_outside_systems_are_refused_too(database: Database) -> None:
    refuse_remote_call("object store put")  # nothing open: fine
    async with database.transaction():
        with pytest.raises(RemoteCallInTransaction, match="object store put"):
            refuse_remote_call("object store put")


async def test_checkpoints_are_recorded_and_a_crash_happens_once() -> None:
    async def run() -> str:
        await workflow.checkpoint("a")
        await workflow.checkpoint("b")
        return "done"

    with workflow.record_checkpoints() as passed:
        assert await run() == "done"
    assert passed == ["a", "b"]

    with workflow.crash_at("b") as passed:
        with pytest.raises(workflow.SimulatedCrash):
            await run()
        assert await run() == "done"  # the retry runs through
    assert passed == ["a", "b", "a", "b"]
    assert await run() == "done"  # no probe installed: checkpoints are no-ops


async def test_a_simulated_crash_rolls_back_the_open_transaction(database: Database) -> None:
    async with database.transaction() as session:
        await session.execute(sa.text("create table if not exists uow_probe (n int)"))
        await session.execute(sa.text("delete from uow_probe"))

    async def insert_then_crash() -> None:
        async with database.transaction() as session:
            await session.execute(sa.text("insert into uow_probe values (1)"))
            await workflow.checkpoint("inside")

    with workflow.crash_at("inside"), pytest.raises(workflow.SimulatedCrash):
        await insert_then_crash()
    async with database.read() as session:
        assert await session.scalar(sa.text("select count(*) from uow_probe")) == 0
