"""A service main that starts asyncio's own loop instead of runtime.loop.run."""

import asyncio


async def serve() -> None:
    await asyncio.sleep(0)


def main() -> None:
    asyncio.run(serve())
