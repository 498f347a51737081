"""Channels to other Pixelshop services, carrying the service credential and request id.

A service never imports another service's package: it calls it through the generated
stub, wrapped in a small typed client (runtime/peers/).
"""

from __future__ import annotations

from typing import Any

import grpc

from runtime.auth import SERVICE_TOKEN_METADATA, ServiceTokens
from runtime.context import current_request_id
from runtime.db import refuse_remote_call
from runtime.server import MAX_MESSAGE_BYTES

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    # Headless Services resolve to every pod: balance per call, not per connection.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.enable_retries", 1),
    # A peer that was down comes back within seconds, not after gRPC's 2-minute back-off.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


class NoCallInsideTransaction(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Refuses a peer RPC issued while the caller holds a transaction (ADR 0011)."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        refuse_remote_call(f"peer RPC {details.method!r}")
        return await continuation(details, request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        refuse_remote_call(f"peer RPC {details.method!r}")
        return await continuation(details, request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        refuse_remote_call(f"peer RPC {details.method!r}")
        return await continuation(details, requests)

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        refuse_remote_call(f"peer RPC {details.method!r}")
        return await continuation(details, requests)


class PeerChannel:
    """An open channel to one service plus the metadata every call to it needs."""

    def __init__(self, address: str, tokens: ServiceTokens) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(
            address, options=CHANNEL_OPTIONS, interceptors=[NoCallInsideTransaction()]
        )
        self._tokens = tokens

    def metadata(self) -> tuple[tuple[str, str], ...]:
        pairs = [(SERVICE_TOKEN_METADATA, self._tokens.token())]
        request_id = current_request_id()
        if request_id:
            pairs.append(("x-request-id", request_id))
        return tuple(pairs)

    async def close(self) -> None:
        await self.channel.close()
