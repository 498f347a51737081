"""Issue 7: a deleted account is refused everywhere and nothing of it remains.

Over HTTP against the whole suite (one process per service): after DELETE /v1/users/me
the still-valid access token gets 401 from every service (identity, assets, presets,
projects, billing) within a few seconds (polled, no timing asserted); once the purges ran,
no row, object or like of the user remains (nor a project, an edit, a usage counter or a
reservation; no object in the S3 bucket), and its e-mail address is in no text column of
any table of any schema.

Writes in flight during the deletion are held at known points, so the overlap is forced
rather than hoped for: inside their transaction (the test's own transaction locks tables
they write, and waits until Postgres shows every write waiting on it), or at the object
write (an S3 proxy holds the PUT); then the deletion runs, the test waits until it has
reached every service (and is held behind the writes, or has purged past them), and
releases. Written before the tombstone and purged, or refused after it: nothing remains.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from runtime.tombstones import user_lock_key
from tests.e2e.conftest import Suite
from tests.support.api import (
    Account,
    a_system_preset,
    apply_edit,
    bearer,
    create_preset,
    create_project,
    delete_account,
    sign_up,
    upload,
    uploaded,
)
from tests.support.images import image_bytes
from tests.support.waiting import eventually

CONSUMERS = ("assets", "presets", "projects", "billing")
PICTURE = image_bytes("PNG", (48, 32))


async def refused_everywhere(http: httpx.AsyncClient, account: Account) -> bool:
    calls = [
        http.get("/v1/users/me", headers=bearer(account)),
        http.get("/v1/assets", headers=bearer(account)),
        http.get("/v1/presets?scope=mine", headers=bearer(account)),
        http.get("/v1/projects", headers=bearer(account)),
        http.get("/v1/billing/usage", headers=bearer(account)),
    ]
    codes = [response.status_code for response in await asyncio.gather(*calls)]
    assert set(codes) <= {200, 401}, codes
    return codes == [401] * len(calls)


async def purge_state(db: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, str]:
    """Per consuming service: no tombstone yet, recorded (purge owed), or purged."""
    state = {}
    for schema in CONSUMERS:
        purged = await db.fetchval(
            f"SELECT purged_at IS NOT NULL FROM {schema}.deleted_users WHERE user_id = $1",
            user_id,
        )
        state[schema] = {None: "no tombstone", False: "purge owed", True: "purged"}[purged]
    return state


async def purged_everywhere(db: asyncpg.Connection, user_id: uuid.UUID) -> bool:
    return set((await purge_state(db, user_id)).values()) == {"purged"}


ROWS = ("assets", "presets", "likes", "projects", "edits", "usage")


async def rows_of(db: asyncpg.Connection, user_id: uuid.UUID) -> dict[str, int]:
    return {
        "assets": await db.fetchval(
            "SELECT count(*) FROM assets.assets WHERE owner_id = $1", user_id
        ),
        "presets": await db.fetchval(
            "SELECT count(*) FROM presets.presets WHERE owner_id = $1", user_id
        ),
        "likes": await db.fetchval(
            "SELECT count(*) FROM presets.preset_likes WHERE user_id = $1", user_id
        ),
        "projects": await db.fetchval(
            "SELECT count(*) FROM projects.projects WHERE owner_id = $1", user_id
        ),
        "edits": await db.fetchval(
            "SELECT count(*) FROM projects.edits WHERE owner_id = $1", user_id
        ),
        "usage": await db.fetchval(
            "SELECT (SELECT count(*) FROM billing.usage_counters WHERE user_id = $1)"
            " + (SELECT count(*) FROM billing.usage_reservations WHERE user_id = $1)",
            user_id,
        ),
    }


def objects_of(suite: Suite, user_id: uuid.UUID) -> list[str]:
    """The user's objects in the bucket (every key of theirs holds their id)."""
    return suite.s3.keys(containing=str(user_id))


async def tables_mentioning(db: asyncpg.Connection, needle: str) -> list[str]:
    """Every text-like column of every table of every schema that contains `needle`."""
    columns = await db.fetch(
        """
        SELECT c.table_schema, c.table_name, c.column_name
        FROM information_schema.columns c
        JOIN information_schema.tables t
          ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE t.table_type = 'BASE TABLE'
          AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
          AND c.data_type IN ('text', 'character varying', 'character', 'jsonb', 'json',
                              'ARRAY', 'USER-DEFINED', 'bytea')
        """
    )
    found = []
    for column in columns:
        schema, table, name = column["table_schema"], column["table_name"], column["column_name"]
        hit = await db.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{schema}"."{table}" '
            f'WHERE position(lower($1) IN lower("{name}"::text)) > 0)',
            needle,
        )
        if hit:
            found.append(f"{schema}.{table}.{name}")
    return found


