"""The local engine: real, deterministic Pillow operations chosen from the prompt's words.

It is the embedded default (no API key, no network). Each operation has the words that
choose it; the first operation in `OPERATIONS` order whose words appear wins, so the
long system-preset prompts (which mention light, shadows and colours in passing) land on
their main idea: Synthwave on the duotone, Lomo on the vignette, Blur Background on the
blur. A retouch naming a colour recolours the area around its click points; a retouch
naming another operation applies it around the click points only. Anything else fails
with the list of what the engine understands.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from runtime.errors import FailedPrecondition
from services.projects.engines import EngineRequest, EngineResult, Point
from services.projects.engines.imageio import decode_upright, encode_like, result_mime_type
from services.projects.models import EditAction

ENGINE_NAME = "local"

Operation = Callable[[Image.Image, tuple[Point, ...]], Image.Image]


def _pattern(*words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(words) + r")", re.IGNORECASE)


# -- operations on an RGB image ------------------------------------------------------------


def _black_and_white(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def _sepia(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageOps.colorize(ImageOps.grayscale(image), "#2b1b0e", "#f6e7c9", mid="#a67c52")


def _channel_scale(image: Image.Image, red: float, green: float, blue: float) -> Image.Image:
    r, g, b = image.split()
    return Image.merge(
        "RGB",
        (
            r.point(lambda v: min(255, round(v * red))),
            g.point(lambda v: min(255, round(v * green))),
            b.point(lambda v: min(255, round(v * blue))),
        ),
    )


def _warm(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return _channel_scale(image, 1.15, 1.03, 0.82)


def _cool(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return _channel_scale(image, 0.85, 1.0, 1.15)


def _brighter(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.35)


def _darker(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(0.65)


def _more_contrast(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(1.6)


def _less_contrast(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(0.6)


def _more_saturation(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Color(image).enhance(1.7)


def _less_saturation(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageEnhance.Color(image).enhance(0.4)


def _vignette_mask(size: tuple[int, int], strength: float) -> Image.Image:
    """White in the middle, darker toward the corners."""
    width, height = size
    small = Image.new("L", (64, 64), 0)
    draw = ImageDraw.Draw(small)
    for step in range(32):
        shade = round(255 * (1 - strength * (1 - step / 31)))
        inset = step
        draw.ellipse((inset - 12, inset - 12, 75 - inset, 75 - inset), fill=shade)
    return small.resize((width, height), Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(max(1, min(width, height) // 20))
    )


def _apply_vignette(image: Image.Image, strength: float) -> Image.Image:
    mask = _vignette_mask(image.size, strength).convert("RGB")
    return ImageChops.multiply(image, mask)


def _lomo(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    image = ImageEnhance.Color(image).enhance(1.5)
    image = ImageEnhance.Contrast(image).enhance(1.25)
    return _apply_vignette(image, 0.75)


def _vintage(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    image = ImageEnhance.Color(image).enhance(0.6)
    image = _channel_scale(image, 1.08, 1.0, 0.85)
    image = ImageEnhance.Contrast(image).enhance(0.85)
    return _apply_vignette(image, 0.55)


def _synthwave(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    gray = ImageOps.autocontrast(ImageOps.grayscale(image), cutoff=1)
    # Deep violet shadows, magenta mid-tones, a cyan glow in the highlights.
    return ImageOps.colorize(
        gray, "#1b0638", "#7ff6ff", mid="#ff2bd6", blackpoint=0, whitepoint=255, midpoint=150
    )


def _focus_mask(size: tuple[int, int], points: tuple[Point, ...]) -> Image.Image:
    """White (sharp) around the click points, or around the centre without any."""
    width, height = size
    centres = points or (Point(width // 2, height // 2),)
    radius = max(2, round(min(width, height) * 0.28))
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for point in centres:
        draw.ellipse(
            (point.x - radius, point.y - radius, point.x + radius, point.y + radius), fill=255
        )
    return mask.filter(ImageFilter.GaussianBlur(max(1, radius // 3)))


def _blur_background(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    blurred = image.filter(ImageFilter.GaussianBlur(max(2, min(image.size) // 40)))
    return Image.composite(image, blurred, _focus_mask(image.size, points))


def _sharpen(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return image.filter(ImageFilter.UnsharpMask(radius=2, percent=180, threshold=2))


def _posterize(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    return ImageOps.posterize(image, 3)


def _anime(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    smooth = image.filter(ImageFilter.SMOOTH_MORE).filter(ImageFilter.SMOOTH_MORE)
    flat = ImageOps.posterize(ImageEnhance.Color(smooth).enhance(1.4), 3)
    edges = ImageOps.invert(ImageOps.grayscale(smooth).filter(ImageFilter.FIND_EDGES))
    outlines = edges.point(lambda v: 0 if v < 200 else 255).convert("RGB")
    return ImageChops.multiply(flat, outlines)


def _glitch(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    width, height = image.size
    shift = max(1, width // 40)
    r, g, b = image.split()
    r = ImageChops.offset(r, shift, 0)
    b = ImageChops.offset(b, -shift, 0)
    result = Image.merge("RGB", (r, g, b))
    # A few displaced slices, always the same ones for the same size.
    slice_height = max(1, height // 30)
    for index, top in enumerate(range(height // 7, height, max(1, height // 4))):
        band = result.crop((0, top, width, min(height, top + slice_height)))
        result.paste(ImageChops.offset(band, (index + 1) * shift * 2, 0), (0, top))
    # Faint scan lines.
    lines = Image.new("L", (1, height), 255)
    for y in range(0, height, 4):
        lines.putpixel((0, y), 200)
    return ImageChops.multiply(result, lines.resize((width, height)).convert("RGB"))


def _studio(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
    lifted = image.point(lambda v: round(255 * (v / 255) ** 0.75))
    return ImageEnhance.Contrast(lifted).enhance(1.1)


COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 60),
    "blue": (30, 80, 220),
    "purple": (130, 40, 190),
    "pink": (240, 110, 180),
    "teal": (20, 150, 150),
    "brown": (120, 75, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gold": (212, 175, 55),
}
_COLOUR_WORDS = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)


def _recolour(colour: tuple[int, int, int]) -> Operation:
    def recolour(image: Image.Image, points: tuple[Point, ...]) -> Image.Image:
        shade = ImageOps.grayscale(image)
        tinted = ImageOps.colorize(shade, (0, 0, 0), colour, mid=colour)
        # colorize at the midpoint keeps light and shadow but takes the hue of `colour`.
        return tinted

    return recolour


@dataclass(frozen=True)
class Vocabulary:
    name: str  # what the error message lists
    words: re.Pattern[str]
    operation: Operation


OPERATIONS: tuple[Vocabulary, ...] = (
    Vocabulary(
        "glitch (channel shift)", _pattern("glitch", "channel shift", "scan ?lines?"), _glitch
    ),
    Vocabulary(
        "synthwave (neon duotone)",
        _pattern("synthwave", "duotone", "neon", "vaporwave"),
        _synthwave,
    ),
    Vocabulary("anime (cel shading)", _pattern("anime", "cartoon", "cel[- ]shad", "comic"), _anime),
    Vocabulary("posterize", _pattern("posteri[sz]e"), _posterize),
    Vocabulary("lomo (vignette)", _pattern("lomo", "vignette", "toy camera"), _lomo),
    Vocabulary("vintage", _pattern("vintage", "old photo", "faded", "retro film"), _vintage),
    Vocabulary("sepia", _pattern("sepia"), _sepia),
    Vocabulary(
        "black and white",
        _pattern("black and white", "black & white", "b&w", "monochrome", "gr[ae]yscale"),
        _black_and_white,
    ),
    Vocabulary("blur background", _pattern("blur", "bokeh", "depth of field"), _blur_background),
    Vocabulary(
        "sharpen / enhance details", _pattern("sharpen", "enhance", "details?", "crisp"), _sharpen
    ),
    Vocabulary("studio light", _pattern("studio", "relight"), _studio),
    Vocabulary("warmer", _pattern("warm", "golden", "sunset", "amber"), _warm),
    Vocabulary("cooler", _pattern("cool", "cold", "icy", "wintry"), _cool),
    Vocabulary(
        "less contrast",
        _pattern("less contrast", "lower contrast", "reduce contrast", "flatter"),
        _less_contrast,
    ),
    Vocabulary("more contrast", _pattern("contrast", "punchy"), _more_contrast),
    Vocabulary(
        "less saturation",
        _pattern("desaturat", "less saturat", "muted", "washed out"),
        _less_saturation,
    ),
    Vocabulary(
        "more saturation", _pattern("saturat", "vivid", "vibrant", "colou?rful"), _more_saturation
    ),
    Vocabulary("brighter", _pattern("bright", "lighter", "lighten", "exposure"), _brighter),
    Vocabulary("darker", _pattern("dark", "dim", "moody"), _darker),
)

VOCABULARY = [v.name for v in OPERATIONS] + [
    "recolour around the click points (retouch with a colour: " + ", ".join(COLOURS) + ")"
]


@dataclass(frozen=True)
class Choice:
    name: str
    operation: Operation
    local: bool  # only around the click points


def choose(action: EditAction, prompt: str) -> Choice:
    """The operation a prompt asks for; FailedPrecondition listing the vocabulary if none."""
    if action is EditAction.RETOUCH:
        colour = _COLOUR_WORDS.search(prompt)
        if colour is not None:
            name = colour.group(1).lower()
            return Choice(f"recolour {name}", _recolour(COLOURS[name]), True)
    for entry in OPERATIONS:
        if entry.words.search(prompt):
            # Blur background is itself about the click points; everything else a retouch
            # asks for is applied around them only.
            local = action is EditAction.RETOUCH and entry.operation is not _blur_background
            return Choice(entry.name, entry.operation, local)
    raise FailedPrecondition(
        "the local engine does not understand this prompt; it understands: "
        + "; ".join(VOCABULARY),
        reason="PROMPT_NOT_UNDERSTOOD",
    )


def _run(request: EngineRequest) -> EngineResult:
    choice = choose(request.action, request.prompt)
    image = decode_upright(request.source)
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = image.convert("RGB")
    edited = choice.operation(rgb, request.hotspots)
    if choice.local:
        edited = Image.composite(edited, rgb, _focus_mask(rgb.size, request.hotspots))
    if alpha is not None:
        edited = edited.convert("RGBA")
        edited.putalpha(alpha)
    mime = result_mime_type(request.mime_type)
    return EngineResult(
        data=encode_like(edited, mime),
        mime_type=mime,
        width=edited.width,
        height=edited.height,
        model=f"pillow:{choice.name}",
        finish_reason="STOP",
    )


class LocalEngine:
    """Pillow in a worker thread; deterministic: the same input gives the same pixels."""

    name = ENGINE_NAME

    async def run(self, request: EngineRequest) -> EngineResult:
        choose(request.action, request.prompt)  # refuse before spending a thread
        return await asyncio.wait_for(asyncio.to_thread(_run, request), request.timeout)
