"""Settings, the command line and the tier lookup the composition root wires."""

from __future__ import annotations

import socket
import uuid

import pytest

from runtime.auth import ServiceTokens
from runtime.clients import PeerChannel
from runtime.errors import NotFound, Unavailable
from runtime.peers.identity import IdentityClient, TierLookup
from runtime.settings import SettingsError, load_settings
from services.presets.server import main
from services.presets.settings import ENV_PREFIX, PresetsSettings
from tests.support.fake_identity import FakeIdentity
from tests.support.settings import INTERNAL_SECRET


def test_settings_come_from_the_presets_prefix() -> None:
    settings = load_settings(
        PresetsSettings,
        ENV_PREFIX,
        {
            "PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET,
            "PIXELSHOP_PRESETS_PORT": "6000",
            "PIXELSHOP_PRESETS_TIER_CACHE_SECONDS": "5",
            "PIXELSHOP_IDENTITY_ADDR": "identity:50051",
        },
    )
    assert settings.port == 6000
    assert settings.tier_cache_seconds == 5.0
    assert settings.identity_addr == "identity:50051"
    assert (
        load_settings(
            PresetsSettings, ENV_PREFIX, {"PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET}
        ).port
        == 50054
    )
    with pytest.raises(SettingsError, match="METRICS_PORT"):
        load_settings(
            PresetsSettings,
            ENV_PREFIX,
            {"PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET, "PIXELSHOP_PRESETS_METRICS_PORT": "-1"},
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_identity_client_is_the_tier_lookup(fake_identity: FakeIdentity) -> None:
    peer = PeerChannel(fake_identity.address, ServiceTokens(INTERNAL_SECRET, "presets"))
    try:
        tiers: TierLookup = IdentityClient(peer, tier_cache_seconds=0)
        pro, _ = fake_identity.new_user("pro")
        free, _ = fake_identity.new_user("free")
        assert (await tiers.tier(pro)).allows("public_presets")
        assert not (await tiers.tier(free)).allows("public_presets")
        with pytest.raises(NotFound):
            await tiers.tier(uuid.uuid4())
    finally:
        await peer.close()


async def test_an_unreachable_identity_is_unavailable_not_internal() -> None:
    peer = PeerChannel(f"127.0.0.1:{_closed_port()}", ServiceTokens(INTERNAL_SECRET, "presets"))
    try:
        with pytest.raises(Unavailable):
            await IdentityClient(peer, tier_cache_seconds=0).tier(uuid.uuid4())
    finally:
        await peer.close()


def test_the_command_line_serves_and_refuses_unknown_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["sweep"])
    assert exited.value.code == 2
