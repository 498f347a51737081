"""The content decides: sniffing, limits before decoding, one full decode, the thumbnail."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from PIL import Image

from services.assets.errors import InvalidContent
from services.assets.imaging import ImageLimits, sniff, validate_image
from services.assets.tests import images
from services.assets.tests.modes import (
    HIGH,
    SOURCES,
    THUMBNAIL_SIZE,
    WIDE,
    assert_thumbnail_shows,
    encode_as,
)

MIB = 1024 * 1024
FREE = ImageLimits(max_bytes=15 * MIB, max_pixels=40_000_000)


def refusal(data: bytes, limits: ImageLimits = FREE) -> InvalidContent:
    with pytest.raises(InvalidContent) as raised:
        validate_image(data, limits)
    return raised.value


def pillow_images_created() -> int:
    """How many image buffers Pillow's C core has allocated so far (tracemalloc cannot
    see those: they are not Python objects)."""
    return int(Image.core.get_stats()["new_count"])


@pytest.mark.parametrize(
    ("width", "height", "reason"),
    [(50_000, 50_000, "TOO_MANY_PIXELS"), (7_000, 7_000, "TOO_MANY_PIXELS")],
    ids=["beyond-pillows-own-guard", "beyond-the-plan-only"],
)
def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(
    width: int, height: int, reason: str
) -> None:
    bomb = images.png_header(width, height)
    created = pillow_images_created()
    tracemalloc.start()
    try:
        error = refusal(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error.reason == reason
    # Decoding would need width x height bytes (2.5 GB for the first); nothing like it
    # was allocated, neither by Python nor by Pillow.
    assert peak < 5 * MIB
    assert pillow_images_created() == created


def test_the_probe_above_does_see_a_decode() -> None:
    created = pillow_images_created()
    validate_image(images.png(64, 64), FREE)
    assert pillow_images_created() > created


def test_the_pixel_limit_is_inclusive() -> None:
    data = images.png(200, 100)
    assert validate_image(data, ImageLimits(MIB, 20_000)).width == 200
    assert refusal(data, ImageLimits(MIB, 19_999)).reason == "TOO_MANY_PIXELS"


def test_the_byte_limit_is_checked_before_anything_else() -> None:
    error = refusal(b"<html>" + b" " * 2000, ImageLimits(max_bytes=1000, max_pixels=10))
    assert error.reason == "UPLOAD_TOO_LARGE"
    assert refusal(b"").reason == "EMPTY_CONTENT"


@pytest.mark.parametrize(
    ("data", "described"),
    [
        (b"%PDF-1.7\n...", "is a PDF document"),
        (b"BM" + b"\x00" * 60, "is a BMP image"),
        (b"II*\x00" + b"\x00" * 60, "is a TIFF image"),
        (b"\x00\x00\x00\x1cftypheic" + b"\x00" * 40, "is a HEIC image"),
        (b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40, "is an AVIF image"),
        (b"PK\x03\x04" + b"\x00" * 40, "is a ZIP archive"),
        (b'{"not": "an image"}', "is JSON"),
        (b"just some words\n", "is plain text"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'></svg>", "is an SVG image"),
        (b"<script>alert(1)</script>", "is HTML"),
        (b"\x00\x01\x02\xfe\xfd" * 10, "is not a JPEG, PNG or WebP image (the format is not"),
        # A WebP's RIFF container with another payload is not a WebP.
        (b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 20, "is not a JPEG, PNG or WebP image"),
    ],
)
def test_what_is_not_accepted_is_named(data: bytes, described: str) -> None:
    with pytest.raises(InvalidContent) as raised:
        sniff(data)
    assert raised.value.description.startswith(described)
    assert raised.value.reason == "UNSUPPORTED_FORMAT"


@pytest.mark.parametrize(
    "data",
    [
        images.png(400, 300)[:-200],  # cut inside the image data
        images.webp(400, 300)[:-100],
        images.jpeg(400, 300)[:-500],
        images.png(400, 300)[:60] + b"\x00" * 500,  # a header, then garbage
    ],
    ids=["png", "webp", "jpeg", "png-garbage"],
)
def test_truncated_or_corrupt_images_are_refused(data: bytes) -> None:
    assert refusal(data).reason == "CORRUPT_IMAGE"


@pytest.mark.parametrize("cut", [12, 16, 20])
def test_a_png_cut_anywhere_in_its_last_bytes_is_refused(cut: int) -> None:
    # Pillow stops once every row is decoded: without the end chunk (12 bytes), the last
    # chunk's CRC and the deflate stream's checksum, the decode alone still succeeds.
    assert refusal(images.png(400, 300)[:-cut]).reason == "CORRUPT_IMAGE"


def test_a_png_may_carry_bytes_after_its_end_chunk() -> None:
    data = images.png(40, 30) + b"<html>trailing</html>"
    assert validate_image(data, FREE).size_bytes == len(data)


def test_animated_images_are_refused() -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in ("red", "blue")]
    for image_format in ("PNG", "WEBP"):
        output = io.BytesIO()
        frames[0].save(output, image_format, save_all=True, append_images=frames[1:])
        assert refusal(output.getvalue()).reason == "ANIMATED_IMAGE"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dimensions_are_reported_upright_for_every_exif_orientation(orientation: int) -> None:
    image = validate_image(images.jpeg(800, 600, orientation=orientation), FREE)
    upright = (600, 800) if orientation >= 5 else (800, 600)
    assert (image.width, image.height) == upright
    thumbnail = images.decode(image.thumbnail.data)
    assert thumbnail.size == ((384, 512) if orientation >= 5 else (512, 384))


def test_thumbnails_keep_alpha_in_the_sources_format() -> None:
    webp = validate_image(images.webp(800, 600, alpha=True), FREE).thumbnail
    assert webp.mime_type == "image/webp"
    assert images.decode(webp.data).mode == "RGBA"
    png = validate_image(images.png(800, 600, mode="RGBA"), FREE).thumbnail
    assert png.mime_type == "image/png"
    opaque = validate_image(images.webp(800, 600), FREE).thumbnail
    assert opaque.mime_type == "image/jpeg"


def test_palette_cmyk_and_16_bit_images_make_sensible_thumbnails() -> None:
    palette = Image.new("P", (700, 700), 1)
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    thumbnail = images.decode(
        validate_image(images.encode(palette, "PNG", transparency=0), FREE).thumbnail.data
    )
    assert thumbnail.mode == "RGBA"

    cmyk = images.encode(Image.new("CMYK", (700, 700), (0, 255, 255, 0)), "JPEG")
    thumbnail = images.decode(validate_image(cmyk, FREE).thumbnail.data)
    assert thumbnail.mode == "RGB"

    # 16-bit grey: mid-grey must stay mid-grey, not be clipped to white.
    deep = images.encode(Image.new("I;16", (700, 700), 32768), "PNG")
    thumbnail = images.decode(validate_image(deep, FREE).thumbnail.data)
    assert thumbnail.mode == "L"
    assert 110 < thumbnail.getpixel((10, 10)) < 145  # type: ignore[operator]


def test_metadata_comes_from_the_content() -> None:
    import hashlib

    data = images.webp(321, 123)
    image = validate_image(data, FREE)
    assert (image.format.mime_type, image.width, image.height) == ("image/webp", 321, 123)
    assert image.size_bytes == len(data)
    assert image.sha256 == hashlib.sha256(data).hexdigest()


def test_a_jpeg_carrying_a_second_picture_is_a_still_photo() -> None:
    # Phone cameras (Ultra HDR gain maps, depth maps) store extra pictures in a JPEG with
    # the Multi-Picture Format; Pillow opens it with n_frames == 2. It is still one photo.
    primary = Image.open(io.BytesIO(images.jpeg(800, 600)))
    gain_map = Image.new("L", (400, 300), 128).convert("RGB")
    data = images.encode(primary, "MPO", save_all=True, append_images=[gain_map])
    assert Image.open(io.BytesIO(data)).n_frames == 2  # type: ignore[attr-defined]

    image = validate_image(data, FREE)

    assert (image.format.mime_type, image.width, image.height) == ("image/jpeg", 800, 600)
    assert images.decode(image.thumbnail.data).size == (512, 384)


# -- every mode and bit depth, in every accepted format ------------------------------------


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_mode_is_accepted_with_a_correct_thumbnail(source: str, image_format: str) -> None:
    data = encode_as(source, image_format)

    image = validate_image(data, FREE)

    assert (image.width, image.height) == (WIDE, HIGH)
    thumbnail = images.decode(image.thumbnail.data)
    assert thumbnail.size == THUMBNAIL_SIZE
    has_alpha = images.decode(data).has_transparency_data
    if has_alpha:
        assert image.thumbnail.mime_type == (
            "image/webp" if image_format == "WEBP" else "image/png"
        )
        assert thumbnail.mode == "RGBA"
    else:
        assert image.thumbnail.mime_type == "image/jpeg"
        assert thumbnail.mode in ("L", "RGB")
    assert_thumbnail_shows(thumbnail, data, source)


def test_the_accepted_sources_cover_what_the_issue_names() -> None:
    # 16-bit, palette with transparency, CMYK and greyscale with alpha, as decoded.
    modes = {
        name: images.decode(encode_as(name, "PNG" if name != "cmyk" else "JPEG")).mode
        for name in SOURCES
    }
    assert modes == {"16-bit": "I;16", "palette+transparency": "P", "cmyk": "CMYK", "la": "LA"}


def test_a_narrow_image_is_refused_from_its_header_by_its_decode_cost() -> None:
    # 1 x 39,000,000 is within Free's 40 megapixels, but every row costs as much to decode
    # as 32 pixels: seconds of a decode slot for a 76 KB file. Refused before decoding.
    created = pillow_images_created()
    error = refusal(images.png_header(1, 39_000_000))
    assert error.reason == "TOO_MANY_PIXELS"
    assert "costs as much to decode as 1248.0 megapixels" in error.description
    assert pillow_images_created() == created
    # An ordinary narrow strip, and an image right at the limit, still pass.
    assert validate_image(images.png(8, 3000), FREE).height == 3000
    assert validate_image(images.png(200, 100), ImageLimits(MIB, 20_000)).width == 200
