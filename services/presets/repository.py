"""Every SQL statement of the presets service.

Counters are changed only by conditional writes in the caller's transaction: a like row
that was really inserted (ON CONFLICT DO NOTHING ... RETURNING) or really deleted
(DELETE ... RETURNING) moves `like_count` by one, so the count stays exact under any
concurrency without reading it first. The repository never commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import FromClause

from runtime.db import Query, Reader, reader
from runtime.pagination import Keyset
from services.presets.models import (
    Category,
    Order,
    Preset,
    Scope,
    Visibility,
    preset_likes,
    preset_uses,
    presets,
)

# Constants, not bind parameters: Postgres uses a partial index only when it can prove
# the query implies the index predicate, which it cannot do for a parameter in a
# generic plan.
_PUBLIC: ColumnElement[str] = literal_column("'public'")
_PRIVATE: ColumnElement[str] = literal_column("'private'")
_SIMPLE: ColumnElement[str] = literal_column("'simple'::regconfig")

_SORT_KEYS = {
    Order.NEWEST: presets.c.created_at,
    Order.POPULAR: presets.c.like_count,
    Order.USED: presets.c.use_count,
}

# Every column a reader sees: not the search document (only WHERE clauses need it) nor
# CreatePreset's idempotency key and request digest.
_COLUMNS = [
    column
    for column in presets.c
    if column.name not in {"search", "idempotency_key", "request_sha256"}
]


@dataclass(frozen=True)
class Listing:
    """What one page of ListPresets asks for."""

    viewer_id: uuid.UUID
    scope: Scope
    order: Order
    category: Category | None
    # Words matched as prefixes against name and description, all of them required.
    terms: tuple[str, ...]
    # The previous page's last row (runtime.pagination).
    after: Keyset | None
    limit: int


@dataclass(frozen=True)
class PresetAccess:
    """The fields the access rules look at, read under a row lock."""

    id: uuid.UUID
    owner_id: uuid.UUID | None
    visibility: Visibility
    version: int


@dataclass(frozen=True)
class NewPreset:
    owner_id: uuid.UUID
    name: str
    description: str
    prompt: str
    category: Category
    visibility: Visibility
    forked_from_id: uuid.UUID | None = None


@dataclass(frozen=True)
class KeyedCreation:
    """The preset an Idempotency-Key already made, and what the request then was."""

    preset_id: uuid.UUID
    request_sha256: bytes


def visible_to(table: FromClause, viewer_id: Any) -> ColumnElement[bool]:
    """Live, and public, unlisted (reached by id) or the viewer's own."""
    return and_(
        table.c.deleted_at.is_(None),
        or_(table.c.visibility != _PRIVATE, table.c.owner_id == viewer_id),
    )


def _live_public() -> list[ColumnElement[bool]]:
    return [presets.c.deleted_at.is_(None), presets.c.visibility == _PUBLIC]


def prefix_tsquery(terms: Sequence[str]) -> str:
    """`synth wave` -> `'synth':* & 'wave':*`; terms hold only letters and digits."""
    return " & ".join(f"'{term}':*" for term in terms)


def _page_of(listing: Listing, scope_conditions: list[ColumnElement[bool]]) -> Select[Any]:
    key = _SORT_KEYS[listing.order]
    conditions = list(scope_conditions)
    if listing.category is not None:
        conditions.append(presets.c.category == listing.category.value)
    if listing.terms:
        query = func.to_tsquery(_SIMPLE, prefix_tsquery(listing.terms))
        conditions.append(presets.c.search.bool_op("@@")(query))
    if listing.after is not None:
        conditions.append(tuple_(key, presets.c.id) < tuple_(listing.after.key, listing.after.id))
    return (
        select(*_COLUMNS)
        .where(*conditions)
        .order_by(key.desc(), presets.c.id.desc())
        .limit(listing.limit)
    )


