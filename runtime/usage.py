"""What billing counts, in the domain's own terms: billing stores it, every caller of its
`Quota` (runtime/peers/billing.py) asks in it. The protobuf numbers of the same metrics
are mapped in runtime/peers/billing.py alone; this module imports neither gRPC nor
protobuf, so models and service modules may use it.
"""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """What billing counts: AI edits per period, and two gauges that never reset. The
    values are what billing's tables store."""

    AI_EDITS = "ai_edits"
    STORAGE_BYTES = "storage_bytes"
    PROJECTS = "projects"

    @property
    def is_gauge(self) -> bool:
        """A level (bytes stored, projects kept) rather than a count per period."""
        return self is not Metric.AI_EDITS
