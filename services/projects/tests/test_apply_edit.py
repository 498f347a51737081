"""ApplyEdit: request-id idempotency, one edit per project, cancellation, quotas, validation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.errors import Unavailable
from runtime.peers.billing import Metric
from services.projects.models import EditStatus
from services.projects.tests.conftest import Stack
from services.projects.tests.fakes import photo

WARM = pb.FilterParams(prompt="warm it up")


async def test_the_same_request_id_twice_is_one_edit_one_call_one_charge(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    request_id = str(uuid.uuid4())
    first = await stack.apply(auth, project.id, request_id, filter=WARM)
    second = await stack.apply(auth, project.id, request_id, filter=WARM)
    assert second.edit.id == first.edit.id
    assert second.edit.result_asset_id == first.edit.result_asset_id
    assert second.project.edit_count == 1
    assert stack.engine.total == 1
    assert stack.quota.charged(user_id) == 1
    assert stack.assets.stores == 1


async def test_concurrent_duplicates_are_one_edit(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.engine.gate = asyncio.Event()
    request_id = str(uuid.uuid4())
    calls = [
        asyncio.create_task(stack.apply(auth, project.id, request_id, filter=WARM))
        for _ in range(4)
    ]
    await stack.engine.started.wait()
    stack.engine.gate.set()
    results = await asyncio.gather(*calls)
    assert len({r.edit.id for r in results}) == 1
    assert all(r.edit.status == pb.EDIT_STATUS_SUCCEEDED for r in results)
    assert stack.engine.total == 1
    assert stack.quota.charged(user_id) == 1


async def test_a_retry_of_a_failed_edit_answers_the_same_failure_without_a_call(
    stack: Stack,
) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.engine.failure = Unavailable("the image model is busy; try again shortly")
    request_id = str(uuid.uuid4())
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.apply(auth, project.id, request_id, filter=WARM)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stack.engine.total == 1
    # The engine failure released both reservations; nothing is charged or held.
    assert stack.quota.charged(user_id) == 0
    assert stack.quota.open(user_id) == []
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert [e.status for e in history.edits] == [pb.EDIT_STATUS_FAILED]
    # The project is free again for the next edit.
    stack.engine.failure = None
    done = await stack.apply(auth, project.id, filter=WARM)
    assert done.edit.seq == 2


async def _cancelled_while_running(stack: Stack, auth: Any, project_id: str) -> str:
    """An ApplyEdit whose client cancels while the engine runs (held at its gate, which
    the caller opens); answers its request id."""
    stack.engine.gate = asyncio.Event()
    request_id = str(uuid.uuid4())
    call = stack.stub.ApplyEdit(
        pb.ApplyEditRequest(project_id=project_id, request_id=request_id, filter=WARM),
        metadata=auth,
    )
    await stack.engine.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    return request_id


async def test_a_client_that_cancels_still_gets_the_result_on_retry(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    request_id = await _cancelled_while_running(stack, auth, project.id)
    stack.engine.gate.set()
    retried = await stack.apply(auth, project.id, request_id, filter=WARM)
    assert retried.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert retried.project.head_edit_id == retried.edit.id
    assert stack.engine.total == 1
    assert stack.quota.charged(user_id) == 1


async def test_a_shutdown_waits_for_an_edit_whose_client_went_away(
    stack_factory: Callable[..., Any],
) -> None:
    stack: Stack = await stack_factory()
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    request_id = await _cancelled_while_running(stack, auth, project.id)
    # No call is open any more, yet the edit runs: the shutdown waits for it before the
    # database pool closes, instead of leaving it to the sweeper half-done.
    stopping = asyncio.ensure_future(stack.server.stop(5))
    await asyncio.sleep(0.5)
    assert not stopping.done()
    stack.engine.gate.set()
    await stopping
    edit = await stack.stored_edit(uuid.UUID(project.id), request_id)
    assert edit.status is EditStatus.SUCCEEDED
    assert stack.quota.charged(user_id) == 1
    assert stack.quota.open(user_id) == []


async def test_two_concurrent_edits_one_runs_the_other_is_aborted(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.engine.gate = asyncio.Event()
    first = asyncio.create_task(stack.apply(auth, project.id, filter=WARM))
    await stack.engine.started.wait()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, adjust=pb.AdjustParams(prompt="brighter"))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    stack.engine.gate.set()
    done = await first
    # No lost head move, and the refused edit holds no reservation.
    assert done.project.head_edit_id == done.edit.id
    assert stack.quota.open(user_id) == []
    assert stack.quota.charged(user_id) == 1


async def test_head_moved_during_an_edit_is_not_lost(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    first = await stack.apply(auth, project.id, filter=WARM)
    stack.engine.gate = asyncio.Event()
    stack.engine.started.clear()
    running = asyncio.create_task(
        stack.apply(auth, project.id, adjust=pb.AdjustParams(prompt="darker"))
    )
    await stack.engine.started.wait()
    undone = await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
    assert undone.project.head_edit_id == ""
    stack.engine.gate.set()
    done = await running
    # The user's undo stands; the new result is kept in the history, reachable by jump.
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert done.project.head_edit_id == ""
    assert done.edit.parent_id == first.edit.id
    jumped = await stack.stub.Jump(
        pb.JumpRequest(project_id=project.id, edit_id=done.edit.id), metadata=auth
    )
    assert jumped.project.head_edit_id == done.edit.id


async def test_the_26th_ai_edit_is_refused_and_crop_still_works(stack: Stack) -> None:
    user_id, auth = stack.user()
    stack.quota.limits[Metric.AI_EDITS] = 25
    project = await stack.project(auth, user_id, photo("PNG", (64, 48)))
    for _ in range(25):
        await stack.apply(auth, project.id, filter=WARM)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, filter=WARM)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    cropped = await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=10, height=10))
    assert cropped.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert stack.quota.charged(user_id) == 25


async def test_the_21st_project_is_refused(stack: Stack) -> None:
    user_id, auth = stack.user()
    stack.quota.limits[Metric.PROJECTS] = 20
    for _ in range(20):
        await stack.project(auth, user_id, photo("PNG", (8, 8)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.project(auth, user_id, photo("PNG", (8, 8)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_storage_is_reserved_before_the_engine_runs(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.quota.limits[Metric.STORAGE_BYTES] = 10  # no room for any result
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, filter=WARM)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stack.engine.total == 0
    assert stack.quota.open(user_id) == []


async def test_a_preset_is_snapshotted_and_its_use_recorded(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    synthwave = stack.presets.by_name("Synthwave")
    done = await stack.apply(
        auth, project.id, filter=pb.FilterParams(), preset_id=str(synthwave.id)
    )
    assert done.edit.preset_id == str(synthwave.id)
    assert done.edit.preset_prompt == synthwave.prompt
    assert done.edit.preset_version == 1
    assert stack.presets.uses == [(synthwave.id, uuid.UUID(done.edit.id))]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, adjust=pb.AdjustParams(), preset_id=str(synthwave.id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, filter=pb.FilterParams(), preset_id=str(uuid.uuid4()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_feature_flags_of_the_tier_decide(stack: Stack) -> None:
    from tests.support.fake_identity import FREE

    tier = type(FREE)()
    tier.CopyFrom(FREE)
    tier.code = "nofilters"
    tier.features.update({"filter_edits": False})
    stack.identity.tiers["nofilters"] = tier
    user_id, auth = stack.user("nofilters")
    project = await stack.project(auth, user_id, photo())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, filter=WARM)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = await stack.apply(auth, project.id, adjust=pb.AdjustParams(prompt="warmer"))
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params"),
        ({"filter": pb.FilterParams(prompt="")}, "filter.prompt"),
        ({"filter": pb.FilterParams(prompt="x" * 2001)}, "filter.prompt"),
        ({"filter": pb.FilterParams(prompt="warm\x00")}, "filter.prompt"),
        ({"retouch": pb.RetouchParams(prompt="make it blue")}, "retouch.hotspots"),
        (
            {"retouch": pb.RetouchParams(prompt="blue", hotspots=[pb.Hotspot(x=1, y=1)] * 9)},
            "retouch.hotspots",
        ),
        (
            {"retouch": pb.RetouchParams(prompt="blue", hotspots=[pb.Hotspot(x=320, y=1)])},
            "retouch.hotspots[0].x",
        ),
        (
            {"retouch": pb.RetouchParams(prompt="blue", hotspots=[pb.Hotspot(x=-1, y=1)])},
            "retouch.hotspots[0].x",
        ),
        ({"crop": pb.CropParams(x=0, y=0, width=0, height=10)}, "crop.width"),
        ({"crop": pb.CropParams(x=300, y=0, width=30, height=10)}, "crop.width"),
        ({"crop": pb.CropParams(x=0, y=240, width=30, height=10)}, "crop.y"),
        (
            {"crop": pb.CropParams(x=0, y=0, width=100, height=10, aspect_ratio="16:9")},
            "crop.aspect_ratio",
        ),
        (
            {"crop": pb.CropParams(x=0, y=0, width=10, height=10, aspect_ratio="5:4")},
            "crop.aspect_ratio",
        ),
        (
            {"crop": pb.CropParams(x=0, y=0, width=10, height=10), "preset_id": str(uuid.uuid4())},
            "preset_id",
        ),
        ({"filter": pb.FilterParams(), "preset_id": "nope"}, "preset_id"),
    ],
)
async def test_bad_input_names_the_field(stack: Stack, params: dict, field: str) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (320, 240)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, **params)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}:"), caught.value.details()
    assert stack.engine.total == 0


async def test_request_id_must_be_a_uuid(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, "not-a-uuid", filter=WARM)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("request_id:")


async def test_aspect_ratio_crops_within_one_pixel(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (320, 240)))
    done = await stack.apply(
        auth, project.id, crop=pb.CropParams(x=0, y=0, width=160, height=91, aspect_ratio="16:9")
    )
    assert (done.project.width, done.project.height) == (160, 91)
    assert done.edit.crop.aspect_ratio == "16:9"


async def test_engine_latency_and_outcomes_are_exported(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    await stack.apply(auth, project.id, filter=WARM)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.apply(auth, project.id, filter=pb.FilterParams(prompt="paint a dragon"))
    text = stack.server.metrics.render()
    assert 'pixelshop_edit_engine_seconds_count{action="filter",engine="local"} 2' in text
    assert (
        'pixelshop_edit_outcomes_total{action="filter",engine="local",outcome="succeeded"} 1'
        in text
    )
    assert (
        'pixelshop_edit_outcomes_total{action="filter",engine="local",outcome="failed"} 1' in text
    )


async def test_a_duplicate_on_another_replica_waits_for_the_running_edit(stack: Stack) -> None:
    """`stack.components` is a second set of the service's parts on the same database: a
    replica that does not run the edit itself and must not run it again."""
    from services.projects.models import EditAction
    from services.projects.workflows import EditRequest

    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    stack.engine.gate = asyncio.Event()
    request_id = str(uuid.uuid4())
    running = asyncio.create_task(stack.apply(auth, project.id, request_id, filter=WARM))
    await stack.engine.started.wait()
    other = asyncio.create_task(
        stack.components.workflows.apply(
            user_id,
            uuid.UUID(project.id),
            EditRequest(request_id=request_id, action=EditAction.FILTER, prompt="warm it up"),
        )
    )
    await asyncio.sleep(0.3)
    assert not other.done()  # it waits for the first replica's outcome
    stack.engine.gate.set()
    first, second = await running, await other
    assert str(second.edit.id) == first.edit.id
    assert stack.engine.total == 1
    assert stack.quota.charged(user_id) == 1


async def test_a_request_id_reused_for_another_edit_is_refused(stack: Stack) -> None:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo())
    request_id = str(uuid.uuid4())
    await stack.apply(auth, project.id, request_id, filter=WARM)
    for other in (
        {"filter": pb.FilterParams(prompt="cooler")},
        {"adjust": pb.AdjustParams(prompt="warm it up")},
        {"crop": pb.CropParams(x=0, y=0, width=10, height=10)},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.apply(auth, project.id, request_id, **other)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "request_id was already used" in (caught.value.details() or "")
    assert stack.engine.total == 1


async def test_an_edit_checked_against_an_image_head_has_left_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request is checked (crop box, fractions) against the current image, then the
    # holds are reserved: an undo in between must not get a crop checked against the
    # 32 x 24 result recorded against the 64 x 48 original.
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("PNG", (64, 48)))
    await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=32, height=24))
    reserve = stack.quota.reserve

    async def undo_first(*args: object) -> str:
        monkeypatch.setattr(stack.quota, "reserve", reserve)
        await stack.stub.Undo(pb.UndoRequest(project_id=project.id), metadata=auth)
        return await reserve(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(stack.quota, "reserve", undo_first)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=32, height=24))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert "current image changed" in (caught.value.details() or "")
    now = await stack.stub.GetProject(pb.GetProjectRequest(project_id=project.id), metadata=auth)
    assert (now.project.edit_count, now.project.head_edit_id) == (1, "")
    assert stack.quota.open(user_id) == []  # the hold taken for it is released
    # Applied again to the image now shown, it runs.
    again = await stack.apply(auth, project.id, crop=pb.CropParams(x=0, y=0, width=32, height=24))
    assert again.edit.status == pb.EDIT_STATUS_SUCCEEDED
