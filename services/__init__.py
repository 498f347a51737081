"""The Pixelshop services; each owns one Postgres schema and talks to the others over gRPC only."""

import runtime.grpc_io  # noqa: F401  (before anything loads grpc: ADR 0027)
