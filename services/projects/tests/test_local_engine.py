"""The local engine: every word of its vocabulary and every system preset, judged by the
pixels it produces; unknown prompts fail with the list; size and format family are kept."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from runtime.errors import FailedPrecondition
from services.projects.engines import EngineRequest, Point
from services.projects.engines.local import VOCABULARY, LocalEngine, choose
from services.projects.models import EditAction
from services.projects.tests.fakes import system_presets

SIZE = (240, 180)


def textured(mode: str = "RGB") -> Image.Image:
    """Coloured quadrants, a fine checker texture and mid-tones: room for every operation."""
    image = Image.new("RGB", SIZE)
    pixels = image.load()
    assert pixels is not None
    for x in range(SIZE[0]):
        for y in range(SIZE[1]):
            tick = (30 if (x // 3 + y // 3) % 2 else 0) + (x * 37 + y * 11) % 23
            if x < SIZE[0] // 2 and y < SIZE[1] // 2:
                pixels[x, y] = (170 + tick // 2, 60 + tick, 50)
            elif y < SIZE[1] // 2:
                pixels[x, y] = (60, 150 + tick, 70 + tick)
            elif x < SIZE[0] // 2:
                pixels[x, y] = (50 + tick, 80, 160 + tick)
            else:
                pixels[x, y] = (140 + tick, 130 + tick, 90)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


async def run(
    prompt: str,
    action: EditAction = EditAction.FILTER,
    fmt: str = "PNG",
    hotspots: tuple[Point, ...] = (),
    source: Image.Image | None = None,
) -> tuple[Image.Image, Image.Image, str]:
    source = source or textured()
    data = encode(source, fmt)
    mime = Image.MIME[fmt]
    result = await LocalEngine().run(
        EngineRequest(action, prompt, hotspots, data, mime, source.width, source.height, 30)
    )
    before = Image.open(io.BytesIO(data)).convert("RGB")
    after = Image.open(io.BytesIO(result.data))
    assert after.size == before.size
    assert result.mime_type == mime
    assert Image.MIME[after.format or ""] == mime
    return before, after.convert("RGB"), result.model


def mean(image: Image.Image, band: int) -> float:
    return float(ImageStat.Stat(image).mean[band])


def hsv(image: Image.Image, band: int) -> float:
    return mean(image.convert("HSV"), band)


def luma(image: Image.Image) -> float:
    return mean(image.convert("L"), 0)


def spread(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).stddev[0])


def detail(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    region = image.crop(box) if box else image
    return mean(region.convert("L").filter(ImageFilter.FIND_EDGES), 0)


def colours(image: Image.Image) -> int:
    return len(image.getcolors(1 << 20) or [])


def corners_vs_centre(image: Image.Image) -> float:
    w, h = image.size
    corner = luma(image.crop((0, 0, w // 8, h // 8)))
    centre = luma(image.crop((w * 7 // 16, h * 7 // 16, w * 9 // 16, h * 9 // 16)))
    return corner / max(centre, 1)


Check = Callable[[Image.Image, Image.Image], bool]

CHECKS: dict[str, tuple[str, Check]] = {
    "make it black and white": ("black and white", lambda b, a: hsv(a, 1) < 2 < hsv(b, 1) - 40),
    "monochrome please": ("black and white", lambda b, a: hsv(a, 1) < 2),
    "sepia tone": (
        "sepia",
        lambda b, a: mean(a, 0) > mean(a, 1) > mean(a, 2) + 10 and hsv(a, 1) > 20,
    ),
    "warmer": ("warmer", lambda b, a: mean(a, 0) > mean(b, 0) + 8 and mean(a, 2) < mean(b, 2) - 8),
    "golden hour light": ("warmer", lambda b, a: mean(a, 0) > mean(b, 0) + 8),
    "cooler": ("cooler", lambda b, a: mean(a, 2) > mean(b, 2) + 8 and mean(a, 0) < mean(b, 0) - 8),
    "brighter": ("brighter", lambda b, a: luma(a) > luma(b) + 20),
    "darker": ("darker", lambda b, a: luma(a) < luma(b) - 20),
    "more contrast": ("more contrast", lambda b, a: spread(a) > spread(b) * 1.3),
    "less contrast": ("less contrast", lambda b, a: spread(a) < spread(b) * 0.8),
    "more saturation": ("more saturation", lambda b, a: hsv(a, 1) > hsv(b, 1) + 15),
    "desaturate it": ("less saturation", lambda b, a: hsv(a, 1) < hsv(b, 1) - 20),
    "vintage look": (
        "vintage",
        lambda b, a: corners_vs_centre(a) < corners_vs_centre(b) * 0.8 and hsv(a, 1) < hsv(b, 1),
    ),
    "lomo": (
        "lomo (vignette)",
        lambda b, a: corners_vs_centre(a) < corners_vs_centre(b) * 0.7 and hsv(a, 1) > hsv(b, 1),
    ),
    "add a vignette": ("lomo (vignette)", lambda b, a: corners_vs_centre(a) < corners_vs_centre(b)),
    "synthwave": (
        "synthwave (neon duotone)",
        lambda b, a: (mean(a, 0) + mean(a, 2)) / 2 > mean(a, 1) + 20,
    ),
    "blur the background": (
        "blur background",
        lambda b, a: (
            detail(a, (0, 0, 30, 30)) < detail(b, (0, 0, 30, 30)) * 0.5
            and detail(a, (110, 80, 130, 100)) > detail(b, (110, 80, 130, 100)) * 0.8
        ),
    ),
    "sharpen": ("sharpen / enhance details", lambda b, a: detail(a) > detail(b) * 1.2),
    "enhance details": ("sharpen / enhance details", lambda b, a: detail(a) > detail(b) * 1.2),
    "posterize": ("posterize", lambda b, a: colours(a) < colours(b) / 2),
    "anime style": (
        "anime (cel shading)",
        lambda b, a: colours(a) < colours(b) / 2 and hsv(a, 1) > hsv(b, 1),
    ),
    "glitch": (
        "glitch (channel shift)",
        lambda b, a: (
            mean(ImageChops.difference(a.getchannel("R"), b.getchannel("R")), 0) > 5
            and mean(ImageChops.difference(a.getchannel("G"), b.getchannel("G")), 0)
            < mean(ImageChops.difference(a.getchannel("R"), b.getchannel("R")), 0)
        ),
    ),
    "studio light": ("studio light", lambda b, a: luma(a) > luma(b) + 10),
}


def test_every_vocabulary_entry_has_a_check() -> None:
    checked = {name for name, _check in CHECKS.values()}
    names = set(VOCABULARY[:-1])  # the last entry is retouch's recolouring, tested below
    assert names == checked


@pytest.mark.parametrize("prompt", sorted(CHECKS))
async def test_each_word_produces_its_operation(prompt: str) -> None:
    expected, check = CHECKS[prompt]
    before, after, model = await run(prompt)
    assert model == f"pillow:{expected}"
    assert ImageChops.difference(before, after).getbbox() is not None
    assert check(before, after), prompt


PRESET_OPERATIONS = {
    "Synthwave": "synthwave (neon duotone)",
    "Anime": "anime (cel shading)",
    "Lomo": "lomo (vignette)",
    "Glitch": "glitch (channel shift)",
    "Blur Background": "blur background",
    "Enhance Details": "sharpen / enhance details",
    "Warmer Lighting": "warmer",
    "Studio Light": "studio light",
}


@pytest.mark.parametrize("preset", system_presets(), ids=lambda p: p[1])
async def test_every_system_preset_maps_to_its_operation(preset: tuple[str, ...]) -> None:
    _id, name, category, _description, prompt = preset
    action = EditAction.FILTER if category == "filter" else EditAction.ADJUST
    expected = PRESET_OPERATIONS[name]
    assert choose(action, prompt).name == expected
    before, after, _model = await run(prompt, action)
    matching = [check for op, check in CHECKS.values() if op == expected]
    assert any(check(before, after) for check in matching), name


async def test_an_unknown_prompt_fails_with_what_the_engine_understands() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        await run("paint a dragon in the sky")
    message = caught.value.message
    for name in VOCABULARY:
        assert name in message


async def test_a_retouch_with_a_colour_recolours_around_the_click_point() -> None:
    point = Point(60, 45)  # inside the red-ish top-left quadrant
    before, after, model = await run("make the shirt blue", EditAction.RETOUCH, hotspots=(point,))
    assert model == "pillow:recolour blue"
    near = (50, 35, 70, 55)
    far = (200, 150, 235, 175)
    assert mean(after.crop(near), 2) > mean(after.crop(near), 0) + 40
    assert mean(before.crop(near), 0) > mean(before.crop(near), 2)
    assert ImageChops.difference(before.crop(far), after.crop(far)).getbbox() is None


async def test_a_retouch_applies_other_words_only_around_the_points() -> None:
    before, after, _ = await run("brighter here", EditAction.RETOUCH, hotspots=(Point(200, 150),))
    near, far = (190, 140, 210, 160), (0, 0, 30, 30)
    assert luma(after.crop(near)) > luma(before.crop(near)) + 20
    assert ImageChops.difference(before.crop(far), after.crop(far)).getbbox() is None


async def test_png_alpha_survives_and_jpeg_stays_jpeg() -> None:
    source = textured("RGBA")
    source.putalpha(Image.new("L", SIZE, 128))
    data = encode(source, "PNG")
    result = await LocalEngine().run(
        EngineRequest(EditAction.FILTER, "sepia", (), data, "image/png", *SIZE, 30)
    )
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "PNG"
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema() == (128, 128)
    _before, _after, _model = await run("sepia", fmt="JPEG")