def listing_statement(listing: Listing) -> Select[Any]:
    """The query of one page (public for the EXPLAIN tests that guard its indexes)."""
    viewer = listing.viewer_id
    if listing.scope is Scope.SYSTEM:
        page = _page_of(listing, [*_live_public(), presets.c.owner_id.is_(None)])
    elif listing.scope is Scope.MINE:
        page = _page_of(listing, [presets.c.owner_id == viewer, presets.c.deleted_at.is_(None)])
    elif listing.scope is Scope.COMMUNITY:
        page = _page_of(
            listing,
            [*_live_public(), presets.c.owner_id.is_not(None), presets.c.owner_id != viewer],
        )
    else:
        # Public rows (system, community and the viewer's public ones) come from the
        # public indexes, the viewer's other rows from the owner index; each branch is
        # already a sorted page, so the merge reads at most twice the page size.
        public = _page_of(listing, _live_public())
        own_hidden = _page_of(
            listing,
            [
                presets.c.owner_id == viewer,
                presets.c.deleted_at.is_(None),
                presets.c.visibility != _PUBLIC,
            ],
        )
        merged = union_all(public, own_hidden).subquery("merged")
        key = merged.c[_SORT_KEYS[listing.order].name]
        page = select(*merged.c).order_by(key.desc(), merged.c.id.desc()).limit(listing.limit)
    rows = page.subquery("page")
    key = rows.c[_SORT_KEYS[listing.order].name]
    return _with_viewer_fields(rows, viewer).order_by(key.desc(), rows.c.id.desc())


def _with_viewer_fields(rows: FromClause, viewer_id: Any) -> Select[Any]:
    """Adds what depends on the viewer: whether they like it, and its source's name."""
    liked = exists().where(
        preset_likes.c.preset_id == rows.c.id, preset_likes.c.user_id == viewer_id
    )
    source = presets.alias("source")
    source_name = (
        select(source.c.name)
        .where(source.c.id == rows.c.forked_from_id, visible_to(source, viewer_id))
        .scalar_subquery()
    )
    return select(*rows.c, liked.label("liked"), source_name.label("forked_from_name"))


def _find_visible_statement() -> Select[Any]:
    """Built once: GetPreset is a hot path, and building this select costs more than
    running it."""
    viewer = bindparam("viewer_id", type_=PG_UUID(as_uuid=True))
    rows = (
        select(*_COLUMNS)
        .where(presets.c.id == bindparam("preset_id", type_=PG_UUID(as_uuid=True)))
        .where(visible_to(presets, viewer))
        .subquery("one")
    )
    return _with_viewer_fields(rows, viewer)


# Compiled once and run on the driver connection (runtime.db.Query, ADR 0020): GetPreset
# is a hot path, and building, caching and processing this select costs more than running it.
_FIND_VISIBLE = Query.of(_find_visible_statement())


