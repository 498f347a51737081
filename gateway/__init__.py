"""Pixelshop's HTTP/JSON -> gRPC gateway: Envoy's grpc_json_transcoder, in Python, for machines
where Envoy cannot run. Both are driven by the same descriptor set (gen/pixelshop.binpb)."""

import runtime.grpc_io  # noqa: F401  (before anything loads grpc: ADR 0027)
from gateway.server import create_app, serve
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app", "serve"]