@pytest.fixture
async def db(e2e_db: str) -> Any:
    connection = await asyncpg.connect(e2e_db)
    try:
        yield connection
    finally:
        await connection.close()


async def nothing_of_the_user_left(
    http: httpx.AsyncClient, suite: Suite, db: asyncpg.Connection, account: Account
) -> None:
    """Once every purge ran (and every write answered): no row and no object of the user,
    and the old token is refused for reads and writes everywhere."""
    user_id = uuid.UUID(account["user"]["id"])
    await eventually(lambda: refused_everywhere(http, account), "401 on every service")
    await eventually(
        lambda: purged_everywhere(db, user_id),
        "the purge in every consuming service",
        state=lambda: purge_state(db, user_id),
    )
    assert await rows_of(db, user_id) == dict.fromkeys(ROWS, 0)
    assert objects_of(suite, user_id) == []
    assert (await upload(http, account, PICTURE)).status_code == 401
    assert (await create_preset(http, account)).status_code == 401
    # And the purges took nobody's object from under a ready row.
    stored = set(suite.s3.keys())
    ready = await db.fetch("SELECT storage_key FROM assets.assets WHERE state = 'ready'")
    assert [r["storage_key"] for r in ready if r["storage_key"] not in stored] == []


async def test_a_deleted_account_is_refused_everywhere_and_leaves_nothing(
    http: httpx.AsyncClient, suite: Suite, db: asyncpg.Connection
) -> None:
    leaving, staying = await sign_up(http), await sign_up(http)
    user_id = uuid.UUID(leaving["user"]["id"])
    asset_id = await uploaded(http, leaving, PICTURE, filename="mine.png")
    preset = await create_preset(http, leaving)
    assert preset.status_code == 200, preset.text
    readable = await http.get(
        f"/v1/presets/{preset.json()['preset']['id']}", headers=bearer(staying)
    )
    assert readable.status_code == 200, readable.text  # unlisted: whoever has the link
    theirs = (await create_preset(http, staying)).json()["preset"]["id"]
    for target in (await a_system_preset(http, leaving), theirs):
        liked = await http.post(f"/v1/presets/{target}:like", headers=bearer(leaving), json={})
        assert liked.status_code == 200, liked.text
    project = await create_project(http, leaving, asset_id, "Mine")
    assert project.status_code == 200, project.text
    pid = project.json()["project"]["id"]
    cropped = await apply_edit(http, leaving, pid, crop={"x": 0, "y": 0, "width": 24, "height": 16})
    assert cropped.status_code == 200, cropped.text
    counted = await rows_of(db, user_id)
    assert counted.pop("usage") > 0  # the upload's storage is counted
    assert counted == {"assets": 2, "presets": 1, "likes": 2, "projects": 1, "edits": 1}
    assert objects_of(suite, user_id)

    await delete_account(http, leaving)

    await nothing_of_the_user_left(http, suite, db, leaving)
    assert await tables_mentioning(db, leaving["email"]) == []
    assert await tables_mentioning(db, leaving["username"]) == []
    # The probe: the unlisted preset made before the deletion was still readable and
    # forkable by others 19 minutes later. Now it is gone for everyone.
    mine = preset.json()["preset"]["id"]
    assert (await http.get(f"/v1/presets/{mine}", headers=bearer(staying))).status_code == 404
    forked = await http.post(f"/v1/presets/{mine}:fork", headers=bearer(staying), json={})
    assert forked.status_code == 404, forked.text
    # The other user's preset lost the like, and is otherwise untouched.
    kept = await http.get(f"/v1/presets/{theirs}", headers=bearer(staying))
    assert kept.json()["preset"].get("likeCount", "0") == "0"  # proto3 omits zero