def _preset(m: Mapping[str, Any]) -> Preset:
    """A preset from a row's mapping: a driver Record, or a SQLAlchemy row's `_mapping`."""
    return Preset(
        id=m["id"],
        owner_id=m["owner_id"],
        name=m["name"],
        description=m["description"],
        prompt=m["prompt"],
        category=Category(m["category"]),
        visibility=Visibility(m["visibility"]),
        forked_from_id=m["forked_from_id"],
        forked_from_name=m["forked_from_name"],
        like_count=m["like_count"],
        use_count=m["use_count"],
        version=m["version"],
        liked=m["liked"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class PresetReads:
    """The one-preset read, on a Reader: the bare driver connection of
    `Database.reader()`, or a transaction's own (`PresetRepository.find_visible`)."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    async def find_visible(self, preset_id: uuid.UUID, viewer_id: uuid.UUID) -> Preset | None:
        row = await self._reader.fetch_one(_FIND_VISIBLE, preset_id=preset_id, viewer_id=viewer_id)
        return None if row is None else _preset(row)


class PresetRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find_visible(self, preset_id: uuid.UUID, viewer_id: uuid.UUID) -> Preset | None:
        """As `PresetReads.find_visible`, inside this session's transaction."""
        return await PresetReads(await reader(self._session)).find_visible(preset_id, viewer_id)

    async def list_page(self, listing: Listing) -> list[Preset]:
        result = await self._session.execute(listing_statement(listing))
        return [_preset(row._mapping) for row in result]

    async def lock(
        self, preset_id: uuid.UUID, mode: Literal["change", "reference"]
    ) -> PresetAccess | None:
        """Reads a live preset's access fields and locks its row for this transaction.

        "change" (FOR NO KEY UPDATE) serializes edits of one preset; "reference" (FOR KEY
        SHARE) only keeps the row from being deleted while a like or use points at it,
        and blocks neither edits nor counter updates.
        """
        statement = select(
            presets.c.id, presets.c.owner_id, presets.c.visibility, presets.c.version
        ).where(presets.c.id == preset_id, presets.c.deleted_at.is_(None))
        if mode == "change":
            statement = statement.with_for_update(key_share=True)
        else:
            statement = statement.with_for_update(read=True, key_share=True)
        row = (await self._session.execute(statement)).one_or_none()
        if row is None:
            return None
        return PresetAccess(
            id=row.id,
            owner_id=row.owner_id,
            visibility=Visibility(row.visibility),
            version=row.version,
        )

    async def exists(self, preset_id: uuid.UUID) -> bool:
        """Whether a row exists (deleted or not), locked against a concurrent purge."""
        statement = (
            select(presets.c.id)
            .where(presets.c.id == preset_id)
            .with_for_update(read=True, key_share=True)
        )
        return (await self._session.execute(statement)).one_or_none() is not None

    @staticmethod
    def _values(preset: NewPreset) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "owner_id": preset.owner_id,
            "name": preset.name,
            "description": preset.description,
            "prompt": preset.prompt,
            "category": preset.category.value,
            "visibility": preset.visibility.value,
            "forked_from_id": preset.forked_from_id,
        }

    async def insert(self, preset: NewPreset) -> uuid.UUID:
        values = self._values(preset)
        await self._session.execute(insert(presets).values(**values))
        preset_id: uuid.UUID = values["id"]
        return preset_id

    async def insert_keyed(
        self, preset: NewPreset, idempotency_key: str, request_sha256: bytes
    ) -> uuid.UUID | None:
        """Inserts unless the owner already used the key (None then). A concurrent call
        with the same key waits for this one's commit and then finds its row."""
        statement = (
            pg_insert(presets)
            .values(
                **self._values(preset),
                idempotency_key=idempotency_key,
                request_sha256=request_sha256,
            )
            .on_conflict_do_nothing(
                index_elements=[presets.c.owner_id, presets.c.idempotency_key],
                index_where=presets.c.idempotency_key.is_not(None),
            )
            .returning(presets.c.id)
        )
        inserted: uuid.UUID | None = (await self._session.execute(statement)).scalar_one_or_none()
        return inserted

    async def keyed_creation(
        self, owner_id: uuid.UUID, idempotency_key: str
    ) -> KeyedCreation | None:
        """The preset (deleted or not) the owner created with this key, if any."""
        row = (
            await self._session.execute(
                select(presets.c.id, presets.c.request_sha256).where(
                    presets.c.owner_id == owner_id, presets.c.idempotency_key == idempotency_key
                )
            )
        ).one_or_none()
        if row is None:
            return None
        return KeyedCreation(preset_id=row.id, request_sha256=row.request_sha256)

    async def update(self, preset_id: uuid.UUID, changes: dict[str, str]) -> None:
        """Applies column changes and bumps the version (the row is already locked); a
        change to the values the row already holds writes nothing and keeps the version."""
        differs = [presets.c[name].is_distinct_from(value) for name, value in changes.items()]
        await self._session.execute(
            update(presets)
            .where(presets.c.id == preset_id, or_(*differs))
            .values(**changes, version=presets.c.version + 1, updated_at=func.now())
        )

    async def soft_delete(self, preset_id: uuid.UUID) -> None:
        await self._session.execute(
            update(presets)
            .where(presets.c.id == preset_id)
            .values(deleted_at=func.now(), updated_at=func.now())
        )

    async def add_like(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Likes once; answers whether this call added the like (and counted it)."""
        inserted = await self._session.execute(
            pg_insert(preset_likes)
            .values(preset_id=preset_id, user_id=user_id)
            .on_conflict_do_nothing(
                index_elements=[preset_likes.c.preset_id, preset_likes.c.user_id]
            )
            .returning(preset_likes.c.preset_id)
        )
        if inserted.one_or_none() is None:
            return False
        await self._change_like_count(preset_id, +1)
        return True

    async def remove_like(self, preset_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Takes a like back; answers whether there was one (and uncounted it)."""
        deleted = await self._session.execute(
            delete(preset_likes)
            .where(preset_likes.c.preset_id == preset_id, preset_likes.c.user_id == user_id)
            .returning(preset_likes.c.preset_id)
        )
        if deleted.one_or_none() is None:
            return False
        await self._change_like_count(preset_id, -1)
        return True

    async def _change_like_count(self, preset_id: uuid.UUID, delta: int) -> None:
        await self._session.execute(
            update(presets)
            .where(presets.c.id == preset_id)
            .values(like_count=presets.c.like_count + delta)
        )

    async def record_use(self, preset_id: uuid.UUID, edit_id: uuid.UUID) -> uuid.UUID:
        """Counts the edit's use once; answers the preset the edit is recorded for."""
        inserted = await self._session.execute(
            pg_insert(preset_uses)
            .values(edit_id=edit_id, preset_id=preset_id)
            .on_conflict_do_nothing(index_elements=[preset_uses.c.edit_id])
            .returning(preset_uses.c.preset_id)
        )
        if inserted.one_or_none() is not None:
            await self._session.execute(
                update(presets)
                .where(presets.c.id == preset_id)
                .values(use_count=presets.c.use_count + 1)
            )
            return preset_id
        recorded = await self._session.execute(
            select(preset_uses.c.preset_id).where(preset_uses.c.edit_id == edit_id)
        )
        recorded_preset_id: uuid.UUID = recorded.scalar_one()
        return recorded_preset_id

    async def purge_user(self, user_id: uuid.UUID) -> None:
        """Hard-deletes the user's presets, then removes their other likes, uncounting each.

        Their presets' likes and uses go with them (ON DELETE CASCADE); forks others made
        are copies and only lose the link to their source (ON DELETE SET NULL). Every
        preset row this writes (theirs, the ones they like, forks of theirs) is locked
        first, FOR UPDATE and in id order: two purges (an author and someone who liked
        or forked their presets) then wait for each other instead of deadlocking, and a
        concurrent like of one of these presets is waited for (it holds FOR KEY SHARE and
        wants the counter, so a weaker lock here would deadlock).
        """
        own = presets.alias("own")
        touched = union(
            select(presets.c.id).where(presets.c.owner_id == user_id),
            select(preset_likes.c.preset_id).where(preset_likes.c.user_id == user_id),
            select(presets.c.id).where(
                presets.c.forked_from_id.in_(select(own.c.id).where(own.c.owner_id == user_id))
            ),
        ).subquery("touched")
        await self._session.execute(
            select(presets.c.id)
            .where(presets.c.id.in_(select(touched.c.id)))
            .order_by(presets.c.id)
            .with_for_update()
        )
        await self._session.execute(delete(presets).where(presets.c.owner_id == user_id))
        removed = (
            delete(preset_likes)
            .where(preset_likes.c.user_id == user_id)
            .returning(preset_likes.c.preset_id)
            .cte("removed_likes")
        )
        # (preset, user) is unique, so each preset appears at most once in removed_likes.
        await self._session.execute(
            update(presets)
            .where(presets.c.id == removed.c.preset_id)
            .values(like_count=presets.c.like_count - 1)
        )
