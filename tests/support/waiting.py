"""Waiting for something another process or task does, in tests: poll a condition until it
holds, and fail the test loudly, saying what never happened and how things stood, when it
does not. The timeout only stops a broken test from hanging; nothing asserts on time."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest

TIMEOUT = 30.0  # generous on a loaded two-core machine
INTERVAL = 0.1


@dataclass
class Waiting:
    """What is waited for, and for how long: `eventually`'s keyword options (`state`, a
    plain or async callable whose answer the failure shows; `timeout`; `interval`)."""

    what: str
    state: Callable[[], Any] | None = None
    timeout: float = TIMEOUT
    interval: float = INTERVAL
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def fail(self, seen: object) -> NoReturn:
        said = f"; state: {seen}" if self.state is not None else ""
        pytest.fail(f"timed out after {self.timeout:g} s waiting for {self.what}{said}")


async def _value(call: Callable[[], Any]) -> Any:
    value = call()
    return await value if inspect.isawaitable(value) else value


async def eventually(condition: Callable[[], Any], what: str, **options: Any) -> Any:
    """Calls `condition` (plain or async) until it answers something truthy, and returns
    that; fails with `what` (and the `state`) once the `timeout` is over."""
    waiting = Waiting(what, **options)
    while not (result := await _value(condition)):
        if waiting.over():
            waiting.fail(await _value(waiting.state) if waiting.state else None)
        await asyncio.sleep(waiting.interval)
    return result


def eventually_sync(condition: Callable[[], Any], what: str, **options: Any) -> Any:
    """`eventually` for code without an event loop (a plain test, a fixture)."""
    waiting = Waiting(what, **options)
    while not (result := condition()):
        if waiting.over():
            waiting.fail(waiting.state() if waiting.state else None)
        time.sleep(waiting.interval)
    return result


def answering(url: str, process: subprocess.Popen[bytes], name: str = "the process") -> bool:
    """A condition for `eventually_sync`: `url` answers, and (failing at once otherwise)
    the process that should serve it is still running."""
    assert process.poll() is None, f"{name} exited with {process.returncode}"
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (a local test URL)
            return True
    except OSError:
        return False