# -- writes in flight, held at known points ------------------------------------------------
#
# Two holds, so that the overlap with the deletion is forced, not hoped for:
# - inside a write's guarded transaction (it holds the user's tombstone lock shared): the
#   test's own transaction locks tables the write changes (EXCLUSIVE: plain reads pass).
#   The user's lock is one advisory lock of the database, so every service's tombstone
#   then waits for the write;
# - outside any transaction: an upload's object write held in the S3 proxy, after its
#   pending row and its reservation were recorded, while the deletion runs to the end.

HELD_TABLES = ("billing.usage_reservations", "presets.presets", "presets.preset_likes")
UPLOADS, PROJECTS, PRESETS = 3, 2, 3  # below each service's pool of 10 connections


def advisory_key(user_id: uuid.UUID) -> tuple[int, int]:
    """The (classid, objid) pg_locks shows for the user's tombstone lock (one bigint)."""
    key = user_lock_key(user_id) & 0xFFFF_FFFF_FFFF_FFFF
    return key >> 32, key & 0xFFFF_FFFF


async def held_writes(db: asyncpg.Connection, holder: int, user_id: uuid.UUID) -> dict[str, int]:
    """Per service: the user's writes waiting on the holder's locks inside a transaction
    that holds the user's tombstone lock shared (a guarded write's transaction)."""
    classid, objid = advisory_key(user_id)
    rows = await db.fetch(
        """
        SELECT a.application_name AS service, count(*) AS held
        FROM pg_stat_activity a
        WHERE $1 = ANY (pg_blocking_pids(a.pid))
          AND EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
              AND l.mode = 'ShareLock' AND l.classid = $2::bigint::oid
              AND l.objid = $3::bigint::oid AND l.objsubid = 1)
        GROUP BY 1
        """,
        holder,
        classid,
        objid,
    )
    return {row["service"]: row["held"] for row in rows}


async def waiting_to_tombstone(db: asyncpg.Connection, user_id: uuid.UUID) -> set[str]:
    """The services whose tombstone recording waits for the user's lock (exclusive)."""
    classid, objid = advisory_key(user_id)
    rows = await db.fetch(
        """
        SELECT DISTINCT a.application_name AS service
        FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND NOT l.granted AND l.mode = 'ExclusiveLock'
          AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
        """,
        classid,
        objid,
    )
    return {row["service"] for row in rows}


async def lock_waits(db: asyncpg.Connection) -> list[tuple[str, str]]:
    """What the services' connections wait for (for failure messages)."""
    rows = await db.fetch(
        "SELECT application_name, left(query, 70) AS query FROM pg_stat_activity"
        " WHERE application_name LIKE 'pixelshop-%' AND wait_event_type = 'Lock'"
    )
    return [(r["application_name"], r["query"]) for r in rows]


async def pending_uploads(db: asyncpg.Connection, user_id: uuid.UUID) -> int:
    """The user's uploads recorded pending with their reservation (before the object)."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM assets.assets WHERE owner_id = $1 AND state = 'pending'"
            " AND reservation_id IS NOT NULL",
            user_id,
        )
    )


@pytest.fixture
async def holder(e2e_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, for the transaction that holds HELD_TABLES."""
    connection = await asyncpg.connect(e2e_db)
    try:
        yield connection
    finally:
        await connection.close()  # which also releases its locks if the test did not


def started(count: int, write: Callable[[int], Awaitable[httpx.Response]]) -> list[Any]:
    return [asyncio.ensure_future(write(n)) for n in range(count)]


async def answers(writes: dict[str, list[Any]]) -> dict[str, list[httpx.Response]]:
    return {kind: list(await asyncio.gather(*ws)) for kind, ws in writes.items()}


def statuses(answered: dict[str, list[httpx.Response]]) -> dict[str, list[int]]:
    return {kind: [r.status_code for r in rs] for kind, rs in answered.items()}


def said(answered: dict[str, list[httpx.Response]]) -> list[str]:
    """What the refused writes said (for failure messages)."""
    return [
        f"{kind}: {r.status_code} {r.text[:200]}"
        for kind, rs in answered.items()
        for r in rs
        if r.status_code != 200
    ]


