"""Decoding a source upright and encoding a result in the source's format family.

Width and height everywhere are after EXIF orientation (assets records them so), so the
source is transposed before any operation and the result carries no orientation tag.
JPEG stays JPEG, PNG stays PNG (with its alpha), WebP stays WebP.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from runtime.errors import FailedPrecondition

_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
JPEG_QUALITY = 92
WEBP_QUALITY = 90


def decode_upright(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # Pillow raises many kinds for broken data
        raise FailedPrecondition("the source image cannot be decoded") from error
    return ImageOps.exif_transpose(image)


def encode_like(image: Image.Image, mime_type: str) -> bytes:
    """Encodes `image` in the format family of `mime_type`."""
    fmt = _FORMATS.get(mime_type, "PNG")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif fmt == "WEBP":
        has_alpha = "A" in image.getbands()
        image.convert("RGBA" if has_alpha else "RGB").save(
            buffer, format="WEBP", quality=WEBP_QUALITY
        )
    else:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def result_mime_type(mime_type: str) -> str:
    return mime_type if mime_type in _FORMATS else "image/png"
