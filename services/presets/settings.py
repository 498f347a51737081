"""Settings of the presets service, read once from `PIXELSHOP_PRESETS_*` at start-up."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from runtime.config import ServiceSettings
from runtime.settings import load_settings

ENV_PREFIX = "PIXELSHOP_PRESETS_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PresetsSettings(ServiceSettings):
    service_name: ClassVar[str] = "presets"

    port: int = 50054
    # How long a user's tier (which decides who may publish public presets) is cached.
    tier_cache_seconds: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tier_cache_seconds < 0:
            raise ValueError(f"{ENV_PREFIX}TIER_CACHE_SECONDS must not be negative")


def load() -> PresetsSettings:
    return load_settings(PresetsSettings, ENV_PREFIX)
