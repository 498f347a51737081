"""Developer tooling: code generation, the embedded Postgres, provisioning and the runner."""

import runtime.grpc_io  # noqa: F401  (before anything loads grpc: ADR 0027)
