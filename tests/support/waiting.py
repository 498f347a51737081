"""Waiting for something another process or task does, in tests: poll a condition until it
holds, and fail the test loudly, saying what never happened and how things stood, when it
does not. The timeout only stops a broken test from hanging; nothing asserts on time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

TIMEOUT = 30.0  # generous on a loaded two-core machine
INTERVAL = 0.1


async def _value(call: Callable[[], Any]) -> Any:
    value = call()
    return await value if inspect.isawaitable(value) else value


async def eventually(
    condition: Callable[[], Any],
    what: str,
    *,
    state: Callable[[], Any] | None = None,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> Any:
    """Calls `condition` (plain or async) until it answers something truthy, and returns
    that; after `timeout` seconds fails with `what` and, when given, `state()`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await _value(condition)
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(_never(what, timeout, await _value(state) if state else None, state))
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], Any],
    what: str,
    *,
    state: Callable[[], Any] | None = None,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
) -> Any:
    """`eventually` for code that has no event loop (a plain test, a fixture)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(_never(what, timeout, state() if state else None, state))
        time.sleep(interval)


def _never(what: str, timeout: float, seen: object, state: object) -> str:
    said = f"; state: {seen}" if state is not None else ""
    return f"timed out after {timeout:g} s waiting for {what}{said}"
