"""Operating parked events on a real Postgres (ADR 0015): an event whose handler kept
failing is parked; once the cause is fixed an operator replays it (runtime.events
`replay_parked`, each service's `replay-parked` command), and the leader's gauge
`pixelshop_events_parked` says how many are parked now.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from runtime.db import Database
from runtime.events import (
    USER_DELETED,
    USER_TIER_CHANGED,
    CursorStore,
    Event,
    OutboxFollower,
    replay_parked,
)
from runtime.metrics import Metrics
from runtime.parked import add_parked_commands, run_parked_command_from
from services.presets import models as presets_models
from tests import test_event_pipeline as pipeline
from tests.support.settings import INTERNAL_SECRET, runtime_url
from tests.test_event_pipeline import Consumer, OutboxSource, append

# The event pipeline's fixtures: identity's database and a throwaway consumer schema.
identity_db = pipeline.identity_db
consumer = pipeline.consumer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Handler:
    """A handler that fails for the users in `broken` (with a message an operator must not
    see in the table) until they are removed; records every event it handled."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.broken: set[uuid.UUID] = set()
        self.calls: list[uuid.UUID] = []
        self.hold: uuid.UUID | None = None
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, session: AsyncSession, event: Event) -> None:
        self.calls.append(event.id)
        if event.user_id == self.hold:
            self.hold = None  # only the first replay waits
            self.entered.set()
            await self.release.wait()
        await session.execute(
            insert(self.consumer.handled)
            .values(event_id=event.id, replica="replay")
            .on_conflict_do_nothing()
        )
        if event.user_id in self.broken:
            raise RuntimeError(f"mailbox of {event.user_id}@example.com is full")


def make_follower(
    identity_db: Database,
    consumer: Consumer,
    handler: Handler,
    *,
    metrics: Metrics | None = None,
    after_round: list[int] | None = None,
) -> OutboxFollower:
    async def count_round() -> None:
        if after_round is not None:
            after_round.append(1)

    return OutboxFollower(
        OutboxSource(identity_db, consumer.schema),
        consumer.database,
        CursorStore(consumer.database, consumer.cursors),
        consumer.parked,
        {USER_DELETED: handler, USER_TIER_CHANGED: handler},
        name=f"test-{consumer.schema}",
        after_round=count_round,
        metrics=metrics,
        poll_seconds=0.01,
        max_attempts=3,
        retry_seconds=0.001,
    )


