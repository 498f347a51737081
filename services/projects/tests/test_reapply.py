"""Re-apply: edits of one project onto another's head, scaled by their stored fractions,
idempotent on the request id, stopping at the first failure and keeping what succeeded."""

from __future__ import annotations

import uuid

import grpc
import pytest
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.peers.billing import Metric
from services.projects.tests.conftest import Metadata, Stack
from services.projects.tests.fakes import photo


async def _source(
    stack: Stack, auth: Metadata, user_id: uuid.UUID
) -> tuple[pb.Project, list[pb.Edit]]:
    source = await stack.project(auth, user_id, photo("JPEG", (320, 240)), name="Source")
    crop = await stack.apply(auth, source.id, crop=pb.CropParams(x=80, y=60, width=160, height=120))
    sepia = await stack.apply(auth, source.id, filter=pb.FilterParams(prompt="sepia"))
    retouch = await stack.apply(
        auth,
        source.id,
        retouch=pb.RetouchParams(prompt="make it blue", hotspots=[pb.Hotspot(x=40, y=30)]),
    )
    return source, [crop.edit, sepia.edit, retouch.edit]


async def test_reapply_scales_crops_and_hotspots_onto_another_size(stack: Stack) -> None:
    user_id, auth = stack.user()
    source, edits = await _source(stack, auth, user_id)
    target = await stack.project(auth, user_id, photo("PNG", (640, 480)), name="Target")
    request = pb.ReapplyRequest(
        project_id=target.id,
        request_id=str(uuid.uuid4()),
        source_project_id=source.id,
        edit_ids=[e.id for e in edits],
    )
    done = await stack.stub.Reapply(request, metadata=auth)
    assert done.completed
    assert done.failed_step == -1
    assert [e.reapplied_from_id for e in done.edits] == [e.id for e in edits]
    assert all(e.reapplied_from_project_id == source.id for e in done.edits)
    crop = done.edits[0].crop
    assert (crop.x, crop.y, crop.width, crop.height) == (160, 120, 320, 240)
    assert [(h.x, h.y) for h in done.edits[2].retouch.hotspots] == [(80, 60)]
    assert (done.project.width, done.project.height) == (320, 240)
    assert done.project.head_edit_id == done.edits[-1].id
    assert stack.assets.image(uuid.UUID(done.project.current_asset_id)).format == "PNG"

    # The same request id again: the same edits, no new engine calls or charges.
    calls, charged = stack.engine.total, stack.quota.charged(user_id)
    again = await stack.stub.Reapply(request, metadata=auth)
    assert [e.id for e in again.edits] == [e.id for e in done.edits]
    assert (stack.engine.total, stack.quota.charged(user_id)) == (calls, charged)


async def test_reapply_within_the_same_project(stack: Stack) -> None:
    """Source and target are one project: its own steps go on again at its head, each
    scaled by its fractions to the image the head shows by then."""
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (320, 240)), name="Again")
    crop = (
        await stack.apply(auth, project.id, crop=pb.CropParams(x=80, y=60, width=160, height=120))
    ).edit  # 320x240 -> 160x120: the quarter-to-three-quarters box
    retouch = (
        await stack.apply(
            auth,
            project.id,
            retouch=pb.RetouchParams(prompt="make it blue", hotspots=[pb.Hotspot(x=40, y=30)]),
        )
    ).edit  # on 160x120: the point at a quarter of each side
    sepia = (await stack.apply(auth, project.id, filter=pb.FilterParams(prompt="sepia"))).edit
    calls, charged = stack.engine.total, stack.quota.charged(user_id)
    request = pb.ReapplyRequest(
        project_id=project.id,
        request_id=str(uuid.uuid4()),
        source_project_id=project.id,
        edit_ids=[crop.id, retouch.id, sepia.id],
    )
    done = await stack.stub.Reapply(request, metadata=auth)

    assert done.completed
    assert done.failed_step == -1
    new_crop, new_retouch, new_sepia = done.edits
    assert [e.reapplied_from_id for e in done.edits] == [crop.id, retouch.id, sepia.id]
    assert {e.reapplied_from_project_id for e in done.edits} == {project.id}
    assert {e.project_id for e in done.edits} == {project.id}
    assert all(e.status == pb.EDIT_STATUS_SUCCEEDED for e in done.edits)
    # Onto the head, one after the other: a chain from the sepia edit.
    assert new_crop.parent_id == sepia.id
    assert new_crop.source_asset_id == sepia.result_asset_id
    assert (new_retouch.parent_id, new_sepia.parent_id) == (new_crop.id, new_retouch.id)
    # The crop's fractions (a quarter in, half the size) on the 160x120 head, then the
    # hotspot's (a quarter of each side) on the 80x60 the crop left.
    c = new_crop.crop
    assert (c.x, c.y, c.width, c.height) == (40, 30, 80, 60)
    assert stack.assets.image(uuid.UUID(new_crop.result_asset_id)).size == (80, 60)
    assert [(h.x, h.y) for h in new_retouch.retouch.hotspots] == [(20, 15)]
    assert new_retouch.retouch.prompt == "make it blue"
    assert new_sepia.filter.prompt == "sepia"
    # Head moved to the last new step; the history holds both runs, all on the head path.
    assert done.project.head_edit_id == new_sepia.id
    assert (done.project.width, done.project.height) == (80, 60)
    assert done.project.current_asset_id == new_sepia.result_asset_id
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert [e.seq for e in history.edits] == [1, 2, 3, 4, 5, 6]
    assert [e.id for e in history.edits] == [crop.id, retouch.id, sepia.id] + [
        e.id for e in done.edits
    ]
    assert all(e.on_head_path for e in history.edits)
    assert (stack.engine.total, stack.quota.charged(user_id)) == (calls + 2, charged + 2)

    # The same request id again: the same edits, no new engine call, charge or move.
    again = await stack.stub.Reapply(request, metadata=auth)
    assert again.completed
    assert [e.id for e in again.edits] == [e.id for e in done.edits]
    assert again.project.head_edit_id == new_sepia.id
    assert again.project.version == done.project.version
    assert (stack.engine.total, stack.quota.charged(user_id)) == (calls + 2, charged + 2)
    after = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert len(after.edits) == 6


