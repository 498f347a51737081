"""Composition root of identity: builds the database, services, servicers and the auth
policy explicitly, starts the gRPC server and the housekeeping task.

`start()` is what tests call (port 0, a controllable clock, a temporary mailbox);
`main()` is what `python -m services.identity` runs. The CLI commands build the same
components through `compose()`, so they use the same settings and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
from dataclasses import dataclass

from pixelshop.identity.v1 import identity_pb2_grpc

from runtime.auth import AccessTokenVerifier
from runtime.db import Database
from runtime.logs import configure_logging
from runtime.metrics import Metrics
from runtime.pagination import PageTokens
from runtime.server import Registration, RunningServer, serve, start_server
from services.identity.api import (
    IDENTITY_SERVICE,
    INTERNAL_SERVICE,
    IdentityApi,
    IdentityInternalApi,
    auth_policy,
)
from services.identity.keys import PublishedKeySource, SigningKeys
from services.identity.mail import Mailer, OutboxMailbox
from services.identity.models import SCHEMA, ThrottleScope
from services.identity.outbox import PRUNE_BATCH, Outbox, deleted_users
from services.identity.passwords import PasswordHasher
from services.identity.service import (
    Accounts,
    Clock,
    Housekeeping,
    Sessions,
    Tiers,
    utc_now,
)
from services.identity.settings import IdentitySettings, load
from services.identity.throttle import LoginThrottle, ThrottleRule
from services.identity.tokens import AccessTokenIssuer

log = logging.getLogger("pixelshop.identity.server")


@dataclass(frozen=True)
class IdentityComponents:
    keys: SigningKeys
    sessions: Sessions
    accounts: Accounts
    tiers: Tiers
    housekeeping: Housekeeping


def compose(
    settings: IdentitySettings, *, clock: Clock = utc_now, mailer: Mailer | None = None
) -> IdentityComponents:
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
    accounts = Accounts(
        sessions=sessions,
        passwords=passwords,
        throttle=throttle,
        mailer=mailer or OutboxMailbox(settings.mailbox_dir),
        app_url=settings.app_url,
        email_verification_ttl=datetime.timedelta(seconds=settings.email_verification_ttl_seconds),
        password_reset_ttl=datetime.timedelta(seconds=settings.password_reset_ttl_seconds),
        clock=clock,
    )
    return IdentityComponents(
        keys=keys,
        sessions=sessions,
        accounts=accounts,
        tiers=Tiers(clock=clock),
        housekeeping=Housekeeping(keys=keys, throttle=throttle, clock=clock),
    )


def connect(settings: IdentitySettings) -> Database:
    return Database.connect(settings.database_url.reveal(), SCHEMA, settings.db_pool_size)


async def start(
    settings: IdentitySettings,
    *,
    port: int | None = None,
    clock: Clock = utc_now,
    mailer: Mailer | None = None,
) -> RunningServer:
    settings.warn_about_weak_choices()
    database = connect(settings)
    try:
        components = compose(settings, clock=clock, mailer=mailer)
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
        # Deleted accounts' still-valid tokens are refused on every RPC (ADR 0012).
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
        await database.close()
        raise
    running.on_close.append(database.close)
    running.background.append(
        asyncio.create_task(
            keep_house(components.housekeeping, database, settings.maintenance_interval_seconds)
        )
    )
    running.background.append(asyncio.create_task(refused.run(), name="identity-deleted-users"))
    running.background.append(
        asyncio.create_task(
            prune_outbox(outbox, database, settings.maintenance_interval_seconds),
            name="identity-outbox-pruning",
        )
    )
    return running


async def prune_outbox(outbox: Outbox, database: Database, interval: float) -> None:
    """Deletes, every `interval` seconds, the events every follower has passed and older
    than the retention, in batches of one short transaction each."""
    while True:
        try:
            total = 0
            while True:
                async with database.transaction() as session:
                    pruned = await outbox.prune(session)
                total += pruned
                if pruned < PRUNE_BATCH:
                    break
            if total:
                log.info("pruned the outbox", extra={"deleted": total})
        except Exception:
            log.exception("pruning the outbox failed; retrying at the next interval")
        await asyncio.sleep(interval)


async def keep_house(housekeeping: Housekeeping, database: Database, interval: float) -> None:
    """Runs housekeeping now and then every `interval` seconds; a failed round (say,
    Postgres restarting) is logged and the next one tries again."""
    while True:
        try:
            async with database.transaction() as session:
                await housekeeping.rotate_keys(session)
            async with database.transaction() as session:
                swept = await housekeeping.sweep(session)
            if any(swept.values()):
                log.info("swept expired rows", extra={"deleted": swept})
        except Exception:
            log.exception("housekeeping failed; retrying at the next interval")
        await asyncio.sleep(interval)


async def run(settings: IdentitySettings) -> None:
    running = await start(settings)
    await serve(running, settings.shutdown_grace_seconds)


def main(settings: IdentitySettings | None = None) -> None:
    settings = settings or load()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