async def park(
    identity_db: Database, follower: OutboxFollower, handler: Handler, users: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """Appends a `user.deleted` event per user with a broken handler and follows until they
    are parked; answers their event ids."""
    for user in users:
        async with identity_db.transaction() as session:
            await append(session, user, USER_DELETED)
    handler.broken |= set(users)
    await follower.follow_once()
    parked = await follower.parked()
    assert [event.user_id for event in parked] == list(users)
    return [event.event_id for event in parked]


async def handled(consumer: Consumer) -> set[uuid.UUID]:
    async with consumer.database.read() as session:
        return set(await session.scalars(sa.select(consumer.handled.c.event_id)))


def gauge(metrics: Metrics, event_type: str = USER_DELETED) -> str | None:
    prefix = f'pixelshop_events_parked{{source="identity",type="{event_type}"}} '
    for line in metrics.render().splitlines():
        if line.startswith(prefix):
            return line.removeprefix(prefix)
    return None


async def test_a_parked_event_is_replayed_once_fixed_and_the_gauge_follows(
    identity_db: Database, consumer: Consumer
) -> None:
    handler = Handler(consumer)
    metrics = Metrics("test")
    rounds: list[int] = []
    follower = make_follower(identity_db, consumer, handler, metrics=metrics, after_round=rounds)
    try:
        await replay_and_watch_the_gauge(identity_db, consumer, follower, handler, metrics, rounds)
    finally:
        await follower.leadership.release()


async def replay_and_watch_the_gauge(
    identity_db: Database,
    consumer: Consumer,
    follower: OutboxFollower,
    handler: Handler,
    metrics: Metrics,
    rounds: list[int],
) -> None:
    await park(identity_db, follower, handler, [uuid.uuid4()])
    assert await follower.round()
    assert gauge(metrics) == "1"
    assert gauge(metrics, USER_TIER_CHANGED) == "0"  # every followed type has a series
    (event_id,) = [event.event_id for event in await follower.parked()]
    assert event_id not in await handled(consumer)
    rounds.clear()

    handler.broken.clear()  # the cause is fixed
    report = await follower.replay_parked()
    assert (report.replayed, report.failing) == (1, 0)
    assert await follower.parked() == []
    assert event_id in await handled(consumer)
    assert rounds == [1]  # the follow-up work (a purge) ran after the replay

    assert await follower.round()
    assert gauge(metrics) == "0"
    # Nothing is left to replay: nothing runs, no follow-up either.
    rounds.clear()
    report = await follower.replay_parked()
    assert (report.replayed, report.failing) == (0, 0)
    assert rounds == []


async def test_a_replay_that_still_fails_keeps_the_row_and_counts_the_attempt(
    identity_db: Database, consumer: Consumer
) -> None:
    handler = Handler(consumer)
    follower = make_follower(identity_db, consumer, handler)
    still_broken, fixed = uuid.uuid4(), uuid.uuid4()
    await park(identity_db, follower, handler, [still_broken, fixed])
    (before, _) = await follower.parked()
    handler.broken = {still_broken}

    report = await follower.replay_parked()
    assert (report.replayed, report.failing) == (1, 1)
    (after,) = await follower.parked()
    assert after.event_id == before.event_id
    assert (after.attempts, after.last_error) == (before.attempts + 1, "RuntimeError")
    assert after.parked_at > before.parked_at
    assert after.event_id not in await handled(consumer)  # its savepoint was rolled back
    async with consumer.database.read() as session:
        stored = json.dumps(
            [list(row) for row in await session.execute(sa.select(consumer.parked))], default=str
        )
    assert "example.com" not in stored  # the message never reaches the table

    report = await follower.replay_parked()
    assert (report.replayed, report.failing) == (0, 1)
    assert [event.attempts for event in await follower.parked()] == [before.attempts + 2]


async def test_two_concurrent_replays_handle_each_event_once(
    migrated_db: str, identity_db: Database, consumer: Consumer
) -> None:
    handler = Handler(consumer)
    follower = make_follower(identity_db, consumer, handler)
    first, second = uuid.uuid4(), uuid.uuid4()
    events = await park(identity_db, follower, handler, [first, second])
    handler.broken.clear()
    handler.calls.clear()
    handler.hold = first  # the first replay holds `first`'s row while the other runs
    other_db = Database.connect(migrated_db, consumer.schema, pool_size=2)
    try:
        one = asyncio.create_task(
            replay_parked(consumer.database, consumer.parked, {USER_DELETED: handler})
        )
        await asyncio.wait_for(handler.entered.wait(), 30)
        # The other replay passes over the claimed row and replays the rest.
        two = await asyncio.wait_for(
            replay_parked(other_db, consumer.parked, {USER_DELETED: handler}), 30
        )
        handler.release.set()
        first_report = await one
    finally:
        handler.release.set()
        await other_db.close()
    assert (first_report.replayed, two.replayed) == (1, 1)
    assert (first_report.failing, two.failing) == (0, 0)
    assert sorted(handler.calls) == sorted(events)  # each handled exactly once
    assert await follower.parked() == []


async def test_one_event_is_replayed_by_its_id(identity_db: Database, consumer: Consumer) -> None:
    handler = Handler(consumer)
    follower = make_follower(identity_db, consumer, handler)
    events = await park(identity_db, follower, handler, [uuid.uuid4(), uuid.uuid4()])
    handler.broken.clear()

    report = await follower.replay_parked(events[1])
    assert (report.replayed, report.failing, report.claimed) == (1, 0, True)
    assert [event.event_id for event in await follower.parked()] == events[:1]
    assert await handled(consumer) >= {events[1]}
    assert events[0] not in await handled(consumer)

    report = await follower.replay_parked(uuid.uuid4())  # not parked
    assert (report.replayed, report.failing, report.claimed) == (0, 0, False)
    assert [event.event_id for event in await follower.parked()] == events[:1]


class Components:
    """What a composition root builds for the command: counted when closed."""

    def __init__(self) -> None:
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


def parked_options(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parked_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(args)


async def test_a_services_command_builds_its_components_runs_and_closes_them(
    identity_db: Database, consumer: Consumer
) -> None:
    """runtime.parked.run_parked_command_from, as every service's main() calls it."""
    handler = Handler(consumer)
    follower = make_follower(identity_db, consumer, handler)
    events = await park(identity_db, follower, handler, [uuid.uuid4()])
    handler.broken.clear()
    built: list[Components] = []

    def build() -> Components:
        built.append(Components())
        return built[-1]

    listed = io.StringIO()
    code = await run_parked_command_from(
        build, lambda _: follower, parked_options("parked"), listed
    )
    assert code == 0
    assert [json.loads(line)["event_id"] for line in listed.getvalue().splitlines()] == [
        str(events[0])
    ]
    replayed = io.StringIO()
    options = parked_options("replay-parked")
    assert await run_parked_command_from(build, lambda _: follower, options, replayed) == 0
    assert json.loads(replayed.getvalue()) == {"replayed": 1, "failing": 0}
    assert await follower.parked() == []

    def no_follower(components: Components) -> OutboxFollower:
        raise RuntimeError("the follower could not be built")

    with pytest.raises(RuntimeError):
        await run_parked_command_from(build, no_follower, parked_options("parked"))
    assert [c.closed for c in built] == [1, 1, 1]  # closed every time, failing or not


async def test_a_standby_exports_no_parked_gauge(
    migrated_db: str, identity_db: Database, consumer: Consumer
) -> None:
    handler = Handler(consumer)
    leader_metrics, standby_metrics = Metrics("a"), Metrics("b")
    leader = make_follower(identity_db, consumer, handler, metrics=leader_metrics)
    other_db = Database.connect(migrated_db, consumer.schema, pool_size=2)
    standby = OutboxFollower(
        OutboxSource(identity_db, consumer.schema),
        other_db,
        CursorStore(other_db, consumer.cursors),
        consumer.parked,
        {USER_DELETED: handler},
        name=f"test-{consumer.schema}",
        metrics=standby_metrics,
    )
    try:
        await park(identity_db, leader, handler, [uuid.uuid4()])
        assert await leader.round()
        assert not await standby.round()
        assert gauge(leader_metrics) == "1"
        assert gauge(standby_metrics) is None
        await leader.leadership.release()
        assert await standby.round()  # the new leader reports what is parked now
        assert gauge(standby_metrics) == "1"
    finally:
        await leader.leadership.release()
        await standby.leadership.release()
        await other_db.close()


def run_presets(migrated_db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PIXELSHOP_PRESETS_DATABASE_URL": runtime_url(migrated_db, "presets"),
        "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
        "PIXELSHOP_PRESETS_LOG_JSON": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.presets", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_presets_command_lists_and_replays_parked_events(migrated_db: str) -> None:
    """`python -m services.presets parked|replay-parked` on the migrated schema: a replayed
    `user.deleted` records the tombstone and its purge runs; an event that still fails
    keeps its row and the command exits 1."""
    database = Database.connect(runtime_url(migrated_db, "presets"), presets_models.SCHEMA, 2)
    parked, tombstones = presets_models.parked_events, presets_models.deleted_users
    user = uuid.uuid4()
    good, bad = uuid.uuid4(), uuid.uuid4()
    xact = random.randrange(10**9, 2 * 10**9)
    try:
        async with database.transaction() as session:
            for sequence, (event_id, user_id) in enumerate([(good, user), (bad, None)], 1):
                await session.execute(
                    sa.insert(parked).values(
                        source="identity",
                        xact_id=xact,
                        sequence=sequence,
                        event_id=event_id,
                        type=USER_DELETED,
                        user_id=user_id,
                        payload={},
                        attempts=5,
                        last_error="OperationalError",
                    )
                )

        listed = await asyncio.to_thread(run_presets, migrated_db, "parked")
        assert listed.returncode == 0, listed.stderr
        lines = [json.loads(line) for line in listed.stdout.splitlines()]
        mine = [line for line in lines if line["event_id"] in (str(good), str(bad))]
        assert [(m["event_id"], m["user_id"], m["attempts"]) for m in mine] == [
            (str(good), str(user), 5),
            (str(bad), None, 5),
        ]
        assert (mine[0]["type"], mine[0]["last_error"]) == (USER_DELETED, "OperationalError")
        assert {"source", "position", "parked_at"} <= set(mine[0])

        dry = await asyncio.to_thread(run_presets, migrated_db, "replay-parked", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert str(good) in dry.stdout

        replayed = await asyncio.to_thread(run_presets, migrated_db, "replay-parked")
        assert replayed.returncode == 1, replayed.stderr  # one still fails
        assert json.loads(replayed.stdout.splitlines()[-1]) == {"replayed": 1, "failing": 1}
        async with database.read() as session:
            rows = {
                row.event_id: row
                for row in await session.execute(
                    sa.select(parked).where(parked.c.event_id.in_([good, bad]))
                )
            }
            tombstone = (
                await session.execute(sa.select(tombstones).where(tombstones.c.user_id == user))
            ).one()
        assert set(rows) == {bad}
        assert (rows[bad].attempts, rows[bad].last_error) == (6, "MalformedEvent")
        assert tombstone.purged_at is not None  # the purge the replay owed has run

        missing = await asyncio.to_thread(
            run_presets, migrated_db, "replay-parked", "--event-id", str(uuid.uuid4())
        )
        assert missing.returncode == 1
        assert "no parked event" in missing.stderr
    finally:
        async with database.transaction() as session:
            await session.execute(sa.delete(parked).where(parked.c.event_id.in_([good, bad])))
        await database.close()


@pytest.mark.parametrize("service", ["projects", "assets", "presets", "billing"])
def test_every_following_service_has_the_parked_commands(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module = __import__(f"services.{service}.server", fromlist=["main"])
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out
    assert "replay-parked" in usage
    assert "parked " in usage
    with pytest.raises(SystemExit) as exited:
        module.main(["replay-parked", "--help"])
    assert exited.value.code == 0
    assert "--event-id" in capsys.readouterr().out
