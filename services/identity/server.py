"""Composition root of identity: builds every part explicitly and serves it.

`build` wires the database, password hasher, throttle, signing keys, services, workflows
and the mail worker; `start` puts them behind a gRPC server with their background tasks
(tests call it with port 0, a controllable clock and a temporary mailbox); `main` is
`python -m services.identity`: serve, or one of the operator commands, which use the
same `build` and so the same settings and database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pixelshop.identity.v1 import identity_pb2_grpc

from runtime.auth import AccessTokenVerifier
from runtime.clock import Clock, utc_now
from runtime.db import Database
from runtime.errors import DomainError
from runtime.logs import configure_logging
from runtime.loop import run
from runtime.metrics import Metrics
from runtime.pagination import PageTokens
from runtime.periodic import every
from runtime.server import Registration, RunningServer, serve, start_server
from runtime.settings import SettingsError
from services.identity.api import (
    IDENTITY_SERVICE,
    INTERNAL_SERVICE,
    IdentityApi,
    IdentityInternalApi,
    auth_policy,
)
from services.identity.keys import SigningKeys
from services.identity.mail import MailboxFolder, Mailer
from services.identity.models import SCHEMA, ThrottleScope
from services.identity.outbox import PRUNE_BATCH, Outbox, deleted_users
from services.identity.passwords import PasswordHasher
from services.identity.service import (
    Accounts,
    Housekeeping,
    MailDesk,
    MailLimits,
    Sessions,
    Tiers,
)
from services.identity.settings import IdentitySettings, load
from services.identity.throttle import LoginThrottle, ThrottleRule
from services.identity.tokens import AccessTokenIssuer
from services.identity.workflows import AccountWorkflows, MailWakeUp, MailWorkflow

log = logging.getLogger("pixelshop.identity.server")


@dataclass
class IdentityComponents:
    """Everything `build` made; `close` releases it in reverse order."""

    settings: IdentitySettings
    database: Database
    passwords: PasswordHasher
    keys: SigningKeys
    sessions: Sessions
    accounts: Accounts
    tiers: Tiers
    housekeeping: Housekeeping
    workflows: AccountWorkflows
    mail: MailWorkflow
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def build(
    settings: IdentitySettings, *, clock: Clock = utc_now, mailer: Mailer | None = None
) -> IdentityComponents:
    database = Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)
    passwords = PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
    )
    throttle = LoginThrottle(
        account=ThrottleRule(
            ThrottleScope.ACCOUNT,
            settings.login_account_max_failures,
            datetime.timedelta(seconds=settings.login_account_window_seconds),
        ),
        ip=ThrottleRule(
            ThrottleScope.IP,
            settings.login_ip_max_failures,
            datetime.timedelta(seconds=settings.login_ip_window_seconds),
        ),
    )
    keys = SigningKeys(
        rotation_days=settings.key_rotation_days,
        publish_lead_seconds=settings.key_publish_lead_seconds,
        clock=clock,
    )
    sessions = Sessions(
        passwords=passwords,
        throttle=throttle,
        keys=keys,
        access_tokens=AccessTokenIssuer(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
        ),
        session_idle=datetime.timedelta(days=settings.session_idle_days),
        refresh_grace=datetime.timedelta(seconds=settings.refresh_grace_seconds),
        clock=clock,
    )
    accounts = Accounts(sessions=sessions, throttle=throttle, clock=clock)
    wake_up = MailWakeUp()
    mail = MailWorkflow(
        database=database,
        desk=MailDesk(
            app_url=settings.app_url,
            email_verification_ttl=datetime.timedelta(
                seconds=settings.email_verification_ttl_seconds
            ),
            email_change_ttl=datetime.timedelta(seconds=settings.email_verification_ttl_seconds),
            password_reset_ttl=datetime.timedelta(seconds=settings.password_reset_ttl_seconds),
            limits=MailLimits(
                cooldown=datetime.timedelta(seconds=settings.mail_cooldown_seconds),
                per_cooldown=settings.mail_per_cooldown,
                daily_cap=settings.mail_daily_cap,
            ),
            clock=clock,
        ),
        mailer=mailer or MailboxFolder(settings.mailbox_dir),
        claim=datetime.timedelta(seconds=settings.mail_claim_seconds),
        poll_seconds=settings.mail_poll_seconds,
        clock=clock,
        wake_up=wake_up,
    )
    workflows = AccountWorkflows(
        database=database,
        accounts=accounts,
        sessions=sessions,
        passwords=passwords,
        on_mail_requested=wake_up,
    )
    return IdentityComponents(
        settings=settings,
        database=database,
        passwords=passwords,
        keys=keys,
        sessions=sessions,
        accounts=accounts,
        tiers=Tiers(clock=clock),
        housekeeping=Housekeeping(keys=keys, throttle=throttle, clock=clock),
        workflows=workflows,
        mail=mail,
        closers=[database.close],
    )


async def start(
    settings: IdentitySettings,
    *,
    port: int | None = None,
    clock: Clock = utc_now,
    mailer: Mailer | None = None,
    mail_worker: bool = True,
) -> RunningServer:
    """`mail_worker=False` leaves mail requests for another replica (or a test) to handle."""
    settings.warn_about_weak_choices()
    components = build(settings, clock=clock, mailer=mailer)
    database = components.database
    try:
        async with database.transaction() as session:
            await components.keys.ensure_signing_key(session)
        verifier = AccessTokenVerifier(
            PublishedKeySource(database, components.keys),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        metrics = Metrics(settings.service_name)
        public = IdentityApi(
            database=database,
            accounts=components.accounts,
            sessions=components.sessions,
            workflows=components.workflows,
            mail_requested=components.mail.wake_up,
            tiers=components.tiers,
            keys=components.keys,
            page_tokens=PageTokens.for_service(
                settings.service_name, settings.internal_secret.reveal()
            ),
            metrics=metrics,
        )
        outbox = Outbox(
            retention=datetime.timedelta(days=settings.outbox_retention_days), clock=clock
        )
        # Deleted accounts' still-valid tokens are refused on every RPC (ADR 0015).
        refused = deleted_users(database)
        await refused.load()
        internal = IdentityInternalApi(database=database, tiers=components.tiers, outbox=outbox)
        running = await start_server(
            settings,
            [
                Registration(
                    IDENTITY_SERVICE,
                    public,
                    identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                ),
                Registration(
                    INTERNAL_SERVICE,
                    internal,
                    identity_pb2_grpc.add_IdentityInternalServiceServicer_to_server,
                ),
            ],
            dataclasses.replace(auth_policy(), refused_user=refused.is_deleted),
            verifier,
            port=port,
            metrics=metrics,
        )
    except BaseException:
        await components.close()
        raise
    running.on_close.append(components.close)
    interval = settings.maintenance_interval_seconds
    running.background.append(
        asyncio.create_task(
            every(
                interval,
                partial(keep_house, components.housekeeping, database),
                name="housekeeping",
            ),
            name="identity-housekeeping",
        )
    )
    if mail_worker:
        running.background.append(asyncio.create_task(components.mail.run(), name="identity-mail"))
    running.background.append(asyncio.create_task(refused.run(), name="identity-deleted-users"))
    running.background.append(
        asyncio.create_task(
            every(interval, partial(prune_outbox, outbox, database), name="pruning the outbox"),
            name="identity-outbox-pruning",
        )
    )
    return running


async def prune_outbox(outbox: Outbox, database: Database) -> None:
    """One pruning round (every maintenance interval, `runtime.periodic.every`): deletes
    the events every follower has passed and older than the retention, in batches of one
    short transaction each."""
    total = 0
    while True:
        async with database.transaction() as session:
            pruned = await outbox.prune(session)
        total += pruned
        if pruned < PRUNE_BATCH:
            break
    if total:
        log.info("pruned the outbox", extra={"deleted": total})


async def keep_house(housekeeping: Housekeeping, database: Database) -> None:
    """One housekeeping round (every maintenance interval, `runtime.periodic.every`; a
    failed one, say Postgres restarting, is logged and the next tries again): rotates the
    signing keys and sweeps expired rows."""
    async with database.transaction() as session:
        await housekeeping.rotate_keys(session)
    async with database.transaction() as session:
        swept = await housekeeping.sweep(session)
    if any(swept.values()):
        log.info("swept expired rows", extra={"deleted": swept})


class PublishedKeySource:
    """runtime.auth.KeySource for identity's own verifier: keys come straight from the
    table, not from a network call to itself. Hits are cached for a minute, misses for a
    few seconds (a flood of invented kids costs one indexed lookup each, at most)."""

    MAX_ENTRIES = 1024

    def __init__(
        self,
        database: Database,
        keys: SigningKeys,
        *,
        hit_seconds: float = 60.0,
        miss_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._keys = keys
        self._hit_seconds = hit_seconds
        self._miss_seconds = miss_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, Ed25519PublicKey | None]] = {}

    async def public_key(self, kid: str) -> Ed25519PublicKey | None:
        now = self._monotonic()
        cached = self._cache.get(kid)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._load(kid)
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.clear()
        lifetime = self._hit_seconds if key is not None else self._miss_seconds
        self._cache[kid] = (now + lifetime, key)
        return key

    async def _load(self, kid: str) -> Ed25519PublicKey | None:
        try:
            key_id = uuid.UUID(kid)
        except ValueError:
            return None
        async with self._database.transaction() as session:
            key = await self._keys.published_key(session, key_id)
        if key is None:
            return None
        public = load_pem_public_key(key.public_key_pem.encode())
        return public if isinstance(public, Ed25519PublicKey) else None


# Commands


async def _serve(settings: IdentitySettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


async def set_tier(settings: IdentitySettings, login: str, tier_code: str) -> str:
    """One transaction: the tier and its `user.tier_changed` event. Billing follows the
    outbox and records the change from the event; nothing else is called (ADR 0021)."""
    components = build(settings)
    try:
        async with components.database.transaction() as session:
            user = await components.tiers.set_tier_by_login(session, login, tier_code)
    finally:
        await components.close()
    return (
        f"{user.username} ({user.id}) is on tier {user.tier_code}; "
        "billing follows through the outbox (user.tier_changed)"
    )


async def rotate_signing_key(settings: IdentitySettings, *, now: bool) -> str:
    components = build(settings)
    try:
        async with components.database.transaction() as session:
            key = await components.keys.rotate(session, immediately=now)
    finally:
        await components.close()
    return f"new signing key {key.kid} published; it signs from {key.activated_at.isoformat()}"


async def send_mail(settings: IdentitySettings) -> str:
    components = build(settings)
    try:
        handled = await components.mail.run_once()
    finally:
        await components.close()
    return f"{handled} mail request(s) handled"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m services.identity",
        description="The identity service (settings from PIXELSHOP_IDENTITY_* variables).",
    )
    commands = root.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve gRPC (the default)")
    tier = commands.add_parser(
        "set-tier", help="set a user's tier (how plans change while Stripe is off)"
    )
    tier.add_argument("login", help="the user's email address or username")
    tier.add_argument("tier", help="tier code, e.g. free or pro")
    rotate = commands.add_parser(
        "rotate-signing-key", help="add a new access-token signing key and retire the current one"
    )
    rotate.add_argument(
        "--now",
        action="store_true",
        help="sign with the new key at once instead of after the publish lead "
        "(verifiers fetch unknown keys on demand, so only a brief hiccup is possible)",
    )
    commands.add_parser("send-mail", help="handle every mail request due now, then exit")
    return root


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as error:
        print(f"identity: {error}", file=sys.stderr)
        return 2
    if options.command in (None, "serve"):
        configure_logging(settings.service_name, settings.log_level, settings.log_json)
        with contextlib.suppress(KeyboardInterrupt):
            run(_serve(settings))
        return 0
    configure_logging(settings.service_name, "WARNING", json_lines=False)
    try:
        if options.command == "set-tier":
            message = run(set_tier(settings, options.login, options.tier))
        elif options.command == "rotate-signing-key":
            message = run(rotate_signing_key(settings, now=options.now))
        else:
            message = run(send_mail(settings))
    except DomainError as error:
        print(f"identity: {error.message}", file=sys.stderr)
        return 1
    print(message)
    return 0