async def test_an_aspect_ratio_crop_keeps_its_ratio_on_another_shape(stack: Stack) -> None:
    user_id, auth = stack.user()
    source = await stack.project(auth, user_id, photo("JPEG", (320, 240)))
    crop = await stack.apply(
        auth, source.id, crop=pb.CropParams(x=0, y=0, width=320, height=180, aspect_ratio="16:9")
    )
    target = await stack.project(auth, user_id, photo("JPEG", (200, 400)))
    done = await stack.stub.Reapply(
        pb.ReapplyRequest(
            project_id=target.id,
            request_id=str(uuid.uuid4()),
            source_project_id=source.id,
            edit_ids=[crop.edit.id],
        ),
        metadata=auth,
    )
    width, height = done.project.width, done.project.height
    assert abs(width * 9 - height * 16) <= 16
    assert width <= 200


async def test_a_failure_part_way_stops_and_keeps_what_succeeded(stack: Stack) -> None:
    user_id, auth = stack.user()
    source, edits = await _source(stack, auth, user_id)
    target = await stack.project(auth, user_id, photo("JPEG", (320, 240)))
    stack.quota.limits[Metric.AI_EDITS] = stack.quota.charged(user_id)  # no AI edit left
    done = await stack.stub.Reapply(
        pb.ReapplyRequest(
            project_id=target.id,
            request_id=str(uuid.uuid4()),
            source_project_id=source.id,
            edit_ids=[e.id for e in edits],
        ),
        metadata=auth,
    )
    assert not done.completed
    assert done.failed_step == 1
    assert "limit" in done.error
    assert len(done.edits) == 1
    assert done.project.head_edit_id == done.edits[0].id


async def test_reapply_a_preset(stack: Stack) -> None:
    user_id, auth = stack.user()
    target = await stack.project(auth, user_id, photo())
    lomo = stack.presets.by_name("Lomo")
    done = await stack.stub.Reapply(
        pb.ReapplyRequest(
            project_id=target.id, request_id=str(uuid.uuid4()), preset_id=str(lomo.id)
        ),
        metadata=auth,
    )
    assert done.completed
    assert done.edits[0].preset_prompt == lomo.prompt


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "source_project_id"),
        ({"source_project_id": "SOURCE"}, "edit_ids"),
        ({"source_project_id": "SOURCE", "edit_ids": ["x"]}, "edit_ids[0]"),
        ({"source_project_id": "SOURCE", "edit_ids": [str(uuid.uuid4())]}, "edit_ids[0]"),
    ],
)
async def test_reapply_input_is_checked(stack: Stack, fields: dict, field: str) -> None:
    user_id, auth = stack.user()
    source, _edits = await _source(stack, auth, user_id)
    target = await stack.project(auth, user_id, photo())
    if fields.get("source_project_id") == "SOURCE":
        fields = {**fields, "source_project_id": source.id}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.Reapply(
            pb.ReapplyRequest(project_id=target.id, request_id=str(uuid.uuid4()), **fields),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}:")
