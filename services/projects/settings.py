"""Settings of the projects service, read once from `PIXELSHOP_PROJECTS_*` at start-up.

The Gemini variables are the ones Google's tools use (`GEMINI_API_KEY`, `GEMINI_MODEL`,
`GEMINI_BASE_URL`), read without the prefix; with no key the local engine runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import ClassVar

from runtime.config import ServiceSettings
from runtime.settings import Secret, load_settings

ENV_PREFIX = "PIXELSHOP_PROJECTS_"
ENGINES = ("auto", "local", "gemini")
QUOTA_MODES = ("unlimited", "billing")
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash-image"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProjectsSettings(ServiceSettings):
    service_name: ClassVar[str] = "projects"

    port: int = 50052

    # "auto": Gemini when GEMINI_API_KEY is set, else the local engine.
    engine: str = "auto"
    gemini_api_key: Secret = Secret("")
    gemini_model: str = DEFAULT_GEMINI_MODEL
    # Empty: Google's endpoint; set it to point the real client at an emulator.
    gemini_base_url: str = ""
    # Calls to the model per edit (the first plus retries on 429 and 5xx).
    gemini_max_attempts: int = 4
    # First back-off between attempts; doubles each time (with jitter).
    gemini_backoff_seconds: float = 1.0

    # Seconds one engine call may take, retries included (Envoy's route allows 180).
    edit_timeout_seconds: float = 120.0
    # Edits still pending this long after they were recorded are failed by the sweeper
    # (a crash mid-edit); must exceed the edit timeout.
    pending_timeout_seconds: float = 300.0
    # How long a retry with the same request id waits for a running edit before
    # answering it still pending.
    duplicate_wait_seconds: float = 130.0
    # "unlimited" grants every reservation; "billing" asks the billing service.
    quota: str = "unlimited"
    # Bytes reserved for a result before the engine runs, as a multiple of the source's.
    result_storage_factor: float = 2.0
    # Deleted projects keep their images this long before the purge removes them.
    purge_after_seconds: float = 3600.0
    # How often the sweeper runs in the server; 0 turns the background task off.
    sweep_interval_seconds: float = 60.0
    sweep_batch_size: int = 100
    # How long a sweeper owns the rows it claimed (an edit to settle, a project's unit, a
    # purge) before another sweeper may take them over: longer than one batch's work.
    sweep_lease_seconds: float = 300.0
    # How long after an edit finishes (or a project is created or deleted) the request that
    # did it has to settle its own reservations before the sweeper does.
    settle_grace_seconds: float = 30.0
    # Steps one re-apply may carry.
    max_reapply_steps: int = 20
    # Finished edits a replica keeps encoded for history pages (about 500 bytes each;
    # 0 keeps none). They never change, so no replica can serve a stale one (ADR 0023).
    edit_cache_size: int = 50_000
    tier_cache_seconds: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"{ENV_PREFIX}ENGINE must be one of {', '.join(ENGINES)}")
        if self.engine == "gemini" and not self.gemini_api_key:
            problems.append("GEMINI_API_KEY is required with the gemini engine")
        if self.quota not in QUOTA_MODES:
            problems.append(f"{ENV_PREFIX}QUOTA must be one of {', '.join(QUOTA_MODES)}")
        if self.gemini_max_attempts < 1:
            problems.append(f"{ENV_PREFIX}GEMINI_MAX_ATTEMPTS must be at least 1")
        for name in ("edit_timeout_seconds", "duplicate_wait_seconds", "gemini_backoff_seconds"):
            if getattr(self, name) <= 0:
                problems.append(f"{ENV_PREFIX}{name.upper()} must be positive")
        if self.pending_timeout_seconds <= self.edit_timeout_seconds:
            problems.append(f"{ENV_PREFIX}PENDING_TIMEOUT_SECONDS must exceed EDIT_TIMEOUT_SECONDS")
        for name in (
            "purge_after_seconds",
            "sweep_interval_seconds",
            "tier_cache_seconds",
            "settle_grace_seconds",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{ENV_PREFIX}{name.upper()} must not be negative")
        if self.sweep_lease_seconds <= 0:
            problems.append(f"{ENV_PREFIX}SWEEP_LEASE_SECONDS must be positive")
        if self.edit_cache_size < 0:
            problems.append(f"{ENV_PREFIX}EDIT_CACHE_SIZE must not be negative")
        if self.result_storage_factor < 0:
            problems.append(f"{ENV_PREFIX}RESULT_STORAGE_FACTOR must not be negative")
        if self.sweep_batch_size < 1 or self.max_reapply_steps < 1:
            problems.append(f"{ENV_PREFIX}SWEEP_BATCH_SIZE and MAX_REAPPLY_STEPS must be >= 1")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def engine_name(self) -> str:
        """The engine that runs retouch, filter and adjust edits."""
        if self.engine == "auto":
            return "gemini" if self.gemini_api_key else "local"
        return self.engine


GEMINI_VARIABLES = {
    "GEMINI_API_KEY": "gemini_api_key",
    "GEMINI_MODEL": "gemini_model",
    "GEMINI_BASE_URL": "gemini_base_url",
}


def load(environ: Mapping[str, str] | None = None) -> ProjectsSettings:
    env = dict(os.environ if environ is None else environ)
    # Google's own variable names, unless the prefixed ones are set.
    for plain, field in GEMINI_VARIABLES.items():
        prefixed = f"{ENV_PREFIX}{field.upper()}"
        if env.get(plain) and not env.get(prefixed):
            env[prefixed] = env[plain]
    return load_settings(ProjectsSettings, ENV_PREFIX, env)
