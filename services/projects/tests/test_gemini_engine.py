"""The Gemini engine through the real google-genai client against a local fake server:
success, safety block, a non-STOP finish reason, a text-only answer, 503 then success,
429 with back-off, a timeout; no failure is charged."""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp import web
from PIL import Image
from pixelshop.projects.v1 import projects_pb2 as pb

from runtime.db import RemoteCallInTransaction
from services.projects.engines import EngineRequest, Point
from services.projects.engines.gemini import GeminiEngine, build_prompt
from services.projects.models import EditAction
from services.projects.settings import ProjectsSettings, load
from services.projects.tests.conftest import Stack
from services.projects.tests.fake_gemini import FakeGemini
from services.projects.tests.fakes import photo


@dataclass
class ReportingGemini(FakeGemini):
    """The fake, answering with the model version and token counts a test chooses (none
    of them a value the engine could make up), after `delay` seconds."""

    model_version: str | None = "gemini-2.5-flash-image-preview-0925"
    prompt_tokens: int = 1290
    candidate_tokens: int = 1300
    delay: float = 0.0
    paths: list[str] = field(default_factory=list)

    async def _generate(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super()._generate(request)

    def _candidate(self, part: dict[str, Any], finish: str) -> web.Response:  # type: ignore[override]
        body = json.loads(FakeGemini._candidate(part, finish).text or "{}")
        body["usageMetadata"] = {
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": self.candidate_tokens,
            "totalTokenCount": self.prompt_tokens + self.candidate_tokens,
        }
        if self.model_version is None:
            del body["modelVersion"]
        else:
            body["modelVersion"] = self.model_version
        return web.json_response(body)


@pytest.fixture
async def gemini() -> AsyncIterator[ReportingGemini]:
    fake = ReportingGemini()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gemini_stack(stack_factory: Callable[..., Any], gemini: FakeGemini) -> Stack:
    stack: Stack = await stack_factory(
        engine="gemini",
        gemini_api_key=_secret("test-key"),
        gemini_base_url=gemini.base_url,
        gemini_backoff_seconds=0.05,
        edit_timeout_seconds=3,
        pending_timeout_seconds=10,
    )
    assert stack.engine.name == "gemini"
    return stack


def _secret(value: str) -> Any:
    from runtime.settings import Secret

    return Secret(value)


async def _edit(stack: Stack, **params: Any) -> tuple[uuid.UUID, pb.ApplyEditResponse]:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (200, 150)))
    return user_id, await stack.apply(auth, project.id, **params)


