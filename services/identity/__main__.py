"""`python -m services.identity` serves; two subcommands operate on the same database:

    python -m services.identity [serve]
    python -m services.identity set-tier <email-or-username> <tier>
    python -m services.identity rotate-signing-key [--now]

`set-tier` is the documented way to change a user's plan while Stripe is off; it writes
the same `user.tier_changed` outbox event billing's calls do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from runtime.errors import DomainError
from runtime.logs import configure_logging
from runtime.settings import SettingsError
from services.identity import server
from services.identity.settings import IdentitySettings, load


async def set_tier(settings: IdentitySettings, login: str, tier_code: str) -> str:
    database = server.connect(settings)
    try:
        tiers = server.compose(settings).tiers
        async with database.transaction() as session:
            user = await tiers.set_tier_by_login(session, login, tier_code)
    finally:
        await database.close()
    return f"{user.username} ({user.id}) is on tier {user.tier_code}"


async def rotate_signing_key(settings: IdentitySettings, *, now: bool) -> str:
    database = server.connect(settings)
    try:
        keys = server.compose(settings).keys
        async with database.transaction() as session:
            key = await keys.rotate(session, immediately=now)
    finally:
        await database.close()
    return f"new signing key {key.kid} published; it signs from {key.activated_at.isoformat()}"


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
    return root


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        settings = load()
    except SettingsError as error:
        print(f"identity: {error}", file=sys.stderr)
        return 2
    if options.command in (None, "serve"):
        server.main(settings)
        return 0
    configure_logging(settings.service_name, "WARNING", json_lines=False)
    try:
        if options.command == "set-tier":
            message = asyncio.run(set_tier(settings, options.login, options.tier))
        else:
            message = asyncio.run(rotate_signing_key(settings, now=options.now))
    except DomainError as error:
        print(f"identity: {error.message}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
