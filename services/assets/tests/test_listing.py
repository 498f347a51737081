"""Listing: newest first, keyset pages, the kind filter, tokens that cannot be replayed,
and the indexes behind it (EXPLAIN on a few thousand seeded rows)."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from pixelshop.assets.v1 import assets_pb2, assets_pb2_grpc
from sqlalchemy import event
from sqlalchemy.engine import make_url

from runtime.pagination import Keyset
from services.assets.models import AssetKind
from services.assets.repository import AssetRepository
from services.assets.server import AssetsComponents
from services.assets.tests import images
from services.assets.tests.conftest import Metadata
from services.assets.tests.test_upload import field_violation, upload

NewUser = Callable[..., tuple[uuid.UUID, Metadata]]


async def test_pages_are_newest_first_and_cover_everything_once(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    uploaded = [(await upload(assets, auth, images.jpeg(16, 16))).id for _ in range(5)]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await assets.ListAssets(
            assets_pb2.ListAssetsRequest(page_size=2, page_token=token), metadata=auth
        )
        seen += [a.id for a in page.assets]
        pages += 1
        token = page.next_page_token
        if not token:
            break

    assert seen == list(reversed(uploaded))
    assert pages == 3


async def test_a_page_token_only_works_for_its_own_owner_and_filter(
    assets: assets_pb2_grpc.AssetServiceStub, new_user: NewUser
) -> None:
    _, auth = new_user()
    _, other = new_user()
    for _ in range(3):
        await upload(assets, auth, images.jpeg(16, 16))
    page = await assets.ListAssets(assets_pb2.ListAssetsRequest(page_size=1), metadata=auth)
    assert page.next_page_token

    for request, metadata in (
        (assets_pb2.ListAssetsRequest(page_token=page.next_page_token), other),
        (
            assets_pb2.ListAssetsRequest(
                page_token=page.next_page_token, kind=assets_pb2.ASSET_KIND_UPLOAD
            ),
            auth,
        ),
        (assets_pb2.ListAssetsRequest(page_token=page.next_page_token[:-2] + "AA"), auth),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await assets.ListAssets(request, metadata=metadata)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violation(raised.value) == "page_token"


def _admin_dsn(admin_url: str) -> str:
    return make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


async def _explain(
    components: AssetsComponents, run: Callable[[AssetRepository], Awaitable[Any]]
) -> list[dict[str, Any]]:
    """Runs `run(repository)` and EXPLAINs the last statement it sent, as it was sent."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured.append((statement, parameters))

    engine = components.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        async with components.database.transaction() as session:
            await run(AssetRepository(session))
            # The first statement reads the assets; the second their variants.
            statement, parameters = captured[0]
            connection = await session.connection()
            result = await connection.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters
            )
            plan = result.scalar_one()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    document = json.loads(plan) if isinstance(plan, str) else plan
    return list(_plan_nodes(document[0]["Plan"]))


@pytest.fixture(scope="module")
async def seeded_owner(migrated_db: str) -> uuid.UUID:
    """A few thousand rows over many owners (one with 300 of its own), then ANALYZE."""
    owner = uuid.uuid4()
    connection = await asyncpg.connect(_admin_dsn(migrated_db))
    try:
        await connection.execute(
            """
            INSERT INTO assets.assets (id, owner_id, kind, state, storage_key, mime_type,
                size_bytes, width, height, sha256, filename, created_at)
            SELECT gen_random_uuid(), owners.id,
                   CASE WHEN n % 3 = 0 THEN 'edit_result' ELSE 'upload' END,
                   CASE WHEN n % 50 = 0 THEN 'pending' ELSE 'ready' END,
                   'seed/' || gen_random_uuid(), 'image/jpeg', 1000, 10, 10,
                   repeat('a', 64), 'seed.jpg', now() - make_interval(secs => n)
            FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 40)) AS owners,
                 generate_series(1, 100) AS n
            """
        )
        await connection.execute(
            """
            INSERT INTO assets.assets (id, owner_id, kind, state, storage_key, mime_type,
                size_bytes, width, height, sha256, filename, created_at)
            SELECT gen_random_uuid(), $1,
                   CASE WHEN n % 3 = 0 THEN 'edit_result' ELSE 'upload' END, 'ready',
                   'seed/' || gen_random_uuid(), 'image/jpeg', 1000, 10, 10,
                   repeat('a', 64), 'seed.jpg', now() - make_interval(secs => n)
            FROM generate_series(1, 300) AS n
            """,
            owner,
        )
        # The runtime role may not ANALYZE; the planner needs statistics to choose.
        await connection.execute("ANALYZE assets.assets")
    finally:
        await connection.close()
    return owner


@pytest.mark.parametrize(
    ("kind", "index"),
    [(None, "ix_assets_owner_newest"), (AssetKind.UPLOAD, "ix_assets_owner_kind_newest")],
)
async def test_the_owner_listing_is_served_by_an_index(
    components: AssetsComponents, seeded_owner: uuid.UUID, kind: AssetKind | None, index: str
) -> None:
    after = Keyset(datetime.datetime.now(datetime.UTC), uuid.uuid4())
    for position in (None, after):
        nodes = await _explain(
            components,
            lambda repository, position=position: repository.list_listed(
                seeded_owner, kind=kind, after=position, limit=51
            ),
        )
        assert index in {node.get("Index Name") for node in nodes}, nodes
        assert "Seq Scan" not in {node["Node Type"] for node in nodes}
        assert "Sort" not in {node["Node Type"] for node in nodes}


async def test_the_sweepers_pending_scan_is_served_by_an_index(
    components: AssetsComponents, seeded_owner: uuid.UUID
) -> None:
    nodes = await _explain(
        components,
        lambda repository: repository.claim_stuck_pending(
            limit=500,
            now=datetime.datetime.now(datetime.UTC),
            until=datetime.datetime.now(datetime.UTC),
            created_before=datetime.datetime.now(datetime.UTC),
        ),
    )
    assert "ix_assets_pending_created" in {node.get("Index Name") for node in nodes}, nodes


async def test_the_sweepers_purge_and_settle_claims_are_served_by_their_indexes(
    components: AssetsComponents, seeded_owner: uuid.UUID
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    purge = await _explain(
        components,
        lambda repository: repository.claim_awaiting_purge(limit=500, now=now, until=now),
    )
    assert "ix_assets_awaiting_purge" in {node.get("Index Name") for node in purge}, purge
    settle = await _explain(
        components,
        lambda repository: repository.claim_unsettled(
            limit=500, now=now, until=now, created_before=now
        ),
    )
    assert "ix_assets_unsettled" in {node.get("Index Name") for node in settle}, settle
