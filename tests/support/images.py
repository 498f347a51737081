"""Test images made at test time (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def image_bytes(
    fmt: str, size: tuple[int, int] = (640, 480), color: str = "teal", **save: object
) -> bytes:
    image = Image.new("RGB", size, color)
    # A gradient, so encoders cannot collapse the image to nothing.
    for x in range(0, size[0], 16):
        for y in range(0, size[1], 16):
            image.putpixel((x, y), (x % 256, y % 256, (x + y) % 256))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring a huge image, with a tiny compressed body."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    rows = zlib.compress(b"\x00" * 1024 * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def truncated_png() -> bytes:
    data = image_bytes("PNG", (800, 600))
    return data[: len(data) // 2]


HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