async def _failing(stack: Stack, code: grpc.StatusCode, text: str, **params: Any) -> uuid.UUID:
    user_id, auth = stack.user()
    project = await stack.project(auth, user_id, photo("JPEG", (200, 150)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.apply(auth, project.id, **params)
    assert caught.value.code() == code
    assert text in (caught.value.details() or "")
    history = await stack.stub.ListEdits(pb.ListEditsRequest(project_id=project.id), metadata=auth)
    assert history.edits[0].status == pb.EDIT_STATUS_FAILED
    assert stack.quota.charged(user_id) == 0
    assert stack.quota.open(user_id) == []
    return user_id


FILTER = pb.FilterParams(prompt="make it look like a comic")


async def test_success_records_model_tokens_and_keeps_size_and_format(
    gemini_stack: Stack, gemini: ReportingGemini
) -> None:
    gemini.answer_size = (400, 300)  # the model answers another size: brought back
    user_id, done = await _edit(gemini_stack, filter=FILTER)
    edit = done.edit
    assert edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert edit.engine == "gemini"
    assert edit.model == "gemini-2.5-flash-image-preview-0925"
    assert edit.finish_reason == "STOP"
    assert (edit.input_tokens, edit.output_tokens) == (1290, 1300)
    assert (edit.result_width, edit.result_height) == (200, 150)
    result = gemini_stack.assets.image(uuid.UUID(edit.result_asset_id))
    assert result.format == "JPEG"
    assert gemini_stack.quota.charged(user_id) == 1
    assert gemini.api_keys == ["test-key"]
    sent = Image.open(io.BytesIO(gemini.sent_image()))
    assert sent.size == (200, 150)
    assert "make it look like a comic" in gemini.sent_prompt()
    assert "image only" in gemini.sent_prompt()


async def test_the_edit_records_what_the_answer_reported_and_how_long_it_took(
    gemini_stack: Stack, gemini: ReportingGemini
) -> None:
    """Model id and token counts come from the answer (modelVersion, usageMetadata), not
    from settings or constants; the duration covers the model's time (the fake answers
    after `delay`) and fits inside the call the test timed around it."""
    gemini.model_version = "gemini-2.5-flash-image-exp-0417"
    gemini.prompt_tokens, gemini.candidate_tokens = 1811, 1293
    gemini.delay = 0.05
    user_id, auth = gemini_stack.user()
    project = await gemini_stack.project(auth, user_id, photo("JPEG", (200, 150)))
    started = time.monotonic()
    done = await gemini_stack.apply(auth, project.id, filter=FILTER)
    wall_ms = math.ceil((time.monotonic() - started) * 1000)

    # As recorded: read back from the database, not only the ApplyEdit answer.
    stored = await gemini_stack.stub.GetEdit(
        pb.GetEditRequest(project_id=project.id, edit_id=done.edit.id), metadata=auth
    )
    listed = await gemini_stack.stub.ListEdits(
        pb.ListEditsRequest(project_id=project.id), metadata=auth
    )
    for edit in (done.edit, stored.edit, listed.edits[0]):
        assert edit.status == pb.EDIT_STATUS_SUCCEEDED
        assert edit.model == "gemini-2.5-flash-image-exp-0417"
        assert edit.finish_reason == "STOP"
        assert (edit.input_tokens, edit.output_tokens) == (1811, 1293)
        # No timing threshold: at least the time the model took to answer, at most the
        # time the whole call took.
        assert gemini.delay * 1000 - 1 <= edit.duration_ms <= wall_ms, (edit.duration_ms, wall_ms)
    assert len(gemini.requests) == 1


async def test_without_a_model_version_the_configured_model_is_recorded(
    stack_factory: Callable[..., Any], gemini: ReportingGemini
) -> None:
    gemini.model_version = None
    gemini.prompt_tokens, gemini.candidate_tokens = 7, 11
    stack: Stack = await stack_factory(
        engine="gemini",
        gemini_api_key=_secret("test-key"),
        gemini_base_url=gemini.base_url,
        gemini_model="gemini-house-model",
    )
    _user, done = await _edit(stack, filter=FILTER)
    assert done.edit.model == "gemini-house-model"
    assert "models/gemini-house-model:generateContent" in gemini.paths[-1]
    assert (done.edit.input_tokens, done.edit.output_tokens) == (7, 11)


async def test_a_refused_edit_records_how_long_the_model_took(
    gemini_stack: Stack, gemini: ReportingGemini
) -> None:
    gemini.script = ["finish:IMAGE_SAFETY"]
    gemini.delay = 0.05
    user_id, auth = gemini_stack.user()
    project = await gemini_stack.project(auth, user_id, photo("JPEG", (200, 150)))
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gemini_stack.apply(auth, project.id, filter=FILTER)
    wall_ms = math.ceil((time.monotonic() - started) * 1000)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await gemini_stack.stub.ListEdits(
        pb.ListEditsRequest(project_id=project.id), metadata=auth
    )
    (edit,) = listed.edits
    assert edit.status == pb.EDIT_STATUS_FAILED
    assert "IMAGE_SAFETY" in edit.error
    assert gemini.delay * 1000 - 1 <= edit.duration_ms <= wall_ms, (edit.duration_ms, wall_ms)
    assert gemini_stack.quota.charged(user_id) == 0


async def test_a_retouch_prompt_carries_pixels_and_fractions() -> None:
    request = EngineRequest(
        EditAction.RETOUCH, "make the shirt blue", (Point(50, 30),), b"", "image/png", 200, 100, 5
    )
    prompt = build_prompt(request)
    assert "(50, 30)" in prompt
    assert "(0.250, 0.300)" in prompt
    assert "make the shirt blue" in prompt


async def test_a_safety_block_is_failed_precondition(
    gemini_stack: Stack, gemini: FakeGemini
) -> None:
    gemini.script = ["blocked"]
    await _failing(gemini_stack, grpc.StatusCode.FAILED_PRECONDITION, "SAFETY", filter=FILTER)


async def test_a_finish_reason_other_than_stop(gemini_stack: Stack, gemini: FakeGemini) -> None:
    gemini.script = ["finish:IMAGE_SAFETY"]
    await _failing(gemini_stack, grpc.StatusCode.FAILED_PRECONDITION, "IMAGE_SAFETY", filter=FILTER)


async def test_a_text_only_answer(gemini_stack: Stack, gemini: FakeGemini) -> None:
    gemini.script = ["text"]
    await _failing(
        gemini_stack, grpc.StatusCode.FAILED_PRECONDITION, "I cannot edit this", filter=FILTER
    )


async def test_503_then_success_is_retried(gemini_stack: Stack, gemini: FakeGemini) -> None:
    gemini.script = ["status:503"]
    user_id, done = await _edit(gemini_stack, filter=FILTER)
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert len(gemini.requests) == 2
    assert gemini_stack.quota.charged(user_id) == 1


async def test_429_backs_off_then_succeeds(gemini_stack: Stack, gemini: FakeGemini) -> None:
    gemini.script = ["status:429", "status:429"]
    started = time.monotonic()
    _user, done = await _edit(gemini_stack, filter=FILTER)
    assert done.edit.status == pb.EDIT_STATUS_SUCCEEDED
    assert len(gemini.requests) == 3
    # Back-off 0.05 s then 0.1 s (±25 %): it waited between attempts.
    assert time.monotonic() - started >= 0.1


async def test_always_busy_is_unavailable_and_not_charged(
    gemini_stack: Stack, gemini: FakeGemini
) -> None:
    gemini.script = ["status:503"] * 10
    await _failing(gemini_stack, grpc.StatusCode.UNAVAILABLE, "busy", filter=FILTER)
    assert len(gemini.requests) == 4  # gemini_max_attempts


async def test_a_timeout_is_deadline_exceeded(gemini_stack: Stack, gemini: FakeGemini) -> None:
    gemini.script = ["hang"]
    await _failing(gemini_stack, grpc.StatusCode.DEADLINE_EXCEEDED, "in time", filter=FILTER)


async def test_the_engine_refuses_to_run_inside_a_transaction(
    gemini_stack: Stack, gemini: FakeGemini
) -> None:
    engine = GeminiEngine(api_key="k", model="m", base_url=gemini.base_url)
    async with gemini_stack.components.database.transaction():
        with pytest.raises(RemoteCallInTransaction):
            await engine.run(
                EngineRequest(EditAction.FILTER, "x", (), photo("PNG"), "image/png", 320, 240, 5)
            )
    assert gemini.requests == []


def test_gemini_settings_come_from_googles_variable_names() -> None:
    from tests.support.settings import INTERNAL_SECRET

    settings = load(
        {
            "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
            "GEMINI_API_KEY": "key-from-env",
            "GEMINI_MODEL": "gemini-x",
            "GEMINI_BASE_URL": "http://127.0.0.1:9",
        }
    )
    assert isinstance(settings, ProjectsSettings)
    assert settings.engine_name == "gemini"
    assert settings.gemini_model == "gemini-x"
    assert "key-from-env" not in repr(settings)
    plain = load({"PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET})
    assert plain.engine_name == "local"
    assert plain.gemini_model == "gemini-2.5-flash-image"
