"""System presets: four filters and four adjustments, read-only for everyone.

Data, not code: changing a system prompt means a new migration. The ids are fixed so
that other services, tests and clients can name them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import datetime
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "presets"
SEEDED_AT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

# (id, name, category, description, prompt)
SYSTEM_PRESETS = [
    (
        "00000000-0000-4000-8000-000000000001",
        "Synthwave",
        "filter",
        "Neon magenta and cyan, a retro 1980s glow.",
        "Restyle the whole photo as 1980s synthwave art: a neon palette of hot magenta, "
        "electric cyan and deep violet, glowing highlights and a light haze, as if lit by a "
        "sunset over a retro-futuristic city. Keep the composition, the subject and every "
        "person's face and identity as they are; change only colour, light and mood.",
    ),
    (
        "00000000-0000-4000-8000-000000000002",
        "Anime",
        "filter",
        "Clean outlines and cel shading, like a frame from an animated film.",
        "Redraw the photo as a frame of hand-painted anime: clean ink outlines, flat cel "
        "shading with few tones, bright saturated colours and a simplified painterly "
        "background. Keep the same scene, pose and composition, and keep every person "
        "recognisable as the subject they are: the same identity, hairstyle, clothing and "
        "expression.",
    ),
    (
        "00000000-0000-4000-8000-000000000003",
        "Lomo",
        "filter",
        "Saturated film colours and dark corners, like a toy film camera.",
        "Give the photo the look of a lomography film camera: punchy saturated colours, "
        "deeper contrast, a slight cross-processed colour shift and a strong dark vignette "
        "toward the corners. Keep the subject sharp and every person's identity unchanged, "
        "and do not add or remove anything in the scene.",
    ),
    (
        "00000000-0000-4000-8000-000000000004",
        "Glitch",
        "filter",
        "Shifted colour channels and scan lines, like a corrupted video frame.",
        "Apply a digital glitch effect: shift the red and blue channels sideways, displace "
        "a few thin horizontal slices and add faint scan lines, like a damaged video frame. "
        "Keep the subject readable and its identity intact; the distortion is a style and "
        "must not destroy the picture.",
    ),
    (
        "00000000-0000-4000-8000-000000000005",
        "Blur Background",
        "adjustment",
        "A sharp subject in front of a soft, lens-like background blur.",
        "Keep the main subject in sharp focus and blur everything behind it with a smooth, "
        "natural lens blur, as a wide-aperture portrait lens would. Follow the subject's "
        "edges closely, hair included, and do not change the subject itself or anyone's "
        "identity.",
    ),
    (
        "00000000-0000-4000-8000-000000000006",
        "Enhance Details",
        "adjustment",
        "Crisper texture and cleaner shadows without an over-processed look.",
        "Bring out fine detail and texture: sharpen edges gently, recover detail in the "
        "shadows and highlights and reduce noise, with no halos, no oversharpening and no "
        "artificial HDR look. Keep the subject, every person's identity, the colours and "
        "everything in the scene as they are.",
    ),
    (
        "00000000-0000-4000-8000-000000000007",
        "Warmer Lighting",
        "adjustment",
        "Golden-hour warmth on skin and surfaces.",
        "Make the light warmer, like the low sun of the golden hour: move the white balance "
        "toward amber, soften the highlights and add a gentle warm glow on skin and "
        "surfaces. Keep skin tones natural, and leave the subject, every person's identity, "
        "the framing and the content unchanged.",
    ),
    (
        "00000000-0000-4000-8000-000000000008",
        "Studio Light",
        "adjustment",
        "Soft, flattering light as in a portrait studio.",
        "Relight the subject as in a professional portrait studio: a soft key light from the "
        "front and side, gentle fill that opens the shadows and a subtle rim light that "
        "separates the subject from the background. Keep the person's features, expression "
        "and identity exactly, and keep the background as it is.",
    ),
]

presets = sa.table(
    "presets",
    sa.column("id", postgresql.UUID(as_uuid=False)),
    sa.column("name", sa.String()),
    sa.column("category", sa.Text()),
    sa.column("description", sa.String()),
    sa.column("prompt", sa.String()),
    sa.column("visibility", sa.Text()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    schema=SCHEMA,
)


def upgrade() -> None:
    rows = []
    for position, (preset_id, name, category, description, prompt) in enumerate(SYSTEM_PRESETS):
        # Distinct times keep "newest" stable: the seed order, last one first.
        seeded_at = SEEDED_AT + datetime.timedelta(seconds=position)
        rows.append(
            {
                "id": preset_id,
                "name": name,
                "category": category,
                "description": description,
                "prompt": prompt,
                "visibility": "public",
                "created_at": seeded_at,
                "updated_at": seeded_at,
            }
        )
    op.bulk_insert(presets, rows)


def downgrade() -> None:
    ids = [preset_id for preset_id, *_ in SYSTEM_PRESETS]
    op.execute(presets.delete().where(presets.c.id.in_(ids)))
