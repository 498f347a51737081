"""The listing queries are served by indexes (SPEC section 3), checked with EXPLAIN.

A few thousand presets are inserted with SQL as the admin role inside a transaction that
is rolled back afterwards (ANALYZE's statistics included), so no other test sees them.
The statements explained are the repository's own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runtime.pagination import Keyset
from services.presets.models import Category, Order, Scope
from services.presets.repository import Listing, listing_statement

SEEDED = 5000
RARE_WORD = "zebrafinch"

SEED = text(
    """
    INSERT INTO presets.presets
        (id, owner_id, name, description, prompt, category, visibility,
         like_count, use_count, created_at, updated_at)
    SELECT gen_random_uuid(),
           CASE WHEN g % 100 = 0 THEN CAST(:owner AS uuid) ELSE gen_random_uuid() END,
           'Seeded look ' || g,
           'number ' || g || CASE WHEN g % 1000 = 0 THEN ' :rare' ELSE ' common' END,
           'Make it look seeded.',
           CASE WHEN g % 2 = 0 THEN 'filter' ELSE 'adjustment' END,
           CASE WHEN g % 10 < 7 THEN 'public' WHEN g % 10 < 9 THEN 'private' ELSE 'unlisted' END,
           (g * 7919) % 500,
           (g * 104729) % 900,
           now() - g * interval '1 second',
           now()
    FROM generate_series(1, :count) AS g
    """.replace(":rare", RARE_WORD)
)


async def _plan(connection: AsyncConnection, statement: Select[Any]) -> str:
    compiled = statement.compile(dialect=connection.dialect)
    parameters = tuple(compiled.params[name] for name in compiled.positiontup or ())
    result = await connection.exec_driver_sql(f"EXPLAIN {compiled}", parameters)
    return "\n".join(row[0] for row in result)


@pytest.fixture
async def seeded(admin_engine: AsyncEngine) -> Any:
    owner = uuid.uuid4()
    async with admin_engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(SEED, {"owner": owner, "count": SEEDED})
        # Fresh GIN entries wait in the index's pending list until autovacuum merges
        # them; merge now, as a table that has lived a while would have it.
        await connection.execute(
            text("SELECT gin_clean_pending_list('presets.ix_presets_search'::regclass)")
        )
        await connection.execute(text("ANALYZE presets.presets"))
        yield connection, owner
        await transaction.rollback()


def _listing(viewer: uuid.UUID, scope: Scope, order: Order, **fields: Any) -> Listing:
    values: dict[str, Any] = {"category": None, "terms": (), "after": None, "limit": 51}
    values.update(fields)
    return Listing(viewer_id=viewer, scope=scope, order=order, **values)


@pytest.mark.parametrize(
    ("scope", "order", "fields", "index"),
    [
        (Scope.COMMUNITY, Order.NEWEST, {}, "ix_presets_public_newest"),
        (Scope.COMMUNITY, Order.POPULAR, {}, "ix_presets_public_popular"),
        (Scope.COMMUNITY, Order.USED, {}, "ix_presets_public_used"),
        (
            Scope.COMMUNITY,
            Order.POPULAR,
            {"category": Category.FILTER},
            "ix_presets_public_popular",
        ),
        (Scope.COMMUNITY, Order.NEWEST, {"terms": (RARE_WORD[:6],)}, "ix_presets_search"),
        (Scope.ALL, Order.POPULAR, {"terms": (RARE_WORD,)}, "ix_presets_search"),
        (Scope.MINE, Order.NEWEST, {}, "ix_presets_owner_newest"),
        (Scope.MINE, Order.POPULAR, {}, "ix_presets_owner_newest"),
        (Scope.ALL, Order.NEWEST, {}, "ix_presets_public_newest"),
        (Scope.ALL, Order.NEWEST, {}, "ix_presets_owner_newest"),
    ],
)
async def test_listing_uses_an_index(
    seeded: Any, scope: Scope, order: Order, fields: dict[str, Any], index: str
) -> None:
    connection, owner = seeded
    plan = await _plan(connection, listing_statement(_listing(owner, scope, order, **fields)))
    assert index in plan, plan
    assert "Seq Scan on presets " not in plan, plan


async def test_a_later_page_uses_the_index_too(seeded: Any) -> None:
    connection, owner = seeded
    first = await connection.execute(
        text(
            "SELECT like_count, id FROM presets.presets "
            "WHERE deleted_at IS NULL AND visibility = 'public' "
            "ORDER BY like_count DESC, id DESC OFFSET 200 LIMIT 1"
        )
    )
    like_count, preset_id = first.one()
    listing = _listing(
        owner, Scope.COMMUNITY, Order.POPULAR, after=Keyset(key=like_count, id=preset_id)
    )
    plan = await _plan(connection, listing_statement(listing))
    assert "ix_presets_public_popular" in plan, plan
