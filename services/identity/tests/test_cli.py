"""`python -m services.identity` as an operator runs it (set-tier has its test with the
internal RPCs it mirrors)."""

from __future__ import annotations

from services.identity.settings import IdentitySettings
from services.identity.tests.cli import run_cli


async def test_the_commands_are_listed_and_unknown_ones_refused(
    identity_settings: IdentitySettings,
) -> None:
    code, out, err = await run_cli(identity_settings, "--help")
    assert code == 0, err
    for command in ("serve", "set-tier", "rotate-signing-key", "send-mail"):
        assert command in out
    code, _, err = await run_cli(identity_settings, "no-such-command")
    assert code == 2
    assert "invalid choice" in err


async def test_send_mail_handles_what_is_due_and_exits(
    identity_settings: IdentitySettings,
) -> None:
    code, out, err = await run_cli(identity_settings, "send-mail")
    assert code == 0, err
    assert "mail request(s) handled" in out
