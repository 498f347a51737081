"""Images judged by their bytes: sniffing, limits, one decode, metadata and the thumbnail.

Nothing a client says about its upload (file name, Content-Type) decides anything here:
the magic bytes decide the format, the header decides the size, and a full decode decides
whether the file is whole. Pillow reads only the header at `open()`, so the pixel limit
is checked before a single pixel is allocated; `ImageFile.LOAD_TRUNCATED_IMAGES` stays
False, so a truncated file fails the decode instead of coming back half grey.

This is plain CPU work on bytes (no I/O, no asyncio); the service runs it in a worker
thread. `validate_image` is also what the ingest benchmark times.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

from PIL import ExifTags, Image

from runtime.errors import DomainError
from services.assets.errors import CONTENT_FIELD, InvalidContent

THUMBNAIL_EDGE = 512
# Measured with Pillow 13: a PNG row costs about 43 ns to decode whatever its width, a
# pixel about 2.3 ns, so a row weighs about 19 pixels; 32 leaves a margin.
ROW_COST_PIXELS = 32
JPEG_QUALITY = 85
WEBP_QUALITY = 80


@dataclass(frozen=True)
class ImageFormat:
    label: str  # as people write it
    pillow_name: str
    mime_type: str
    extensions: tuple[str, ...]  # the first one is used for new names


JPEG = ImageFormat("JPEG", "JPEG", "image/jpeg", ("jpg", "jpeg"))
PNG = ImageFormat("PNG", "PNG", "image/png", ("png",))
WEBP = ImageFormat("WebP", "WEBP", "image/webp", ("webp",))
ACCEPTED_FORMATS = (JPEG, PNG, WEBP)
FORMATS_BY_MIME = {f.mime_type: f for f in ACCEPTED_FORMATS}
ACCEPTED_LABEL = "a JPEG, PNG or WebP image"


@dataclass(frozen=True)
class ImageLimits:
    """What one owner may upload: bytes per file and pixels per image."""

    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Rendition:
    """Encoded image bytes and what they are."""

    data: bytes
    mime_type: str
    width: int
    height: int


@dataclass(frozen=True)
class ValidatedImage:
    format: ImageFormat
    size_bytes: int
    # As shown, i.e. after EXIF orientation.
    width: int
    height: int
    sha256: str
    thumbnail: Rendition


def _describe(data: bytes) -> str | None:
    """What non-image content looks like, for an error message a person understands."""
    head = data[:1024]
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        head = head.removeprefix(bom)
    text = head.lstrip().lower()
    if text.startswith(b"<"):
        if b"<html" in text or text.startswith(b"<!doctype html"):
            return "HTML"
        if b"<svg" in text:
            return "an SVG image"
        if text.startswith(b"<?xml"):
            return "XML"
        return "HTML"
    binary_signatures = (
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"%PDF-", "a PDF document"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x00\x00\x01\x00", "an ICO image"),
        (b"8BPS", "a Photoshop document"),
        (b"\x1f\x8b", "gzip data"),
        (b"BM", "a BMP image"),
    )
    for signature, description in binary_signatures:
        if head.startswith(signature):
            return description
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "a HEIC image"
        return "an MP4 or QuickTime file"
    if text.startswith((b"{", b"[")):
        return "JSON"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if decoded and all(c.isprintable() or c in "\r\n\t" for c in decoded):
        return "plain text"
    return None


def sniff(data: bytes) -> ImageFormat:
    """The format the magic bytes prove; INVALID_ARGUMENT naming what it is otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return WEBP
    described = _describe(data)
    if described is None:
        message = f"is not {ACCEPTED_LABEL} (the format is not recognized)"
    else:
        message = f"is {described}, not {ACCEPTED_LABEL}"
    raise InvalidContent(message, reason="UNSUPPORTED_FORMAT")


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def check_byte_limit(size: int, limits: ImageLimits, *, field: str = CONTENT_FIELD) -> None:
    if size == 0:
        raise InvalidContent("is empty (0 bytes)", reason="EMPTY_CONTENT", field=field)
    if size > limits.max_bytes:
        raise InvalidContent(
            f"is {megabytes(size)}, over your plan's limit of "
            f"{megabytes(limits.max_bytes)} per upload",
            reason="UPLOAD_TOO_LARGE",
            field=field,
        )


