"""Settings of the identity service, read once from `PIXELSHOP_IDENTITY_*` at start-up.

Shared values (the token issuer and audience, the internal secret) also fall back to
`PIXELSHOP_*`; see runtime/settings.py. Every bound below is checked here so that a bad
environment stops the process at start-up with one message, not at the first request.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import ClassVar

from runtime.config import ServiceSettings
from runtime.settings import load_settings

ENV_PREFIX = "PIXELSHOP_IDENTITY_"

# <repo>/.pixelshop/mailbox, computed from this file so it never depends on the caller's
# working directory or on one machine's layout.
DEFAULT_MAILBOX_DIR = pathlib.Path(__file__).resolve().parents[2] / ".pixelshop" / "mailbox"

# SPEC: an access token lives at most 15 minutes. Retired signing keys stay published
# this long (plus clock leeway) after their retirement, whatever the configured TTL was.
MAX_ACCESS_TOKEN_SECONDS = 900
# SPEC: a reused refresh token may be forgiven for at most 5 seconds.
MAX_REFRESH_GRACE_SECONDS = 5.0
# No duration setting may exceed this: longer is a typo, and far longer overflows the
# date arithmetic of every request (now + TTL) instead of failing at start-up.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600
# OWASP's minimum for argon2id; below it we warn (tests use cheaper parameters on purpose).
OWASP_ARGON2_MEMORY_KIB = 19456
OWASP_ARGON2_TIME_COST = 2

log = logging.getLogger("pixelshop.identity.settings")


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdentitySettings(ServiceSettings):
    service_name: ClassVar[str] = "identity"

    port: int = 50051

    # Access tokens (EdDSA JWTs) and sessions.
    access_token_ttl_seconds: int = MAX_ACCESS_TOKEN_SECONDS
    # A session (and its refresh token) ends after this many days without a refresh.
    session_idle_days: int = 30
    # A rotated refresh token presented again this soon is a lost response, not theft.
    refresh_grace_seconds: float = MAX_REFRESH_GRACE_SECONDS

    # Password hashing (argon2id); defaults are OWASP's minimum.
    argon2_memory_kib: int = OWASP_ARGON2_MEMORY_KIB
    argon2_time_cost: int = OWASP_ARGON2_TIME_COST
    argon2_parallelism: int = 1

    # Log-in throttling: failed attempts allowed per window, per account and per address.
    login_account_max_failures: int = 10
    login_account_window_seconds: int = 15 * 60
    login_ip_max_failures: int = 100
    login_ip_window_seconds: int = 60

    # Signing keys: a new key every N days, published this long before it signs, so that
    # every verifier's cached JWKS (runtime.auth.JwksKeySource, 300 s) already has it.
    key_rotation_days: int = 30
    key_publish_lead_seconds: int = 360

    # One-time tokens mailed to users.
    email_verification_ttl_seconds: int = 48 * 3600
    password_reset_ttl_seconds: int = 3600
    # Where links in mails point (the web app).
    app_url: str = "http://127.0.0.1:8080"
    # The local mailbox: every mail is also written here as an .eml file.
    mailbox_dir: str = str(DEFAULT_MAILBOX_DIR)

    # Mail per address and per user: at most MAIL_PER_COOLDOWN within MAIL_COOLDOWN_SECONDS,
    # and at most MAIL_DAILY_CAP within a day; requests beyond are dropped (still answered OK).
    mail_cooldown_seconds: int = 15 * 60
    mail_per_cooldown: int = 3
    mail_daily_cap: int = 10
    # The mail worker looks for requests this often (and at once when this replica wrote
    # one); a claimed request whose worker died is taken up again after MAIL_CLAIM_SECONDS.
    mail_poll_seconds: float = 2.0
    mail_claim_seconds: int = 60

    # How often expired sessions, tokens and throttle buckets are swept, and key age checked.
    maintenance_interval_seconds: float = 600.0
    # Outbox events are pruned once every follower has passed them and they are this old
    # (ADR 0015); housekeeping prunes at each maintenance interval.
    outbox_retention_days: float = 7.0

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = [
            message
            for failed, message in (
                (
                    not 1 <= self.access_token_ttl_seconds <= MAX_ACCESS_TOKEN_SECONDS,
                    f"ACCESS_TOKEN_TTL_SECONDS must be 1-{MAX_ACCESS_TOKEN_SECONDS}",
                ),
                (self.session_idle_days < 1, "SESSION_IDLE_DAYS must be at least 1"),
                (
                    not 0 <= self.refresh_grace_seconds <= MAX_REFRESH_GRACE_SECONDS,
                    f"REFRESH_GRACE_SECONDS must be 0-{MAX_REFRESH_GRACE_SECONDS:g}",
                ),
                (self.argon2_parallelism < 1, "ARGON2_PARALLELISM must be at least 1"),
                (
                    self.argon2_memory_kib < 8 * self.argon2_parallelism,
                    "ARGON2_MEMORY_KIB must be at least 8 x ARGON2_PARALLELISM",
                ),
                (self.argon2_time_cost < 1, "ARGON2_TIME_COST must be at least 1"),
                (
                    self.login_account_max_failures < 1,
                    "LOGIN_ACCOUNT_MAX_FAILURES must be at least 1",
                ),
                (self.login_ip_max_failures < 1, "LOGIN_IP_MAX_FAILURES must be at least 1"),
                (
                    self.login_account_window_seconds < 1 or self.login_ip_window_seconds < 1,
                    "LOGIN_*_WINDOW_SECONDS must be at least 1",
                ),
                (self.key_rotation_days < 1, "KEY_ROTATION_DAYS must be at least 1"),
                (
                    self.key_publish_lead_seconds < 0,
                    "KEY_PUBLISH_LEAD_SECONDS must not be negative",
                ),
                (
                    self.email_verification_ttl_seconds < 60
                    or self.password_reset_ttl_seconds < 60,
                    "*_TTL_SECONDS of mailed tokens must be at least 60",
                ),
                (not self.app_url.startswith(("http://", "https://")), "APP_URL must be http(s)"),
                (not self.mailbox_dir, "MAILBOX_DIR must not be empty"),
                (self.mail_per_cooldown < 1, "MAIL_PER_COOLDOWN must be at least 1"),
                (
                    self.mail_daily_cap < self.mail_per_cooldown,
                    "MAIL_DAILY_CAP must be at least MAIL_PER_COOLDOWN",
                ),
                (
                    not 1 <= self.mail_cooldown_seconds <= 86400,
                    "MAIL_COOLDOWN_SECONDS must be 1-86400",
                ),
                (
                    not 0 < self.mail_poll_seconds <= 3600,
                    "MAIL_POLL_SECONDS must be positive and at most 3600",
                ),
                (not 1 <= self.mail_claim_seconds <= 86400, "MAIL_CLAIM_SECONDS must be 1-86400"),
                (
                    not 0 < self.maintenance_interval_seconds <= MAX_DURATION_SECONDS,
                    "MAINTENANCE_INTERVAL_SECONDS must be positive and at most ten years",
                ),
                (
                    not 0 <= self.outbox_retention_days <= 3650,
                    "OUTBOX_RETENTION_DAYS must be 0-3650",
                ),
                *(
                    (seconds > MAX_DURATION_SECONDS, f"{name} must be at most ten years")
                    for name, seconds in (
                        ("SESSION_IDLE_DAYS", self.session_idle_days * 86400),
                        ("KEY_ROTATION_DAYS", self.key_rotation_days * 86400),
                        ("KEY_PUBLISH_LEAD_SECONDS", self.key_publish_lead_seconds),
                        ("EMAIL_VERIFICATION_TTL_SECONDS", self.email_verification_ttl_seconds),
                        ("PASSWORD_RESET_TTL_SECONDS", self.password_reset_ttl_seconds),
                        ("LOGIN_ACCOUNT_WINDOW_SECONDS", self.login_account_window_seconds),
                        ("LOGIN_IP_WINDOW_SECONDS", self.login_ip_window_seconds),
                    )
                ),
            )
            if failed
        ]
        if problems:
            raise ValueError("; ".join(ENV_PREFIX + problem for problem in problems))

    def warn_about_weak_choices(self) -> None:
        """Logged at start-up: allowed (tests need it), but never what production wants."""
        if (
            self.argon2_memory_kib < OWASP_ARGON2_MEMORY_KIB
            or self.argon2_time_cost < OWASP_ARGON2_TIME_COST
        ):
            log.warning("argon2 parameters are below OWASP's minimum (m=19 MiB, t=2)")


def load() -> IdentitySettings:
    return load_settings(IdentitySettings, ENV_PREFIX)
