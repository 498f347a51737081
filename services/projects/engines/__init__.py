"""Edit engines behind one interface: crop (always local), the local Pillow engine, Gemini.

An engine gets the source image's bytes and the edit's words and click points, and
answers the result's bytes. It never touches the database: the ApplyEdit workflow calls it
between two committed steps (ADR 0011). Failures are domain errors (FAILED_PRECONDITION
for what the engine will not do, DEADLINE_EXCEEDED, UNAVAILABLE), and none is charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.projects.models import EditAction


@dataclass(frozen=True)
class Point:
    """A click point in pixels of the (upright) source image."""

    x: int
    y: int


@dataclass(frozen=True)
class EngineRequest:
    action: EditAction
    prompt: str
    hotspots: tuple[Point, ...]
    source: bytes
    mime_type: str
    width: int
    height: int
    # Seconds the engine may take in all, retries included.
    timeout: float


@dataclass(frozen=True)
class EngineResult:
    data: bytes
    mime_type: str
    width: int
    height: int
    model: str = ""
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


class EditEngine(Protocol):
    """Runs retouch, filter and adjust edits."""

    name: str

    async def run(self, request: EngineRequest) -> EngineResult: ...
