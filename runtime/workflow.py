"""Checkpoints between the steps of a multi-step workflow, so tests can crash at each one.

A workflow (ADR 0011) is a sequence of steps: record the intent and commit, do one side
effect with no transaction open, record the outcome and commit. Its code names the gap
between two steps with `await checkpoint("upload.row_pending")`. In production that is a
no-op. A test can record which checkpoints a run passes (`record_checkpoints`) and then
crash a fresh run at each of them in turn (`crash_at`), to show that the sweeper or a retry
ends every interrupted run in a consistent state.

`SimulatedCrash` derives from BaseException on purpose: like a killed process, it runs no
`except Exception` clean-up, while an open transaction still rolls back, as Postgres does
when a connection dies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class SimulatedCrash(BaseException):
    """Raised at a checkpoint chosen by a test; stands for the process dying there."""


@dataclass
class _Probe:
    crash_at: str | None = None
    passed: list[str] = field(default_factory=list)


# A test-only hook, process-wide on purpose: a workflow may run in a task the test did not
# create (a gRPC handler, a sweeper), so a context variable would not reach it.
_probe: _Probe | None = None


async def checkpoint(name: str) -> None:
    """Marks the gap between two steps of a workflow; a test may crash the run here."""
    probe = _probe
    if probe is None:
        return
    probe.passed.append(name)
    if probe.crash_at == name:
        probe.crash_at = None  # crash once: the recovery that follows must run through
        raise SimulatedCrash(name)


@contextmanager
def record_checkpoints() -> Iterator[list[str]]:
    """Collects, in order, the checkpoints passed while the block runs."""
    global _probe
    previous, _probe = _probe, _Probe()
    try:
        yield _probe.passed
    finally:
        _probe = previous


@contextmanager
def crash_at(name: str) -> Iterator[list[str]]:
    """Raises SimulatedCrash the first time a workflow reaches checkpoint `name`."""
    global _probe
    previous, _probe = _probe, _Probe(crash_at=name)
    try:
        yield _probe.passed
    finally:
        _probe = previous
