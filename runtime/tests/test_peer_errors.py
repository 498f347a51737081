"""runtime.peers.errors.peer_error against a real in-process gRPC peer that answers the
status codes a test asks for."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from runtime.errors import DomainError, NotFound, QuotaExceeded, Unavailable
from runtime.peers.errors import peer_error

METHOD = "/pixelshop.test.Peer/Answer"


async def _answer(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Fails with the code named in the request and, after a space, the message."""
    name, _, message = request.decode().partition(" ")
    await context.abort(grpc.StatusCode[name], message)
    return b""


@pytest.fixture
async def peer() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_answer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("pixelshop.test.Peer", {"Answer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel
    await channel.close()
    await server.stop(0)


async def _failed_call(channel: grpc.aio.Channel, request: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(METHOD)(request.encode(), timeout=5)
    return raised.value


VERDICTS = {
    grpc.StatusCode.NOT_FOUND: lambda _: NotFound("thing", "t-1"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: lambda message: QuotaExceeded(message or "over"),
}


def _mapped(error: grpc.aio.AioRpcError) -> DomainError:
    return peer_error(
        error, peer="things", unavailable="things are unavailable ({code})", verdicts=VERDICTS
    )


async def test_the_peers_verdicts_become_the_callers_domain_errors(
    peer: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pixelshop.peers"):
        missing = _mapped(await _failed_call(peer, "NOT_FOUND the peer's own words"))
        over = _mapped(await _failed_call(peer, "RESOURCE_EXHAUSTED 3 of 3 things used"))
        silent = _mapped(await _failed_call(peer, "RESOURCE_EXHAUSTED"))
    assert isinstance(missing, NotFound)
    assert missing.message == NotFound("thing", "t-1").message  # the caller's, not the peer's
    assert isinstance(over, QuotaExceeded)
    assert over.message == "3 of 3 things used"
    assert isinstance(silent, QuotaExceeded)
    assert silent.message == "over"
    assert not [r for r in caplog.records if r.name == "pixelshop.peers"]  # answers, not failures


async def test_any_other_code_is_unavailable_naming_it_and_logged(
    peer: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pixelshop.peers"):
        broken = _mapped(await _failed_call(peer, "INTERNAL division by zero"))
        # Codes a client names no verdict for are never passed through as they are.
        refused = _mapped(await _failed_call(peer, "PERMISSION_DENIED not yours"))
    assert isinstance(broken, Unavailable)
    assert broken.message == "things are unavailable (INTERNAL)"  # no peer internals
    assert isinstance(refused, Unavailable)
    assert refused.message == "things are unavailable (PERMISSION_DENIED)"
    logged = [r for r in caplog.records if r.name == "pixelshop.peers"]
    assert [(r.levelno, vars(r)["peer"], vars(r)["code"]) for r in logged] == [
        (logging.WARNING, "things", "INTERNAL"),
        (logging.WARNING, "things", "PERMISSION_DENIED"),
    ]


async def test_a_peer_that_is_down_is_unavailable() -> None:
    from tools.pgcluster import free_port

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(METHOD)(b"OK", timeout=5)
    finally:
        await channel.close()
    down = peer_error(raised.value, peer="things", unavailable="no things right now; try again")
    assert isinstance(down, Unavailable)
    assert down.message == "no things right now; try again"
