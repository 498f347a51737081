"""Settings: read once from PIXELSHOP_ASSETS_*, validated at start-up."""

from __future__ import annotations

import pathlib

import pytest

from runtime.settings import SettingsError, load_settings
from services.assets.settings import ENV_PREFIX, AssetsSettings
from services.assets.storage import DirectoryStore, S3Store, build_store
from tests.support.settings import INTERNAL_SECRET

REPOSITORY = pathlib.Path(__file__).resolve().parents[3]
BASE = {"PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET}


def load(**variables: str) -> AssetsSettings:
    environ = {**BASE, **{ENV_PREFIX + name.upper(): value for name, value in variables.items()}}
    return load_settings(AssetsSettings, ENV_PREFIX, environ)


def test_defaults_are_the_embedded_ones() -> None:
    settings = load()
    assert settings.port == 50053
    assert settings.storage_backend == "directory"
    assert settings.quota == "billing"
    # Under the repository, wherever the process was started from.
    assert settings.storage_path == REPOSITORY / ".pixelshop" / "objects"
    assert isinstance(build_store(settings), DirectoryStore)


def test_switching_to_s3_is_configuration_only() -> None:
    settings = load(
        storage_backend="s3",
        s3_bucket="photos",
        s3_endpoint_url="http://127.0.0.1:9000",
        s3_path_style="true",
        s3_region="eu-central-1",
    )
    assert isinstance(build_store(settings), S3Store)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"storage_backend": "ftp"}, "STORAGE_BACKEND must be one of directory, s3"),
        ({"storage_backend": "s3"}, "S3_BUCKET is required with the s3 storage backend"),
        ({"quota": "free-for-all"}, "QUOTA must be one of unlimited, billing"),
        ({"max_upload_bytes": "0"}, "MAX_UPLOAD_BYTES must be"),
        ({"max_upload_bytes": str(200 * 1024 * 1024)}, "MAX_UPLOAD_BYTES must be"),
        ({"pending_timeout_seconds": "600"}, "PENDING_TIMEOUT_SECONDS must exceed"),
        ({"upload_url_expiry_seconds": "999999"}, "UPLOAD_URL_EXPIRY_SECONDS must be 1-604800"),
        ({"decode_concurrency": "0"}, "DECODE_CONCURRENCY must be at least 1"),
        ({"port": "eighty"}, "PIXELSHOP_ASSETS_PORT is invalid"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_variable(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load(**variables)
