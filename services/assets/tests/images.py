"""Test images, made at test time with Pillow (no binaries in the repository)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image


def _picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth picture with detail in both directions, so encoders and thumbnails have
    something real to work on (and an orientation mistake would show)."""
    horizontal = Image.linear_gradient("L").resize((width, height))
    vertical = Image.linear_gradient("L").rotate(90).resize((width, height))
    grain = Image.effect_noise((width, height), 24)  # like a camera's: files get photo-sized
    picture = Image.merge("RGB", (horizontal, vertical, grain))
    if mode == "RGBA":
        picture = picture.convert("RGBA")
        picture.putalpha(horizontal)
    elif mode != "RGB":
        picture = picture.convert(mode)
    return picture


def encode(picture: Image.Image, image_format: str, **options: object) -> bytes:
    output = io.BytesIO()
    picture.save(output, image_format, **options)
    return output.getvalue()


def jpeg(width: int = 800, height: int = 600, *, orientation: int | None = None) -> bytes:
    options: dict[str, object] = {"quality": 90}
    if orientation is not None:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        options["exif"] = exif.tobytes()
    return encode(_picture(width, height), "JPEG", **options)


def png(width: int = 800, height: int = 600, *, mode: str = "RGB") -> bytes:
    return encode(_picture(width, height, mode), "PNG")


def webp(width: int = 800, height: int = 600, *, alpha: bool = False) -> bytes:
    return encode(_picture(width, height, "RGBA" if alpha else "RGB"), "WEBP", quality=80)


def gif(width: int = 64, height: int = 64) -> bytes:
    return encode(_picture(width, height).convert("P"), "GIF")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height grey pixels, followed by a little
    compressed data: what a decompression bomb looks like before anyone decodes it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 65536, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def decode(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture
