"""Running `python -m services.identity …` as a real process against the test database."""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
from collections.abc import Mapping

from services.identity.settings import IdentitySettings

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


async def run_cli(
    settings: IdentitySettings, *args: str, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the CLI configured like `settings` (and `env`)."""
    environment = {
        **os.environ,
        "PIXELSHOP_IDENTITY_DATABASE_URL": settings.database_url.reveal(),
        "PIXELSHOP_INTERNAL_SECRET": settings.internal_secret.reveal(),
        "PIXELSHOP_IDENTITY_KEY_PUBLISH_LEAD_SECONDS": str(settings.key_publish_lead_seconds),
        # `send-mail` delivers where the test server does, whichever worker gets a request.
        "PIXELSHOP_IDENTITY_MAILBOX_DIR": settings.mailbox_dir,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "gen")]),
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.identity",
        *args,
        cwd=REPO_ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
