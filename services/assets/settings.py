"""Settings of the assets service, read once from `PIXELSHOP_ASSETS_*` at start-up."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

from runtime.config import ServiceSettings
from runtime.server import MAX_MESSAGE_BYTES
from runtime.settings import load_settings

ENV_PREFIX = "PIXELSHOP_ASSETS_"

# Relative to the repository (found from this package), never to the working directory or
# a machine path, so `python -m services.assets` stores in the same place from anywhere.
DEFAULT_STORAGE_DIR = pathlib.Path(__file__).resolve().parents[2] / ".pixelshop" / "objects"

STORAGE_BACKENDS = ("directory", "s3")
QUOTA_MODES = ("unlimited", "billing")
MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class AssetsSettings(ServiceSettings):
    service_name: ClassVar[str] = "assets"

    port: int = 50053

    # Where objects live: "directory" (embedded default) or "s3" (any S3-compatible store).
    storage_backend: str = "directory"
    # Directory backend root; empty means <repo>/.pixelshop/objects.
    storage_dir: str = ""
    s3_bucket: str = ""
    # Empty: boto3's own chain (AWS_REGION, ~/.aws/config, ...).
    s3_region: str = ""
    # Empty: AWS itself; set it for MinIO, Ceph, R2, moto and the like.
    s3_endpoint_url: str = ""
    # Path-style addressing (endpoint/bucket/key), which most S3-compatible stores need.
    s3_path_style: bool = False

    # "billing" reserves storage with the billing service; "unlimited" (grant every
    # reservation) is only an explicit opt-out for an installation without billing.
    quota: str = "billing"

    # Hard ceilings on top of the tier's own limits (a tier limit of 0 means "no limit"):
    # what one worker can hold and decode at once.
    max_upload_bytes: int = 60 * MIB
    max_pixels: int = 100_000_000
    # Decodes running at once; each may hold a full bitmap of up to max_pixels.
    decode_concurrency: int = 3
    # Decodes one user may run at once: below DECODE_CONCURRENCY, so one user's uploads
    # never take every slot and another user's upload starts as soon as one is free.
    decode_per_user: int = 2

    upload_url_expiry_seconds: int = 900
    download_url_expiry_seconds: int = 300
    # Cache-Control max-age of content downloads (private: only the owner's browser caches).
    content_cache_seconds: int = 3600

    # How often the sweeper runs in the server; 0 turns the background task off.
    sweep_interval_seconds: float = 300.0
    # Rows still pending after this long are abandoned (must outlive a direct upload URL).
    pending_timeout_seconds: float = 3600.0
    # Objects without a row are removed only once they are this old (uploads in flight
    # write their object before the row becomes ready).
    orphan_grace_seconds: float = 3600.0
    # Rows (or stored objects) one sweep looks at per step.
    sweep_batch_size: int = 500
    # How long a sweep step (or a request's own clean-up) owns the rows it claimed before
    # another sweeper may take them over (when the first one died mid-step).
    sweep_lease_seconds: float = 300.0

    # How long a user's tier (upload limits) is cached.
    tier_cache_seconds: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.storage_dir:
            object.__setattr__(self, "storage_dir", str(DEFAULT_STORAGE_DIR))
        problems = []
        if self.storage_backend not in STORAGE_BACKENDS:
            problems.append(
                f"{ENV_PREFIX}STORAGE_BACKEND must be one of {', '.join(STORAGE_BACKENDS)}, "
                f"got {self.storage_backend!r}"
            )
        if self.storage_backend == "s3" and not self.s3_bucket:
            problems.append(f"{ENV_PREFIX}S3_BUCKET is required with the s3 storage backend")
        if self.quota not in QUOTA_MODES:
            problems.append(
                f"{ENV_PREFIX}QUOTA must be one of {', '.join(QUOTA_MODES)}, got {self.quota!r}"
            )
        # An upload arrives as one gRPC message; leave room for the envelope.
        ceiling = MAX_MESSAGE_BYTES - MIB
        if not 1 <= self.max_upload_bytes <= ceiling:
            problems.append(f"{ENV_PREFIX}MAX_UPLOAD_BYTES must be 1-{ceiling}")
        if self.max_pixels < 1:
            problems.append(f"{ENV_PREFIX}MAX_PIXELS must be at least 1")
        if self.decode_concurrency < 1:
            problems.append(f"{ENV_PREFIX}DECODE_CONCURRENCY must be at least 1")
        elif not 1 <= self.decode_per_user <= max(1, self.decode_concurrency - 1):
            problems.append(
                f"{ENV_PREFIX}DECODE_PER_USER must be at least 1 and below DECODE_CONCURRENCY "
                "(when that is above 1)"
            )
        for name in ("upload_url_expiry_seconds", "download_url_expiry_seconds"):
            # S3 refuses presigned URLs valid for more than seven days.
            if not 1 <= getattr(self, name) <= 7 * 24 * 3600:
                problems.append(f"{ENV_PREFIX}{name.upper()} must be 1-604800")
        if self.content_cache_seconds < 0:
            problems.append(f"{ENV_PREFIX}CONTENT_CACHE_SECONDS must not be negative")
        for name in ("sweep_interval_seconds", "orphan_grace_seconds", "tier_cache_seconds"):
            if getattr(self, name) < 0:
                problems.append(f"{ENV_PREFIX}{name.upper()} must not be negative")
        if self.pending_timeout_seconds <= self.upload_url_expiry_seconds:
            # Otherwise the sweeper could abandon a direct upload whose URL still works.
            problems.append(
                f"{ENV_PREFIX}PENDING_TIMEOUT_SECONDS must exceed UPLOAD_URL_EXPIRY_SECONDS"
            )
        if self.sweep_batch_size < 1:
            problems.append(f"{ENV_PREFIX}SWEEP_BATCH_SIZE must be at least 1")
        if self.sweep_lease_seconds <= 0:
            problems.append(f"{ENV_PREFIX}SWEEP_LEASE_SECONDS must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def storage_path(self) -> pathlib.Path:
        return pathlib.Path(self.storage_dir)


def load() -> AssetsSettings:
    return load_settings(AssetsSettings, ENV_PREFIX)
