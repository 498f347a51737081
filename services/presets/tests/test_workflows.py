"""Preset publish as a workflow (ADR 0011): crashed between every pair of steps, the retry
ends consistent.

The workflow is the one the servicer calls, built by the composition root, with the real
identity client against the fake identity: the tier read is a real peer RPC, which the
channel refuses inside a transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.db import RemoteCallInTransaction
from runtime.workflow import SimulatedCrash, crash_at, record_checkpoints
from services.presets.errors import PublicPresetsNotInTier
from services.presets.models import Category, Visibility
from services.presets.server import PresetsComponents, build
from services.presets.service import PresetChanges, PresetDraft
from services.presets.settings import PresetsSettings
from services.presets.workflows import COMMITTED, TIER_READ
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import service_settings


@pytest.fixture
async def components(
    migrated_db: str, fake_identity: FakeIdentity
) -> AsyncIterator[PresetsComponents]:
    settings = service_settings(
        PresetsSettings, migrated_db, identity_addr=fake_identity.address, tier_cache_seconds=0.0
    )
    built = build(settings)
    yield built
    await built.close()


def _draft(name: str, visibility: Visibility = Visibility.PUBLIC) -> PresetDraft:
    return PresetDraft(
        name=name,
        description="",
        prompt="Neon grid, magenta haze.",
        category=Category.FILTER,
        visibility=visibility,
    )


async def _owned(admin_engine: AsyncEngine, owner_id: uuid.UUID) -> list[tuple[str, str, int]]:
    """(name, visibility, version) of every preset row the owner has."""
    async with admin_engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT name, visibility, version FROM presets.presets"
                " WHERE owner_id = :owner ORDER BY name"
            ),
            {"owner": owner_id},
        )
        return [(row.name, row.visibility, row.version) for row in rows]


async def test_publish_reads_the_tier_then_commits(
    components: PresetsComponents, fake_identity: FakeIdentity
) -> None:
    owner, _ = fake_identity.new_user("pro")
    with record_checkpoints() as steps:
        await components.publishing.create(owner, _draft("Steps"))
    assert steps == [TIER_READ, COMMITTED]


@pytest.mark.parametrize("step", [TIER_READ, COMMITTED])
async def test_a_crashed_create_retried_with_its_key_makes_one_public_preset(
    components: PresetsComponents,
    fake_identity: FakeIdentity,
    admin_engine: AsyncEngine,
    step: str,
) -> None:
    owner, _ = fake_identity.new_user("pro")
    key = f"create-{uuid.uuid4()}"
    with crash_at(step), pytest.raises(SimulatedCrash):
        await components.publishing.create(owner, _draft("Crashed"), idempotency_key=key)
    # Before the commit nothing is written; after it the preset is whole.
    expected_before = [] if step == TIER_READ else [("Crashed", "public", 1)]
    assert await _owned(admin_engine, owner) == expected_before

    retried = await components.publishing.create(owner, _draft("Crashed"), idempotency_key=key)
    assert retried.visibility is Visibility.PUBLIC
    assert await _owned(admin_engine, owner) == [("Crashed", "public", 1)]
    again = await components.publishing.create(owner, _draft("Crashed"), idempotency_key=key)
    assert again.id == retried.id
    assert await _owned(admin_engine, owner) == [("Crashed", "public", 1)]


@pytest.mark.parametrize("step", [TIER_READ, COMMITTED])
async def test_a_crashed_update_to_public_retried_bumps_the_version_once(
    components: PresetsComponents,
    fake_identity: FakeIdentity,
    admin_engine: AsyncEngine,
    step: str,
) -> None:
    owner, _ = fake_identity.new_user("pro")
    preset = await components.publishing.create(owner, _draft("Going public", Visibility.PRIVATE))
    publish = PresetChanges(visibility=Visibility.PUBLIC)
    with crash_at(step), pytest.raises(SimulatedCrash):
        await components.publishing.update(preset.id, owner, publish)
    expected_before = ("private", 1) if step == TIER_READ else ("public", 2)
    assert await _owned(admin_engine, owner) == [("Going public", *expected_before)]

    retried = await components.publishing.update(preset.id, owner, publish)
    assert (retried.visibility, retried.version) == (Visibility.PUBLIC, 2)
    assert await _owned(admin_engine, owner) == [("Going public", "public", 2)]


@pytest.mark.parametrize("step", [TIER_READ, COMMITTED])
async def test_a_crashed_publish_without_the_feature_stays_refused(
    components: PresetsComponents,
    fake_identity: FakeIdentity,
    admin_engine: AsyncEngine,
    step: str,
) -> None:
    owner, _ = fake_identity.new_user("free")
    with crash_at(step), pytest.raises((SimulatedCrash, PublicPresetsNotInTier)):
        await components.publishing.create(owner, _draft("Not on Free"), idempotency_key="k")
    with pytest.raises(PublicPresetsNotInTier):
        await components.publishing.create(owner, _draft("Not on Free"), idempotency_key="k")
    assert await _owned(admin_engine, owner) == []


async def test_an_unknown_user_cannot_publish(components: PresetsComponents) -> None:
    with pytest.raises(PublicPresetsNotInTier):
        await components.publishing.create(uuid.uuid4(), _draft("Nobody's"))


async def test_the_tier_cannot_be_asked_inside_a_transaction(
    components: PresetsComponents, fake_identity: FakeIdentity
) -> None:
    """What the old code did (after FOR NO KEY UPDATE in update): refused loudly now."""
    owner, _ = fake_identity.new_user("pro")
    assert (await components.identity.tier(owner)).allows("public_presets")
    async with components.database.transaction():
        with pytest.raises(RemoteCallInTransaction):
            await components.identity.tier(owner)
