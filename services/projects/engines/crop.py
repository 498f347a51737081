"""Crop: local, exact, free. Coordinates are pixels of the upright source."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.projects.engines import EngineResult
from services.projects.engines.imageio import decode_upright, encode_like, result_mime_type

ENGINE_NAME = "crop"

# name -> (width part, height part); "free" has none.
ASPECT_RATIOS: dict[str, tuple[int, int] | None] = {
    "free": None,
    "1:1": (1, 1),
    "4:3": (4, 3),
    "3:2": (3, 2),
    "16:9": (16, 9),
    "9:16": (9, 16),
}


@dataclass(frozen=True)
class CropBox:
    x: int
    y: int
    width: int
    height: int


def matches_ratio(width: int, height: int, ratio: tuple[int, int] | None) -> bool:
    """Whether width:height is the ratio, within one pixel of height."""
    if ratio is None:
        return True
    a, b = ratio
    return abs(width * b - height * a) <= a  # |height - width*b/a| <= 1


def fit_ratio(box: CropBox, ratio: tuple[int, int] | None, width: int, height: int) -> CropBox:
    """The largest box with the ratio inside `box` (same centre), clamped to the image;
    used when a crop is re-applied to a photo of another shape."""
    x, y, w, h = box.x, box.y, max(1, box.width), max(1, box.height)
    if ratio is not None:
        a, b = ratio
        if w * b > h * a:
            new_w, new_h = max(1, round(h * a / b)), h
        else:
            new_w, new_h = w, max(1, round(w * b / a))
        x += (w - new_w) // 2
        y += (h - new_h) // 2
        w, h = new_w, new_h
    w, h = min(w, width), min(h, height)
    x = min(max(0, x), width - w)
    y = min(max(0, y), height - h)
    return CropBox(x, y, w, h)


def _crop(data: bytes, mime_type: str, box: CropBox) -> EngineResult:
    image = decode_upright(data)
    cropped = image.crop((box.x, box.y, box.x + box.width, box.y + box.height))
    mime = result_mime_type(mime_type)
    return EngineResult(
        data=encode_like(cropped, mime), mime_type=mime, width=box.width, height=box.height
    )


async def crop(data: bytes, mime_type: str, box: CropBox) -> EngineResult:
    return await asyncio.to_thread(_crop, data, mime_type, box)
