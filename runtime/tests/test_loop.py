"""The event loop of every process (ADR 0026), and of the tests themselves."""

from __future__ import annotations

import asyncio

import uvloop

from runtime.loop import run


async def test_the_tests_run_on_the_loop_the_processes_run_on() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


def test_run_answers_what_the_main_coroutine_answers_on_uvloop() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(main()).startswith("uvloop")
