"""gRPC core's I/O engine for every process (ADR 0027), chosen before `grpc` loads:
imported for that effect, first, by `services`, `gateway` and `tools` (and by the root
`conftest.py` for the tests).

gRPC 1.80 made core's EventEngine the default for Python: a message's bytes are read on
EventEngine's worker threads and handed through the completion queue to the grpc.aio
poller thread and on to the event loop. On our two-vCPU machines those hand-offs cost
every serial call more latency and CPU than the work itself; the older polling engine
reads the sockets on the thread that drains the queue. It is selected with gRPC's own
`GRPC_EXPERIMENTS` variable, which core reads once, when it loads. An operator's value
wins (an empty one keeps gRPC's defaults).
"""

from __future__ import annotations

import os

# The experiments that move sockets onto EventEngine, turned off ("-name").
POLLING_IO = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"

os.environ.setdefault("GRPC_EXPERIMENTS", POLLING_IO)
