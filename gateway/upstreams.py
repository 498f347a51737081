"""The gRPC side: one grpc.aio channel per upstream service, and a ready callable per method."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from gateway.edge import EDGE
from gateway.routes import RpcMethod

# Image downloads pass through the gateway; gRPC's 4 MiB default receive limit is too small.
# The edge table's response limit, as Envoy's transcoder max_response_body_size.
MAX_RESPONSE_BYTES = EDGE.bodies.response_bytes
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ("grpc.max_send_message_length", -1),
    # Upstreams are headless Services in Kubernetes: balance per call over every address.
    ("grpc.lb_policy_name", "round_robin"),
    # A restarted service is used again within seconds (gRPC's default backoff reaches 120 s).
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


class Upstreams:
    """Channels opened inside the running event loop, at start-up, closed on shutdown."""

    def __init__(self, addresses: Mapping[str, str], methods: Iterable[RpcMethod]) -> None:
        methods = list(methods)
        self._channels: dict[str, grpc.aio.Channel] = {
            service: grpc.aio.insecure_channel(addresses[service], options=CHANNEL_OPTIONS)
            for service in sorted({m.upstream for m in methods})
        }
        self._calls: dict[str, Any] = {}
        for method in methods:
            channel = self._channels[method.upstream]
            make = channel.unary_stream if method.server_streaming else channel.unary_unary
            self._calls[method.grpc_path] = make(
                method.grpc_path,
                request_serializer=_serialize,
                response_deserializer=method.response_class.FromString,
            )

    def callable_for(self, method: RpcMethod) -> Any:
        """The multicallable (unary-unary or unary-stream) that invokes the method."""
        return self._calls[method.grpc_path]

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
