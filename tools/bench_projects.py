"""`make bench`'s projects lines (SPEC section 7), against the suite `tools/bench.py` runs.

- undo, redo, jump and apply-crop on a 10,000-step branched history vs a 1-step one
  (median latency ratio, target <= 1.2);
- a history page (ListEdits, 100 edits, at random positions) p50/p99 on that history
  (target p99 <= 5 ms), after a first read of the whole history (shown on its own line:
  it fills the server's cache of encoded finished edits, ADR 0023);
- GetProject over gRPC at 16 clients vs the bare echo service (target >= 0.5, p99 <= 20 ms).

The long history is seeded in one transaction with the shape ApplyEdit gives it (every
seventh step first undoes twice, so it branches all along; chains and their stored paths
as HistoryTree places them, ADR 0012), its results all pointing at the real uploaded
photo so that a crop on it runs for real. The operations measured are the real RPCs.
"""

from __future__ import annotations

import io
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
from PIL import Image
from pixelshop.projects.v1 import projects_pb2, projects_pb2_grpc
from sqlalchemy import bindparam, text, update

from runtime.db import Database
from runtime.pagination import PageTokens
from services.projects.models import edits, projects

LONG_HISTORY = 10_000
ROUNDS = 200
CROPS = 30
PAGES = 1000
# Pages read first and not timed, as `load` warms up before the echo baseline: the first
# reads prepare the statements on each pooled connection.
WARMUP_PAGES = 30


def _photo() -> bytes:
    image = Image.effect_noise((64, 48), 40).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _history_rows(
    project_id: uuid.UUID, owner_id: uuid.UUID, asset: dict[str, Any], steps: int
) -> tuple[list[dict[str, Any]], uuid.UUID | None, uuid.UUID | None]:
    """Rows as ApplyEdit would have left them; answers (rows, head, root's latest child)."""
    rows: list[dict[str, Any]] = []
    by_id: dict[uuid.UUID, dict[str, Any]] = {}
    has_child: set[uuid.UUID | None] = set()
    head: uuid.UUID | None = None
    root_latest: uuid.UUID | None = None
    for seq in range(1, steps + 1):
        if seq % 7 == 0:
            for _ in range(2):
                if head is not None:
                    head = by_id[head]["parent_id"]
        edit_id = uuid.uuid4()
        parent = by_id.get(head) if head is not None else None
        path: list[list[Any]] | None
        if parent is None:
            branch, path, depth = edit_id, [], 1
        elif head not in has_child:
            branch, path, depth = parent["branch_id"], None, parent["depth"] + 1
        else:
            start = by_id[parent["branch_id"]]
            path = [*(start["branch_path"] or []), [start["seq"], parent["depth"]]]
            branch, depth = edit_id, parent["depth"] + 1
        row = {
            "id": edit_id,
            "project_id": project_id,
            "owner_id": owner_id,
            "seq": seq,
            "parent_id": head,
            "depth": depth,
            "branch_id": branch,
            "branch_path": path,
            "latest_child_id": None,
            "action": "crop",
            "params": {
                "x": 0,
                "y": 0,
                "width": asset["width"],
                "height": asset["height"],
                "aspectRatio": "free",
                "fractions": {"x": 0, "y": 0, "width": 1, "height": 1},
            },
            "source_asset_id": asset["id"],
            "source_mime_type": asset["mimeType"],
            "source_width": asset["width"],
            "source_height": asset["height"],
            "source_bytes": int(asset["sizeBytes"]),
            "result_asset_id": asset["id"],
            "result_mime_type": asset["mimeType"],
            "result_width": asset["width"],
            "result_height": asset["height"],
            "result_bytes": int(asset["sizeBytes"]),
            "status": "succeeded",
            "engine": "crop",
            "request_id": str(uuid.uuid4()),
        }
        rows.append(row)
        by_id[edit_id] = row
        has_child.add(head)
        if parent is None:
            root_latest = edit_id
        else:
            parent["latest_child_id"] = edit_id
        head = edit_id
    return rows, head, root_latest


async def _seed(
    database: Database, project_id: uuid.UUID, rows: list[dict[str, Any]], head: Any, root: Any
) -> None:
    async with database.transaction() as session:
        # Redo pointers point forward in seq: set once every row exists.
        await session.execute(edits.insert(), [{**row, "latest_child_id": None} for row in rows])
        pointers = [
            {"edit": row["id"], "child": row["latest_child_id"]}
            for row in rows
            if row["latest_child_id"] is not None
        ]
        if pointers:
            await session.execute(
                update(edits)
                .where(edits.c.id == bindparam("edit"))
                .values(latest_child_id=bindparam("child")),
                pointers,
            )
        await session.execute(
            update(projects)
            .where(projects.c.id == project_id)
            .values(head_edit_id=head, root_latest_child_id=root, edit_count=len(rows))
        )


async def run(base_url: str, env: dict[str, str], admin_url: str, seconds: float) -> list[str]:
    """Called by tools/bench.py with the running suite."""
    import asyncio
    import sys

    from tools.bench import ECHO_METHOD, sign_up
    from tools.pgcluster import free_port
    from tools.run import internal_secret, service_database_url

    echo_port = free_port()
    echo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.bench", "--echo-server", str(echo_port)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel:
            await echo_channel.channel_ready()
            call_echo = echo_channel.unary_unary(ECHO_METHOD)
            return await projects_benchmarks(
                base_url,
                env,
                service_database_url(admin_url, "projects"),
                admin_url,
                env.get("PIXELSHOP_INTERNAL_SECRET") or internal_secret(),
                lambda: call_echo(b"x" * 64),
                await sign_up(base_url),
                seconds,
            )
    finally:
        echo.terminate()
        await echo.wait()


