"""A local fake of Gemini's generateContent endpoint, driven by the real google-genai client.

Each request takes the next scripted answer ("image", "blocked", "finish:SAFETY",
"text", "status:503", "status:429", "hang"); once the script is used up it answers
images. It records every request (decoded: google-genai sends URL-safe base64 without
padding, FACTS.md) so tests can look at the prompt and the image sent.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image, ImageOps


def decode_b64(value: str) -> bytes:
    value = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(value + "=" * (-len(value) % 4))


@dataclass
class FakeGemini:
    script: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    answer_size: tuple[int, int] | None = None  # a model that answers another size
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeGemini:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1beta/models/{model}", self._generate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def sent_image(self, index: int = -1) -> bytes:
        parts = self.requests[index]["contents"][0]["parts"]
        inline = next(p for p in parts if "inlineData" in p or "inline_data" in p)
        data = inline.get("inlineData") or inline.get("inline_data")
        return decode_b64(data["data"])

    def sent_prompt(self, index: int = -1) -> str:
        parts = self.requests[index]["contents"][0]["parts"]
        return next(p["text"] for p in parts if "text" in p)

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.api_keys.append(request.headers.get("x-goog-api-key", ""))
        step = self.script.pop(0) if self.script else "image"
        if step.startswith("status:"):
            code = int(step.split(":")[1])
            return web.json_response(
                {"error": {"code": code, "message": "try later", "status": "UNAVAILABLE"}},
                status=code,
            )
        if step == "hang":
            await asyncio.sleep(5)
        if step == "blocked":
            return web.json_response(
                {
                    "promptFeedback": {"blockReason": "SAFETY"},
                    "usageMetadata": {"promptTokenCount": 5},
                }
            )
        if step == "text":
            return self._candidate({"text": "I cannot edit this picture."}, "STOP")
        image = self._edited(self.sent_image())
        part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}}
        if step.startswith("finish:"):
            return self._candidate(part, step.split(":")[1])
        return self._candidate(part, "STOP")

    def _edited(self, source: bytes) -> bytes:
        image = ImageOps.invert(Image.open(io.BytesIO(source)).convert("RGB"))
        if self.answer_size:
            image = image.resize(self.answer_size)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    @staticmethod
    def _candidate(part: dict[str, Any], finish: str) -> web.Response:
        return web.Response(
            text=json.dumps(
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": [part]}, "finishReason": finish}
                    ],
                    "usageMetadata": {
                        "promptTokenCount": 1290,
                        "candidatesTokenCount": 1300,
                        "totalTokenCount": 2590,
                    },
                    "modelVersion": "gemini-2.5-flash-image",
                }
            ),
            content_type="application/json",
        )
