"""Fakes for what projects depends on: assets and presets in memory, a recording quota,
and engines that count, wait or fail. Projects' tests may not import another service's
package, so these speak the same typed-client interfaces the real peers implement."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
import pathlib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from runtime.errors import FailedPrecondition, NotFound, QuotaExceeded
from runtime.peers.assets import AssetInfo
from runtime.peers.billing import Metric
from runtime.peers.presets import ResolvedPreset
from services.projects.engines import EditEngine, EngineRequest, EngineResult
from services.projects.engines.local import LocalEngine

ROOT = pathlib.Path(__file__).resolve().parents[3]


def system_presets() -> list[tuple[str, str, str, str, str]]:
    """The seeded system presets, read from presets' migration file (not imported as a
    package: a service never imports another service)."""
    path = ROOT / "services" / "presets" / "migrations" / "versions" / "0002_system_presets.py"
    spec = importlib.util.spec_from_file_location("system_presets_migration", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.SYSTEM_PRESETS)


@dataclass
class StoredAsset:
    info: AssetInfo
    owner_id: uuid.UUID
    data: bytes
    key: str = ""
    deleted: bool = False


def describe(data: bytes) -> tuple[str, int, int]:
    """MIME type and size after EXIF orientation, as assets records them."""
    with Image.open(io.BytesIO(data)) as image:
        mime = Image.MIME[image.format or "PNG"]
        upright = ImageOps.exif_transpose(image)
        return mime, upright.width, upright.height


@dataclass
class FakeAssets:
    """Assets in memory. With `quota`, a store reserves and commits the result's bytes as
    assets does (or commits the caller's reservation when it covers them, crediting back
    the surplus); `on_store` runs as a store begins (what else happens at that moment)."""

    assets: dict[uuid.UUID, StoredAsset] = field(default_factory=dict)
    stores: int = 0
    fail_stores: int = 0
    # Stores that store, then answer an error (the answer lost on the way back).
    lose_answers: int = 0
    quota: RecordingQuota | None = None
    on_store: Callable[[], Awaitable[None]] | None = None
    handed: list[str] = field(default_factory=list)

    def upload(self, owner_id: uuid.UUID, data: bytes) -> uuid.UUID:
        mime, width, height = describe(data)
        asset_id = uuid.uuid4()
        self.assets[asset_id] = StoredAsset(
            AssetInfo(asset_id, mime, len(data), width, height, True), owner_id, data
        )
        return asset_id

    def _owned(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> StoredAsset:
        found = self.assets.get(asset_id)
        if found is None or found.owner_id != owner_id or found.deleted:
            raise NotFound("asset", str(asset_id))
        return found

    def image(self, asset_id: uuid.UUID) -> Image.Image:
        return Image.open(io.BytesIO(self.assets[asset_id].data))

    async def get_for_owner(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> AssetInfo:
        return self._owned(owner_id, asset_id).info

    async def read(self, owner_id: uuid.UUID, asset_id: uuid.UUID) -> tuple[AssetInfo, bytes]:
        found = self._owned(owner_id, asset_id)
        return found.info, found.data

    async def store(
        self,
        owner_id: uuid.UUID,
        data: bytes,
        *,
        filename: str,
        idempotency_key: str,
        reservation_id: str | None = None,
        reserved_bytes: int = 0,
    ) -> AssetInfo:
        self.stores += 1
        if self.on_store is not None:
            await self.on_store()
        if self.fail_stores:
            self.fail_stores -= 1
            raise ConnectionError("assets is unreachable")
        for stored in self.assets.values():
            if stored.key == idempotency_key and stored.owner_id == owner_id:
                return stored.info
        if self.quota is not None:
            await self.charge_storage(owner_id, len(data), reservation_id, reserved_bytes)
        asset_id = self.upload(owner_id, data)
        self.assets[asset_id].key = idempotency_key
        if self.lose_answers:
            self.lose_answers -= 1
            raise TimeoutError("assets did not answer in time")
        return self.assets[asset_id].info

    async def charge_storage(
        self, owner_id: uuid.UUID, size: int, reservation_id: str | None, reserved_bytes: int
    ) -> None:
        assert self.quota is not None
        key = f"asset:{uuid.uuid4()}"
        if reservation_id and reserved_bytes >= size:
            self.handed.append(reservation_id)
            await self.quota.commit(reservation_id)
            if reserved_bytes > size:
                await self.quota.credit(
                    owner_id, Metric.STORAGE_BYTES, reserved_bytes - size, f"{key}:surplus"
                )
            return
        own = await self.quota.reserve(owner_id, Metric.STORAGE_BYTES, size, key)
        await self.quota.commit(own)

    async def find_stored(self, owner_id: uuid.UUID, idempotency_key: str) -> AssetInfo | None:
        for stored in self.assets.values():
            if stored.key == idempotency_key and stored.owner_id == owner_id:
                return None if stored.deleted else stored.info
        return None

    async def delete(self, owner_id: uuid.UUID, asset_ids: list[uuid.UUID]) -> int:
        deleted = 0
        for asset_id in asset_ids:
            found = self.assets.get(asset_id)
            if found is not None and found.owner_id == owner_id and not found.deleted:
                found.deleted = True
                deleted += 1
        return deleted

    def results_of(self, owner_id: uuid.UUID) -> list[StoredAsset]:
        return [a for a in self.assets.values() if a.owner_id == owner_id and a.key]


@dataclass
class FakePresets:
    presets: dict[uuid.UUID, ResolvedPreset] = field(default_factory=dict)
    uses: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for preset_id, name, category, _description, prompt in system_presets():
            self.presets[uuid.UUID(preset_id)] = ResolvedPreset(
                uuid.UUID(preset_id), name, prompt, category, 1
            )

    def by_name(self, name: str) -> ResolvedPreset:
        return next(p for p in self.presets.values() if p.name == name)

    async def resolve(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> ResolvedPreset:
        found = self.presets.get(preset_id)
        if found is None:
            raise NotFound("preset", str(preset_id))
        return found

    async def record_use(self, preset_id: uuid.UUID, edit_id: uuid.UUID) -> None:
        if (preset_id, edit_id) not in self.uses:
            self.uses.append((preset_id, edit_id))


@dataclass
class RecordingQuota:
    """Grants reservations up to per-metric limits (idempotent on the key, like billing)
    and remembers every call."""

    limits: dict[Metric, int] = field(default_factory=dict)
    reservations: dict[str, tuple[uuid.UUID, Metric, int, str]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    credited: list[tuple[uuid.UUID, Metric, int, str]] = field(default_factory=list)

    def used(self, user_id: uuid.UUID, metric: Metric) -> int:
        """Committed plus held (reserved, neither committed nor released)."""
        return sum(
            amount
            for rid, (owner, m, amount, _key) in self.reservations.items()
            if owner == user_id and m == metric and rid not in self.released
        ) - sum(a for owner, m, a, _ in self.credited if owner == user_id and m == metric)

    def charged(self, user_id: uuid.UUID, metric: Metric = Metric.AI_EDITS) -> int:
        return sum(
            amount
            for rid, (owner, m, amount, _key) in self.reservations.items()
            if owner == user_id and m == metric and rid in self.committed
        )

    def open(self, user_id: uuid.UUID) -> list[str]:
        return [
            rid
            for rid, (owner, _m, _a, _k) in self.reservations.items()
            if owner == user_id and rid not in self.committed and rid not in self.released
        ]

    async def reserve(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> str:
        if key in self.keys:
            return self.keys[key]
        limit = self.limits.get(metric)
        if limit is not None and self.used(user_id, metric) + amount > limit:
            raise QuotaExceeded("usage limit of your plan reached")
        reservation_id = f"reservation:{key}"
        self.keys[key] = reservation_id
        self.reservations[reservation_id] = (user_id, metric, amount, key)
        return reservation_id

    async def commit(self, reservation_id: str) -> None:
        if reservation_id not in self.committed:
            self.committed.append(reservation_id)

    async def release(self, reservation_id: str) -> None:
        if reservation_id not in self.committed and reservation_id not in self.released:
            self.released.append(reservation_id)

    async def credit(self, user_id: uuid.UUID, metric: Metric, amount: int, key: str) -> None:
        if all(k != key for *_rest, k in self.credited):
            self.credited.append((user_id, metric, amount, key))


class CountingEngine:
    """An engine (the local one by default), counting calls; optionally held at a gate or
    failing."""

    def __init__(self, inner: EditEngine | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.failure: Exception | None = None
        self._local = inner or LocalEngine()
        self.name = self._local.name

    async def run(self, request: EngineRequest) -> EngineResult:
        self.calls[request.prompt] += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return await self._local.run(request)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def refused() -> FailedPrecondition:
    return FailedPrecondition("the image model blocked this request (SAFETY)")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def photo(fmt: str = "JPEG", size: tuple[int, int] = (320, 240), **save: Any) -> bytes:
    """Four coloured quadrants on a gradient: crops and filters are told apart by pixels."""
    width, height = size
    image = Image.new("RGB", size)
    pixels = image.load()
    assert pixels is not None
    for x in range(width):
        for y in range(height):
            base = (x * 255 // max(1, width - 1), y * 255 // max(1, height - 1))
            if x < width // 2 and y < height // 2:
                pixels[x, y] = (200, base[0] // 4, base[1] // 4)  # red-ish
            elif y < height // 2:
                pixels[x, y] = (base[1] // 4, 190, base[0] // 4)  # green-ish
            elif x < width // 2:
                pixels[x, y] = (base[0] // 4, base[1] // 4, 200)  # blue-ish
            else:
                pixels[x, y] = (230, 220, base[0] // 2)  # yellow-ish
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()