def check_pixel_limit(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise InvalidContent(
            f"declares {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"over your plan's limit of {limits.max_pixels / 1e6:g} megapixels",
            reason="TOO_MANY_PIXELS",
        )
    cost = decode_cost(width, height)
    if cost > limits.max_pixels:
        # A 76 KB PNG of 1 x 39,000,000 pixels is within 40 megapixels but takes seconds
        # to decode: each row costs as much as ROW_COST_PIXELS pixels, whatever its width.
        raise InvalidContent(
            f"declares {width} x {height} pixels; an image this narrow costs as much to "
            f"decode as {cost / 1e6:.1f} megapixels, over your plan's limit of "
            f"{limits.max_pixels / 1e6:g} megapixels",
            reason="TOO_MANY_PIXELS",
        )


def decode_cost(width: int, height: int) -> int:
    """What decoding an image costs, in pixels of an ordinary image: a row is never
    cheaper than ROW_COST_PIXELS pixels (the decoder's per-row work), so the tier's pixel
    limit also bounds how long a very narrow image can hold a decode slot."""
    return max(width, ROW_COST_PIXELS) * height


# EXIF orientation -> the transposition that shows the image upright (EXIF 2.3, 4.6.4).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations whose upright image swaps width and height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})

# A PNG's last chunk: IEND, always empty, so always these 12 bytes (length, type, CRC).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"

# What Pillow raises for damaged or hostile files. Anything else is our bug and should
# surface as one, not as "corrupt image".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _display_mode(image: Image.Image) -> Image.Image:
    """The decoded image in a mode every resampler and encoder handles: L, RGB or RGBA.

    Converting comes first: Pillow's resamplers refuse some decoded modes (reducing a
    16-bit greyscale image raises "image has wrong mode"), palette and bilevel images
    resize by nearest neighbour only, and CMYK or LA cannot be written as a JPEG or WebP.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_GREY:
        # Keep the high byte of each 16-bit sample (a plain convert("L") clips to white).
        return Image.frombytes("L", image.size, image.tobytes("raw", "I;16B"), "raw", "L;16B")
    if mode in ("I", "F"):
        return image.point(lambda value: value * (1 / 257)).convert("L")
    if image.has_transparency_data:
        return image if mode == "RGBA" else image.convert("RGBA")
    if mode in ("1", "L"):
        return image if mode == "L" else image.convert("L")
    if mode == "LA":  # alpha channel present but fully opaque
        return image.convert("L")
    return image if mode == "RGB" else image.convert("RGB")


def _thumbnail(image: Image.Image, source: ImageFormat, orientation: int) -> Rendition:
    """Converts the decoded image (for a JPEG, already decoded at a reduced scale) to a
    display mode, shrinks it, turns it upright, and encodes it: JPEG, or the source's
    format when it has alpha."""
    image = _display_mode(image)
    image.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE))
    # Turning the small image is the same as shrinking the turned one: the box is square.
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    output = io.BytesIO()
    if image.mode == "RGBA":
        target = WEBP if source is WEBP else PNG
        options: dict[str, object] = {"quality": WEBP_QUALITY} if target is WEBP else {}
    else:
        target = JPEG
        options = {"quality": JPEG_QUALITY}
    image.save(output, target.pillow_name, **options)
    return Rendition(output.getvalue(), target.mime_type, image.width, image.height)


def validate_image(data: bytes, limits: ImageLimits) -> ValidatedImage:
    """Accepts `data` only if it is a whole JPEG, PNG or WebP image within `limits`.

    Decodes once: the same decode proves the file whole and feeds the thumbnail. For a
    JPEG it runs at the smallest DCT scale still covering the thumbnail (Pillow's
    `draft`), which reads every byte of the file at a fraction of the time and memory.
    """
    check_byte_limit(len(data), limits)
    image_format = sniff(data)
    try:
        with Image.open(io.BytesIO(data), formats=[image_format.pillow_name]) as image:
            width, height = image.size  # from the header; nothing decoded yet
            check_pixel_limit(width, height, limits)
            # A JPEG has no animation: extra frames are the Multi-Picture Format's other
            # pictures (a phone's gain or depth map), and the first one is the photo.
            if image_format is not JPEG and getattr(image, "n_frames", 1) > 1:
                raise InvalidContent(
                    f"is an animated {image_format.label} image; only still images are accepted",
                    reason="ANIMATED_IMAGE",
                )
            orientation = _orientation(image)
            if image_format is JPEG:
                image.draft(image.mode, (THUMBNAIL_EDGE, THUMBNAIL_EDGE))
            image.load()
            if image_format is PNG and data.rfind(_PNG_END) < 0:
                # Pillow stops reading once every row is decoded, so a PNG cut just
                # before its end went unnoticed; data after the end chunk is allowed.
                raise EOFError("the PNG has no end chunk")
            thumbnail = _thumbnail(image, image_format, orientation)
    except DomainError:
        raise
    except Image.DecompressionBombError as error:
        # Pillow's own guard fires at open() for headers far beyond any plan.
        raise InvalidContent(
            "declares more pixels than any plan allows", reason="TOO_MANY_PIXELS"
        ) from error
    except _DECODE_ERRORS as error:
        raise InvalidContent(
            f"is not a valid {image_format.label} image: the file is truncated or corrupt",
            reason="CORRUPT_IMAGE",
        ) from error
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    return ValidatedImage(
        format=image_format,
        size_bytes=len(data),
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        thumbnail=thumbnail,
    )
