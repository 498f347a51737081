"""Crop: exact pixels of the upright image (EXIF orientation applied), aspect ratios, and
the format family kept."""

from __future__ import annotations

import io
import uuid

from PIL import Image
from pixelshop.projects.v1 import projects_pb2 as pb

from services.projects.tests.conftest import Stack


def rotated_jpeg() -> bytes:
    """Stored 320x240 landscape with EXIF orientation 6: shown as 240x320 portrait. The
    stored top-left quadrant (red) is shown at the top right."""
    image = Image.new("RGB", (320, 240), (30, 40, 210))
    image.paste((220, 30, 30), (0, 0, 160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


async def test_crop_coordinates_are_of_the_upright_image(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, rotated_jpeg())
    assert (project.width, project.height) == (240, 320)
    done = await stack.apply(
        auth, project.id, crop=pb.CropParams(x=120, y=0, width=120, height=160)
    )
    result = stack.assets.image(uuid.UUID(done.edit.result_asset_id))
    assert result.format == "JPEG"
    assert result.size == (120, 160)
    r, _g, b = result.convert("RGB").getpixel((60, 80))
    assert r > 180
    assert b < 80


async def test_png_with_alpha_stays_png_with_alpha(stack: Stack) -> None:
    user_id, auth = stack.user()
    image = Image.new("RGBA", (50, 40), (10, 200, 10, 100))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    project = await stack.project(auth, user_id, buffer.getvalue())
    done = await stack.apply(
        auth, project.id, crop=pb.CropParams(x=5, y=5, width=20, height=20, aspect_ratio="1:1")
    )
    result = stack.assets.image(uuid.UUID(done.edit.result_asset_id))
    assert result.format == "PNG"
    assert result.mode == "RGBA"
    assert result.getpixel((3, 3))[3] == 100
