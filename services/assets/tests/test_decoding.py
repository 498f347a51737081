"""Decode slots are shared fairly: one user's backlog never queues another user's upload,
and a slot is held until its decode really ends."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from services.assets.decoding import DecodeSlots
from services.assets.imaging import ImageLimits, ValidatedImage, validate_image
from services.assets.models import AssetState
from services.assets.server import AssetsComponents, build
from services.assets.settings import AssetsSettings
from services.assets.tests import images
from services.assets.tests.fakes import FixedTiers, RecordingQuota


class GatedDecodes:
    """Stands in for validate_image: decodes of `held` bytes wait at a gate (in their
    worker thread, like a slow decode), everything else decodes at once."""

    def __init__(self, held: bytes) -> None:
        self.held = held
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def __call__(self, data: bytes, limits: ImageLimits) -> ValidatedImage:
        if data == self.held:
            self.started.release()
            self.gate.wait()
        return validate_image(data, limits)

    async def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.started.acquire, True, 60)


async def parts_with(settings: AssetsSettings, **overrides: object) -> AssetsComponents:
    return build(replace(settings, **overrides), quota=RecordingQuota(), tiers=FixedTiers())


@pytest.fixture
async def fair(directory_settings: AssetsSettings) -> AsyncIterator[AssetsComponents]:
    parts = await parts_with(directory_settings, decode_concurrency=3, decode_per_user=2)
    yield parts
    await parts.close()


async def test_another_users_upload_completes_while_one_user_holds_every_slot_they_may(
    fair: AssetsComponents, monkeypatch: pytest.MonkeyPatch
) -> None:
    hog, other = uuid.uuid4(), uuid.uuid4()
    slow = images.png(64, 64)
    decodes = GatedDecodes(held=slow)
    monkeypatch.setattr("services.assets.workflows.validate_image", decodes)
    backlog = [
        asyncio.create_task(fair.workflows.upload(hog, slow, filename=f"{n}.png")) for n in range(6)
    ]
    try:
        await decodes.wait_started(2)
        slots = fair.workflows.decode_slots
        assert slots.running(hog) == 2  # the user's limit; four more wait behind it

        small = await asyncio.wait_for(
            fair.workflows.upload(other, images.png(4, 4), filename="small.png"), 60
        )

        assert small.state is AssetState.READY
        assert not any(task.done() for task in backlog)  # still decoding, still queued
        assert slots.running(hog) == 2
    finally:
        decodes.gate.set()
        stored = await asyncio.gather(*backlog, return_exceptions=True)
    assert all(not isinstance(a, BaseException) and a.state is AssetState.READY for a in stored)
    assert fair.workflows.decode_slots.running() == 0


async def test_one_user_never_holds_more_than_their_slots() -> None:
    slots = DecodeSlots(total=4, per_user=2)
    user = uuid.uuid4()
    gate = threading.Event()
    started = threading.Semaphore(0)

    def work() -> int:
        started.release()
        gate.wait()
        return 1

    tasks = [asyncio.create_task(slots.run(user, work)) for _ in range(5)]
    for _ in range(2):
        assert await asyncio.to_thread(started.acquire, True, 60)
    assert slots.running(user) == 2
    assert slots.running() == 2  # two slots stay free for everyone else
    gate.set()
    assert await asyncio.gather(*tasks) == [1] * 5
    assert slots.running() == 0


async def test_a_free_slot_goes_to_a_waiter_below_its_users_limit() -> None:
    # Two slots, one per user: A runs one and queues a second; B runs one. When B's ends,
    # the free slot is not A's (A is at its limit); when A's first ends, its second runs.
    slots = DecodeSlots(total=2, per_user=1)
    a, b = uuid.uuid4(), uuid.uuid4()
    gates = {name: threading.Event() for name in ("a1", "a2", "b1")}
    began: list[str] = []

    def work(name: str) -> str:
        began.append(name)
        gates[name].wait()
        return name

    a1 = asyncio.create_task(slots.run(a, work, "a1"))
    a2 = asyncio.create_task(slots.run(a, work, "a2"))
    b1 = asyncio.create_task(slots.run(b, work, "b1"))
    while len(began) < 2:
        await asyncio.sleep(0.01)
    assert sorted(began) == ["a1", "b1"]  # a2 waits for A's own slot, not b1
    gates["b1"].set()
    assert await b1 == "b1"
    assert slots.running(a) == 1  # a slot is free, but A is at its limit
    assert not a2.done()
    gates["a1"].set()
    gates["a2"].set()
    assert await asyncio.gather(a1, a2) == ["a1", "a2"]


async def test_a_cancelled_upload_keeps_its_decode_slot_until_the_decode_ends(
    directory_settings: AssetsSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that goes away cancels its RPC, but not the worker thread decoding its
    # image: if the slot were freed at once, clients could cancel their way past the
    # limits and have any number of full bitmaps decoding at the same time.
    parts = await parts_with(directory_settings, decode_concurrency=1, decode_per_user=1)
    try:
        data = images.png(64, 64)
        decodes = GatedDecodes(held=data)
        monkeypatch.setattr("services.assets.workflows.validate_image", decodes)
        owner = uuid.uuid4()
        upload_task = asyncio.create_task(parts.workflows.upload(owner, data, filename="a.png"))
        await decodes.wait_started(1)
        upload_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload_task
        try:
            # The thread still decodes: the only slot is still taken.
            assert parts.workflows.decode_slots.running() == 1
        finally:
            decodes.gate.set()
        monkeypatch.undo()
        # Once it is done, the slot is free again for the next upload.
        stored = await parts.workflows.upload(owner, images.png(32, 32), filename="b.png")
        assert stored.state is AssetState.READY
    finally:
        await parts.close()


@pytest.mark.parametrize(("total", "per_user"), [(4, 4), (4, 0), (2, 3)])
def test_the_per_user_limit_must_lie_below_the_total(
    directory_settings: AssetsSettings, total: int, per_user: int
) -> None:
    with pytest.raises(ValueError, match="DECODE_PER_USER"):
        replace(directory_settings, decode_concurrency=total, decode_per_user=per_user)