async def test_writes_inside_their_transaction_when_the_deletion_comes(
    http: httpx.AsyncClient, suite: Suite, db: asyncpg.Connection, holder: asyncpg.Connection
) -> None:
    """Held inside their guarded transactions: presets' own (preset creations, a like) and
    billing's reservations (of uploads and project creations, before their own service's
    guarded step). Every service's tombstone waits for them; released, those inside their
    own service's transaction commit first and are purged, the others meet the tombstone
    of their own service and are refused; nothing remains."""
    leaving = await sign_up(http)
    user_id = uuid.UUID(leaving["user"]["id"])
    system = await a_system_preset(http, leaving)
    asset_id = await uploaded(http, leaving, PICTURE)  # what the held projects are made of

    hold = holder.transaction()
    await hold.start()
    await holder.execute(f"LOCK TABLE {', '.join(HELD_TABLES)} IN EXCLUSIVE MODE")
    like = f"/v1/presets/{system}:like"
    writes = {
        "upload": started(
            UPLOADS, lambda n: upload(http, leaving, image_bytes("PNG", (40 + n, 30)))
        ),
        "project": started(PROJECTS, lambda n: create_project(http, leaving, asset_id, f"P{n}")),
        "preset": started(PRESETS, lambda n: create_preset(http, leaving)),
        "like": started(1, lambda n: http.post(like, headers=bearer(leaving), json={})),
    }
    try:
        holder_pid = holder.get_server_pid()
        expected = {"pixelshop-billing": UPLOADS + PROJECTS, "pixelshop-presets": PRESETS + 1}

        async def all_held() -> bool:
            return await held_writes(db, holder_pid, user_id) == expected

        await eventually(
            all_held,
            f"every write held in its transaction ({expected})",
            state=lambda: lock_waits(db),
        )
        await delete_account(http, leaving)

        async def deletion_waits() -> bool:
            return await waiting_to_tombstone(db, user_id) == {f"pixelshop-{c}" for c in CONSUMERS}

        await eventually(
            deletion_waits,
            "every consuming service waiting to record the tombstone",
            state=lambda: lock_waits(db),
        )
        assert set((await purge_state(db, user_id)).values()) == {"no tombstone"}
        assert not any(write.done() for kind in writes.values() for write in kind)
    finally:
        await hold.rollback()

    answered = await answers(writes)
    # Committed before the tombstone (which waited for them), or refused after it: no
    # write lands after a tombstone.
    assert statuses(answered) == {
        "upload": [401] * UPLOADS,
        "project": [401] * PROJECTS,
        "preset": [200] * PRESETS,
        "like": [200],
    }, said(answered)
    await nothing_of_the_user_left(http, suite, db, leaving)
    # The purge took the like back off the system preset's count, which stays exact.
    likes, counted = await db.fetchrow(
        "SELECT (SELECT count(*) FROM presets.preset_likes WHERE preset_id = p.id), p.like_count"
        " FROM presets.presets p WHERE p.id = $1",
        uuid.UUID(system),
    )
    assert likes == counted


async def test_uploads_held_at_the_object_write_past_the_purge_leave_nothing(
    http: httpx.AsyncClient, suite: Suite, db: asyncpg.Connection
) -> None:
    """Held outside any transaction, writing the object to S3, while the deletion runs to
    the end in every service (the pending rows purged): released, the objects land after
    the purge, the uploads meet the tombstone when they would become ready, refuse, and
    take their own objects away."""
    leaving = await sign_up(http)
    user_id = uuid.UUID(leaving["user"]["id"])
    proxy = suite.s3.proxy
    proxy.hold(containing=str(user_id))
    try:
        writes = {
            "upload": started(
                UPLOADS, lambda n: upload(http, leaving, image_bytes("PNG", (40 + n, 30)))
            )
        }
        await eventually(
            lambda: proxy.held == UPLOADS and _equal(pending_uploads(db, user_id), UPLOADS),
            f"{UPLOADS} uploads recorded pending, writing their object",
            state=lambda: _pair(proxy.held, pending_uploads(db, user_id)),
        )
        await delete_account(http, leaving)
        await eventually(
            lambda: purged_everywhere(db, user_id),
            "the purge in every consuming service, the uploads still held",
            state=lambda: purge_state(db, user_id),
        )
        assert await rows_of(db, user_id) == dict.fromkeys(ROWS, 0)  # the pending rows too
        assert proxy.held == UPLOADS
        assert not any(write.done() for write in writes["upload"])
    finally:
        proxy.release()

    answered = await answers(writes)
    assert statuses(answered) == {"upload": [401] * UPLOADS}, said(answered)
    await nothing_of_the_user_left(http, suite, db, leaving)


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return bool(await value == expected)


async def _pair(first: object, second: Awaitable[object]) -> tuple[object, object]:
    return first, await second
