"""The operator's commands over parked events, shared by every service that follows an outbox.

A service adds them to its command line with `add_parked_commands(subcommands)` and runs
them with `run_parked_command_from(build, build_follower, options)`: its composition root
builds the components (no server is started) and the `OutboxFollower` on them, the same
handlers and `after_round` the leader uses, and the components are closed after:

- `parked` lists what is parked, one JSON object a line (source, type, event id, user id,
  position, attempts, last error, parked at): ids only, as the table holds them;
- `replay-parked [--event-id ID] [--dry-run]` replays them once the cause is fixed
  (runtime.events.replay_parked) and prints `{"replayed": n, "failing": m}`; it exits 1 if
  any event still fails or the asked-for event is not parked. `--dry-run` lists what it
  would replay and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TextIO, TypeVar

from runtime.events import OutboxFollower, ParkedEvent

PARKED_COMMANDS = ("parked", "replay-parked")


class Closable(Protocol):
    async def close(self) -> None: ...


Components = TypeVar("Components", bound=Closable)


def add_parked_commands(commands: argparse._SubParsersAction[Any]) -> None:
    commands.add_parser("parked", help="list the events parked after their handler kept failing")
    replay = commands.add_parser(
        "replay-parked",
        help="replay parked events once the cause is fixed; exit 1 if any still fails",
    )
    replay.add_argument("--event-id", type=uuid.UUID, help="replay only this event (its id)")
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be replayed; change nothing"
    )


def parked_line(event: ParkedEvent) -> str:
    return json.dumps(
        {
            "source": event.source,
            "type": event.type,
            "event_id": str(event.event_id),
            "user_id": None if event.user_id is None else str(event.user_id),
            "position": [event.position.xact_id, event.position.sequence],
            "attempts": event.attempts,
            "last_error": event.last_error,
            "parked_at": event.parked_at.isoformat(),
        }
    )


async def run_parked_command(
    follower: OutboxFollower, options: argparse.Namespace, out: TextIO | None = None
) -> int:
    """Runs `parked` or `replay-parked`; answers the exit code."""
    out = out or sys.stdout
    event_id: uuid.UUID | None = getattr(options, "event_id", None)
    if options.command == "parked" or getattr(options, "dry_run", False):
        for event in await follower.parked(event_id):
            if options.command == "parked" or event.source == follower.source_name:
                print(parked_line(event), file=out)
        return 0
    report = await follower.replay_parked(event_id)
    print(json.dumps({"replayed": report.replayed, "failing": report.failing}), file=out)
    if not report.claimed:
        print(
            f"no parked event {event_id} to replay (not parked, or another replay has it)",
            file=sys.stderr,
        )
        return 1
    return 1 if report.failing else 0


async def run_parked_command_from(
    build: Callable[[], Components],
    build_follower: Callable[[Components], OutboxFollower],
    options: argparse.Namespace,
    out: TextIO | None = None,
) -> int:
    """A service's `parked` / `replay-parked` command: builds its components, runs the
    command on the follower built on them, closes them; answers the exit code."""
    components = build()
    try:
        return await run_parked_command(build_follower(components), options, out)
    finally:
        await components.close()
