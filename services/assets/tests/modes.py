"""Every mode and bit depth the issue names, in every accepted format: the sources, their
encodings and the colours their thumbnails must show (test_imaging and test_upload)."""

from __future__ import annotations

from PIL import Image

from services.assets.tests import images

# Past 2,048 px Pillow's thumbnail first reduces by an integer factor, which refuses some
# decoded modes (16-bit grey: "image has wrong mode"): the probe's 2,100 px PNG.
WIDE, HIGH = 2100, 1400
THUMBNAIL_SIZE = (512, 341)
LEFT, RIGHT = (WIDE // 4, HIGH // 2), (3 * WIDE // 4, HIGH // 2)


def _halves(mode: str, left: object, right: object) -> Image.Image:
    picture = Image.new(mode, (WIDE, HIGH), left)  # type: ignore[arg-type]
    picture.paste(Image.new(mode, (WIDE - WIDE // 2, HIGH), right), (WIDE // 2, 0))  # type: ignore[arg-type]
    return picture


def grey_16_bit() -> Image.Image:
    """16-bit greyscale: dark on the left (0x2000), light on the right (0xE000)."""
    row = [0x2000] * (WIDE // 2) + [0xE000] * (WIDE - WIDE // 2)
    raw = b"".join(value.to_bytes(2, "little") for value in row) * HIGH
    return Image.frombytes("I;16", (WIDE, HIGH), raw)


def palette_with_transparency() -> Image.Image:
    """Palette colour 1 (red) on the left, the transparent colour 0 on the right."""
    picture = _halves("P", 1, 0)
    picture.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    picture.info["transparency"] = 0
    return picture


def cmyk() -> Image.Image:
    return _halves("CMYK", (0, 255, 255, 0), (255, 0, 0, 40))


def grey_with_alpha() -> Image.Image:
    return _halves("LA", (100, 255), (180, 0))


SOURCES = {
    "16-bit": grey_16_bit,
    "palette+transparency": palette_with_transparency,
    "cmyk": cmyk,
    "la": grey_with_alpha,
}


def encode_as(source: str, image_format: str) -> bytes:
    """The source in the closest form the format can hold (JPEG has no alpha and no
    16 bits, WebP only RGB(A), PNG no CMYK)."""
    picture = SOURCES[source]()
    if source == "16-bit" and image_format != "PNG":
        picture = Image.frombytes(
            "L", picture.size, picture.tobytes("raw", "I;16B"), "raw", "L;16B"
        )
    if image_format == "PNG" and source == "cmyk":
        picture = picture.convert("RGB")
    if image_format == "JPEG" and source in ("palette+transparency",):
        picture = picture.convert("RGB")
    if image_format == "JPEG" and source == "la":
        picture = picture.convert("L")
    if image_format == "WEBP":
        alpha = source in ("palette+transparency", "la")
        picture = picture.convert("RGBA" if alpha else "RGB")
    options: dict[str, object] = {"quality": 95} if image_format != "PNG" else {}
    if image_format == "WEBP":
        options["lossless"] = True
    return images.encode(picture, image_format, **options)


def expected_rgba(data: bytes, source: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if source == "16-bit":  # the high byte of 0x2000 and 0xE000
        return (32, 32, 32, 255), (224, 224, 224, 255)
    reference = images.decode(data).convert("RGBA")
    return reference.getpixel(LEFT), reference.getpixel(RIGHT)  # type: ignore[return-value]


def close_to(seen: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    if expected[3] == 0:  # fully transparent: the colour does not matter
        return seen[3] == 0
    return all(abs(a - b) <= tolerance for a, b in zip(seen, expected, strict=True))


def assert_thumbnail_shows(thumbnail: Image.Image, data: bytes, source: str) -> None:
    """The thumbnail of `data` (an `encode_as` of `source`) has the source's left and right
    colours where they fall after scaling."""
    left, right = expected_rgba(data, source)
    shown = thumbnail.convert("RGBA")
    scale = THUMBNAIL_SIZE[0] / WIDE
    for point, expected in ((LEFT, left), (RIGHT, right)):
        seen = shown.getpixel((int(point[0] * scale), int(point[1] * scale)))
        assert close_to(seen, expected), f"{point}: {seen} instead of {expected}"  # type: ignore[arg-type]
