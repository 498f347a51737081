"""Assets' upload ingest against Pillow's own decode + thumbnail, for `make bench` (SPEC
section 7); `python -m tools.ingest_benchmark` prints the ratio alone.

    from tools.ingest_benchmark import compare_ingest
    result = await compare_ingest(jpeg_bytes)   # result.ratio should stay <= 1.5

Ingest is everything an upload costs here apart from the database and the network:
sniffing, limits, metadata, the one decode, the thumbnail, the SHA-256, and writing both
objects to a directory store. The baseline is what Pillow does for a thumbnail by
itself: `Image.open(...)` then `thumbnail((512, 512))`. Both run the same number of
times on the same bytes; the best run of each counts (the least disturbed by the rest of
the machine).
"""

from __future__ import annotations

import asyncio
import io
import pathlib
import tempfile
import time
import uuid
from dataclasses import dataclass

from PIL import Image

from services.assets.imaging import THUMBNAIL_EDGE, ImageLimits, validate_image
from services.assets.models import ORIGINAL, THUMBNAIL, object_key
from services.assets.storage import DirectoryStore, ObjectStore

# Generous: the benchmark measures speed, not a plan's limits.
BENCHMARK_LIMITS = ImageLimits(max_bytes=1 << 30, max_pixels=1 << 31)


@dataclass(frozen=True)
class IngestComparison:
    ingest_seconds: float
    pillow_seconds: float

    @property
    def ratio(self) -> float:
        return self.ingest_seconds / self.pillow_seconds


def pillow_decode_and_thumbnail(data: bytes) -> None:
    """The baseline: Pillow's own decode + thumbnail of the same file."""
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE))


async def ingest(data: bytes, store: ObjectStore) -> None:
    """What an upload does with its bytes, minus the database rows."""
    image = validate_image(data, BENCHMARK_LIMITS)
    owner, asset = uuid.uuid4(), uuid.uuid4()
    await store.put(object_key(owner, asset, ORIGINAL), data, image.format.mime_type)
    await store.put(
        object_key(owner, asset, THUMBNAIL), image.thumbnail.data, image.thumbnail.mime_type
    )


async def compare_ingest(data: bytes, *, repeats: int = 5) -> IngestComparison:
    with tempfile.TemporaryDirectory(prefix="pixelshop-bench-") as folder:
        store = DirectoryStore(pathlib.Path(folder))
        await ingest(data, store)  # warm-up: imports, plugin registration, file system
        pillow_decode_and_thumbnail(data)
        ingest_times, pillow_times = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            await ingest(data, store)
            ingest_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            pillow_decode_and_thumbnail(data)
            pillow_times.append(time.perf_counter() - started)
    return IngestComparison(min(ingest_times), min(pillow_times))


def main() -> None:
    """Prints the ratio for a synthetic 12-megapixel JPEG (4000 x 3000)."""
    size = (4000, 3000)
    shapes = Image.effect_mandelbrot(size, (-2.0, -1.2, 1.0, 1.2), 64).convert("RGB")
    # Sensor-like noise makes the file as large as a real photo's (several MB).
    grain = Image.merge("RGB", [Image.effect_noise(size, 40) for _ in range(3)])
    output = io.BytesIO()
    Image.blend(shapes, grain, 0.5).save(output, "JPEG", quality=92)
    result = asyncio.run(compare_ingest(output.getvalue()))
    print(
        f"assets ingest of a 12 MP JPEG: {result.ingest_seconds * 1000:.1f} ms, "
        f"Pillow decode + thumbnail {result.pillow_seconds * 1000:.1f} ms, "
        f"ratio {result.ratio:.2f} (target <= 1.5)"
    )


if __name__ == "__main__":
    main()
