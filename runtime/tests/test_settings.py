from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from runtime.config import ServiceSettings
from runtime.settings import Secret, SettingsError, load_settings

SECRET = "s" * 40


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    port: int = 50099
    retries: int = 3
    origins: tuple[str, ...] = ()
    api_key: Secret = Secret("")


def test_reads_prefixed_and_shared_variables() -> None:
    settings = load_settings(
        DemoSettings,
        "PIXELSHOP_DEMO_",
        {
            "PIXELSHOP_DEMO_RETRIES": "5",
            "PIXELSHOP_DEMO_ORIGINS": "https://a.example, https://b.example",
            "PIXELSHOP_INTERNAL_SECRET": SECRET,
            "PIXELSHOP_IDENTITY_ADDR": "identity:50051",
        },
    )
    assert settings.retries == 5
    assert settings.origins == ("https://a.example", "https://b.example")
    assert settings.identity_addr == "identity:50051"
    assert settings.port == 50099
    # The embedded cluster is the default database, as the demo runtime role.
    assert "pixelshop_demo@" in settings.database_url.reveal()


def test_service_variable_wins_over_shared() -> None:
    settings = load_settings(
        DemoSettings,
        "PIXELSHOP_DEMO_",
        {
            "PIXELSHOP_INTERNAL_SECRET": SECRET,
            "PIXELSHOP_LOG_LEVEL": "INFO",
            "PIXELSHOP_DEMO_LOG_LEVEL": "DEBUG",
        },
    )
    assert settings.log_level == "DEBUG"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(DemoSettings, "PIXELSHOP_DEMO_", {"PIXELSHOP_DEMO_RETRIES": "many"})
    message = str(error.value)
    assert "PIXELSHOP_DEMO_RETRIES is invalid" in message
    assert "PIXELSHOP_DEMO_INTERNAL_SECRET is required" in message


def test_validation_after_parsing_is_reported() -> None:
    with pytest.raises(SettingsError, match="at least 32 characters"):
        load_settings(DemoSettings, "PIXELSHOP_DEMO_", {"PIXELSHOP_INTERNAL_SECRET": "short"})


def test_secrets_never_print() -> None:
    settings = load_settings(
        DemoSettings,
        "PIXELSHOP_DEMO_",
        {"PIXELSHOP_INTERNAL_SECRET": SECRET, "PIXELSHOP_DEMO_API_KEY": "hunter2-hunter2"},
    )
    assert "hunter2" not in repr(settings)
    assert SECRET not in repr(settings)
    assert settings.api_key.reveal() == "hunter2-hunter2"