async def projects_benchmarks(
    base_url: str,
    env: dict[str, str],
    database_url: str,
    admin_url: str,
    internal_secret: str,
    echo: Callable[[], Awaitable[Any]],
    token: str,
    seconds: float,
) -> list[str]:
    from tools.bench import interleaved_load, json_claims

    metadata = (("authorization", f"Bearer {token}"),)
    async with httpx.AsyncClient(base_url=base_url) as http:
        uploaded = await http.post(
            "/v1/assets:upload?filename=bench.png",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
            content=_photo(),
        )
        uploaded.raise_for_status()
    asset = uploaded.json()["asset"]
    database = Database.connect(database_url, "projects", pool_size=2)
    lines = [f"Projects: a {LONG_HISTORY:,}-step branched history vs a 1-step one (gRPC)"]
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{env['PIXELSHOP_PROJECTS_PORT']}"
        ) as channel:
            stub = projects_pb2_grpc.ProjectServiceStub(channel)

            async def new_project(name: str) -> projects_pb2.Project:
                response = await stub.CreateProject(
                    projects_pb2.CreateProjectRequest(
                        project=projects_pb2.Project(name=name, original_asset_id=asset["id"])
                    ),
                    metadata=metadata,
                )
                return response.project

            long, short = await new_project("long"), await new_project("short")
            owner_id = uuid.UUID(json_claims(token)["sub"])
            rows, head, root = _history_rows(uuid.UUID(long.id), owner_id, asset, LONG_HISTORY)
            await _seed(database, uuid.UUID(long.id), rows, head, root)
            short_rows, short_head, short_root = _history_rows(
                uuid.UUID(short.id), owner_id, asset, 1
            )
            await _seed(database, uuid.UUID(short.id), short_rows, short_head, short_root)
            # Vacuumed, with fresh statistics, as autovacuum leaves a table after such a
            # burst; otherwise autovacuum's own run lands in the middle of the timings (as
            # the owner: the runtime role may not VACUUM).
            owner = Database.connect(admin_url, "projects", pool_size=1)
            try:
                async with owner.read() as session:
                    for table in ("projects.edits", "projects.projects"):
                        await session.execute(text(f"VACUUM ANALYZE {table}"))
            finally:
                await owner.close()

            # Each round times the long and the short project back to back (an A/B pair,
            # in alternating order), so the machine's drift meets both sides of a ratio.
            async def paired(
                calls: Callable[[str], list[Callable[[], Awaitable[Any]]]], rounds: int
            ) -> list[tuple[float, float]]:
                """Median ms of each step `calls(project_id)` lists, long then short."""
                timings: dict[str, list[list[float]]] = {long.id: [], short.id: []}
                for round_ in range(rounds):
                    order = (long.id, short.id) if round_ % 2 == 0 else (short.id, long.id)
                    for project_id in order:
                        steps = []
                        for call in calls(project_id):
                            started = time.perf_counter()
                            await call()
                            steps.append(time.perf_counter() - started)
                        timings[project_id].append(steps)
                medians = []
                for step in range(len(timings[long.id][0])):
                    long_ms, short_ms = (
                        statistics.median(t[step] for t in timings[p]) * 1000
                        for p in (long.id, short.id)
                    )
                    medians.append((long_ms, short_ms))
                return medians

            def undo_then_redo(project_id: str) -> list[Callable[[], Awaitable[Any]]]:
                return [
                    lambda: stub.Undo(
                        projects_pb2.UndoRequest(project_id=project_id), metadata=metadata
                    ),
                    lambda: stub.Redo(
                        projects_pb2.RedoRequest(project_id=project_id), metadata=metadata
                    ),
                ]

            targets = {
                long.id: [str(r["id"]) for r in rows],
                short.id: [str(r["id"]) for r in short_rows],
            }

            def jump(project_id: str) -> list[Callable[[], Awaitable[Any]]]:
                edit_id = random.choice(targets[project_id])
                return [
                    lambda: stub.Jump(
                        projects_pb2.JumpRequest(project_id=project_id, edit_id=edit_id),
                        metadata=metadata,
                    )
                ]

            crop = projects_pb2.CropParams(x=0, y=0, width=asset["width"], height=asset["height"])

            def apply_crop(project_id: str) -> list[Callable[[], Awaitable[Any]]]:
                request = projects_pb2.ApplyEditRequest(
                    project_id=project_id, request_id=str(uuid.uuid4()), crop=crop
                )
                return [lambda: stub.ApplyEdit(request, metadata=metadata)]

            (long_undo, short_undo), (long_redo, short_redo) = await paired(undo_then_redo, ROUNDS)
            [(long_jump, short_jump)] = await paired(jump, ROUNDS)
            await stub.Jump(
                projects_pb2.JumpRequest(project_id=long.id, edit_id=str(head)), metadata=metadata
            )
            [(long_crop, short_crop)] = await paired(apply_crop, CROPS)
            for name, long_ms, short_ms in (
                ("undo", long_undo, short_undo),
                ("redo", long_redo, short_redo),
                ("jump", long_jump, short_jump),
                ("apply-crop", long_crop, short_crop),
            ):
                lines.append(
                    f"  {name:<10} {long_ms:6.2f} ms vs {short_ms:6.2f} ms median: ratio "
                    f"{long_ms / short_ms:.2f}   (target <= 1.20)"
                )

            tokens = PageTokens.for_service("projects", internal_secret)
            query = f"edits:{long.id}"

            async def page_ms(after: int) -> float:
                request = projects_pb2.ListEditsRequest(
                    project_id=long.id,
                    page_size=100,
                    page_token=tokens.encode([after], query) if after else "",
                )
                started = time.perf_counter()
                await stub.ListEdits(request, metadata=metadata)
                return (time.perf_counter() - started) * 1000

            def percentiles(timings: list[float]) -> str:
                ordered = sorted(timings)
                p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
                return f"p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms"

            # The first read of every edit (the whole history once, in order) encodes it
            # into the server's cache of finished edits (ADR 0023); the target is a page
            # of a history the user has been looking at, at random positions.
            for _ in range(WARMUP_PAGES):
                await page_ms(random.randrange(0, 100))
            first_reads = [await page_ms(after) for after in range(0, LONG_HISTORY, 100)]
            pages = [await page_ms(random.randrange(0, LONG_HISTORY - 100)) for _ in range(PAGES)]
            lines.append(f"  history page, first read of its edits: {percentiles(first_reads)}")
            lines.append(
                f"  history page (100 edits, random positions): {percentiles(pages)}"
                "   (target p99 <= 5 ms)"
            )

            get = projects_pb2.GetProjectRequest(project_id=long.id)
            bare, measured = await interleaved_load(
                [
                    ("bare grpc.aio echo", echo),
                    (
                        "projects.GetProject over gRPC",
                        lambda: stub.GetProject(get, metadata=metadata),
                    ),
                ],
                seconds,
            )
            lines += [bare.line(), measured.line()]
            lines.append(
                f"  GetProject / bare echo throughput: {measured.throughput / bare.throughput:.2f}"
                f"   (target >= 0.50), p99 {measured.p99_ms:.1f} ms (target <= 20 ms)"
            )
    finally:
        await database.close()
    return lines
