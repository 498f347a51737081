"""The Gemini engine, through the real google-genai client.

One prompt template per action, in our own words: hotspots given both in pixels and as
fractions of the image, everything else to stay as it is, the answer to be the image
only. The image goes in inline and must come back inline. What the model will not do
(`promptFeedback.blockReason`, a finish reason other than STOP, a text-only answer) is
FAILED_PRECONDITION with a readable message; 429 and 5xx are retried with exponential
back-off while the deadline allows; running out of time is DEADLINE_EXCEEDED. The result
is brought back to the source's size and format family.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
from typing import Any

import aiohttp
import httpx
from google import genai
from google.genai import errors, types
from PIL import Image

from runtime.db import refuse_remote_call
from runtime.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from services.projects.engines import EngineRequest, EngineResult
from services.projects.engines.imageio import decode_upright, encode_like, result_mime_type
from services.projects.models import EditAction

log = logging.getLogger("pixelshop.projects.gemini")

ENGINE_NAME = "gemini"
PROMPT_LIMIT_NOTE = "Answer with the edited image only, at the same size, and no text."

_TEMPLATES = {
    EditAction.RETOUCH: (
        "You are retouching one area of a photograph of {width}x{height} pixels. "
        "The change to make: {prompt}\n"
        "Make it only around these points (x, y in pixels from the top-left corner, and as "
        "fractions of the width and height): {points}. "
        "Leave every other part of the photo exactly as it is, and keep every person's "
        "face, identity and features unchanged. " + PROMPT_LIMIT_NOTE
    ),
    EditAction.FILTER: (
        "Restyle this whole photograph. The style: {prompt}\n"
        "Keep the composition, the framing, the subject and every person's identity as they "
        "are; change only the look. " + PROMPT_LIMIT_NOTE
    ),
    EditAction.ADJUST: (
        "Make a photographic adjustment to this whole photograph. The adjustment: {prompt}\n"
        "Keep the content, the framing and every person's identity as they are; change "
        "only light, colour or focus as asked. " + PROMPT_LIMIT_NOTE
    ),
}


def build_prompt(request: EngineRequest) -> str:
    points = "; ".join(
        f"({p.x}, {p.y}) = ({p.x / request.width:.3f}, {p.y / request.height:.3f})"
        for p in request.hotspots
    )
    return _TEMPLATES[request.action].format(
        width=request.width, height=request.height, prompt=request.prompt, points=points
    )


def _retryable(error: Exception) -> bool:
    if isinstance(error, errors.APIError):
        return error.code == 429 or error.code >= 500
    # google-genai talks through aiohttp when it is installed, else httpx.
    return isinstance(error, httpx.TransportError | aiohttp.ClientError)


class GeminiEngine:
    name = ENGINE_NAME

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = "",
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
    ) -> None:
        options = types.HttpOptions(base_url=base_url, api_version="v1beta") if base_url else None
        self._client = genai.Client(api_key=api_key, http_options=options)
        self.model = model
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds

    async def run(self, request: EngineRequest) -> EngineResult:
        refuse_remote_call("the Gemini engine")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout
        contents = [
            types.Content(
                role="user",
                parts=[
                    types.Part.from_bytes(data=request.source, mime_type=request.mime_type),
                    types.Part.from_text(text=build_prompt(request)),
                ],
            )
        ]
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded("the image model did not answer in time")
            try:
                response = await asyncio.wait_for(
                    self._client.aio.models.generate_content(model=self.model, contents=contents),
                    remaining,
                )
            except TimeoutError as error:
                raise DeadlineExceeded("the image model did not answer in time") from error
            except (errors.APIError, httpx.TransportError, aiohttp.ClientError) as error:
                if not _retryable(error):
                    raise self._refused(error) from error
                delay = self._backoff * 2 ** (attempt - 1) * (0.75 + random.random() / 2)
                if attempt >= self._max_attempts:
                    raise Unavailable("the image model is busy; try again shortly") from error
                if loop.time() + delay >= deadline:
                    raise DeadlineExceeded("the image model did not answer in time") from error
                log.info(
                    "gemini call failed, retrying",
                    extra={"attempt": attempt, "error": type(error).__name__},
                )
                await asyncio.sleep(delay)
                continue
            return await asyncio.to_thread(self._result, request, response)

    @staticmethod
    def _refused(error: Exception) -> Exception:
        if isinstance(error, errors.APIError) and error.code == 400:
            return FailedPrecondition(
                f"the image model refused the request: {error.message or error.status}",
                reason="ENGINE_REFUSED",
            )
        return Unavailable("the image model cannot be reached with this configuration")

    def _result(self, request: EngineRequest, response: Any) -> EngineResult:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and feedback.block_reason:
            reason = _name(feedback.block_reason)
            message = feedback.block_reason_message or ""
            said = f": {message}" if message else ""
            raise FailedPrecondition(
                f"the image model blocked this request ({reason}){said}",
                reason="ENGINE_BLOCKED",
            )
        candidates = response.candidates or []
        if not candidates:
            raise FailedPrecondition("the image model answered nothing", reason="ENGINE_EMPTY")
        candidate = candidates[0]
        finish = _name(candidate.finish_reason) if candidate.finish_reason else ""
        if finish and finish != "STOP":
            raise FailedPrecondition(
                f"the image model stopped without a result ({finish})",
                reason="ENGINE_FINISH_REASON",
                metadata={"finish_reason": finish},
            )
        parts = (candidate.content.parts if candidate.content else None) or []
        image_part = next(
            (
                p
                for p in parts
                if p.inline_data is not None
                and p.inline_data.data
                and (p.inline_data.mime_type or "").startswith("image/")
            ),
            None,
        )
        if image_part is None:
            said = " ".join(p.text for p in parts if p.text).strip()
            raise FailedPrecondition(
                "the image model answered with text only" + (f": {said[:300]}" if said else ""),
                reason="ENGINE_TEXT_ONLY",
            )
        inline = image_part.inline_data
        assert inline is not None
        assert inline.data is not None
        image = decode_upright(inline.data)
        if image.size != (request.width, request.height):
            image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
        source_alpha = "A" in Image.open(io.BytesIO(request.source)).getbands()
        if not source_alpha and "A" in image.getbands():
            image = image.convert("RGB")
        mime = result_mime_type(request.mime_type)
        usage = response.usage_metadata
        return EngineResult(
            data=encode_like(image, mime),
            mime_type=mime,
            width=image.width,
            height=image.height,
            model=response.model_version or self.model,
            finish_reason=finish or "STOP",
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=(usage.candidates_token_count or 0) if usage else 0,
        )


def _name(value: Any) -> str:
    return str(getattr(value, "name", value))
