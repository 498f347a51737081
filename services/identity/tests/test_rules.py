"""Pure rules, without a server: normalization, addresses, throttle arithmetic."""

from __future__ import annotations

import datetime

import pytest

from runtime.errors import InvalidArgument
from runtime.settings import SettingsError, load_settings
from services.identity.api import client_address
from services.identity.models import ThrottleBucket, ThrottleScope
from services.identity.service import normalize_identifier, parse_email, parse_username
from services.identity.settings import ENV_PREFIX, IdentitySettings
from services.identity.throttle import ThrottleRule, address_subject
from tests.support.settings import INTERNAL_SECRET

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Alice ", "alice"),
        ("\uff21\uff2c\uff29\uff23\uff25", "alice"),  # full-width
        ("\u212aelvin", "kelvin"),  # Kelvin sign
        ("Stra\u00dfe", "strasse"),
        ("e\u0301cole", "\u00e9cole"),  # combining accent composes
    ],
)
def test_identifiers_normalize_to_one_form(typed: str, stored: str) -> None:
    assert normalize_identifier(typed) == stored
    assert normalize_identifier(stored) == stored


def test_emails() -> None:
    assert parse_email("Jo.Doe+tag@Example.COM", "email") == "jo.doe+tag@example.com"
    assert parse_email("m\u00fcller@b\u00fccher.de", "email") == "m\u00fcller@b\u00fccher.de"
    for bad in ("jo", "jo@", "jo@example", "jo@-example.com", "jo@example.123", ".jo@example.com"):
        with pytest.raises(InvalidArgument):
            parse_email(bad, "email")


def test_usernames_allow_letters_of_any_script_but_no_symbols() -> None:
    assert (
        parse_username("\u0416\u0435\u043d\u044f_92", "username") == "\u0436\u0435\u043d\u044f_92"
    )
    for bad in ("a+b", "emoji\U0001f600", "tab\tname"):
        with pytest.raises(InvalidArgument):
            parse_username(bad, "username")


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:203.0.113.5:50123", "203.0.113.5"),
        ("ipv6:%5B2001:db8::1%5D:50123", "2001:db8::1"),  # what grpc reports
        ("ipv6:[::1]:50123", "::1"),
        ("unix:/run/socket", "unix:/run/socket"),  # not an IP: kept (truncated)
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8::2", "2001:db8::2"),
    ],
)
def test_client_address_drops_the_port(peer: str, address: str) -> None:
    assert client_address(peer) == address


def test_retry_after_waits_until_enough_failures_leave_the_window() -> None:
    rule = ThrottleRule(ThrottleScope.ACCOUNT, limit=3, window=datetime.timedelta(minutes=15))
    assert rule.bucket == datetime.timedelta(minutes=1)
    minute = datetime.timedelta(minutes=1)
    buckets = [
        ThrottleBucket(T0, 2),
        ThrottleBucket(T0 + 5 * minute, 1),
        ThrottleBucket(T0 + 10 * minute, 1),  # holds the attempt being decided
    ]
    now = T0 + 10 * minute
    # Four counted, limit three: once the first bucket (two failures) leaves, one remains.
    assert rule.retry_after(buckets, now) == 5 * minute
    assert rule.retry_after(buckets[1:], now) is None
    assert rule.bucket_start(T0 + datetime.timedelta(seconds=90)) == T0 + minute


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Each of these used to start fine, then fail requests with an OverflowError
        # (now + TTL past year 9999) or stall the housekeeping loop.
        ("SESSION_IDLE_DAYS", "100000000"),
        ("EMAIL_VERIFICATION_TTL_SECONDS", "1000000000000"),
        ("PASSWORD_RESET_TTL_SECONDS", "1000000000000"),
        ("LOGIN_ACCOUNT_WINDOW_SECONDS", "1000000000000"),
        ("LOGIN_IP_WINDOW_SECONDS", "1000000000000"),
        ("KEY_PUBLISH_LEAD_SECONDS", "1000000000000"),
        ("KEY_ROTATION_DAYS", "1000000000"),
        ("MAINTENANCE_INTERVAL_SECONDS", "nan"),
        ("MAINTENANCE_INTERVAL_SECONDS", "inf"),
    ],
)
def test_settings_refuse_durations_that_cannot_work(name: str, value: str) -> None:
    environ = {"PIXELSHOP_INTERNAL_SECRET": INTERNAL_SECRET, f"{ENV_PREFIX}{name}": value}
    with pytest.raises(SettingsError, match=name):
        load_settings(IdentitySettings, ENV_PREFIX, environ)
    # The same variable with a sane value is accepted.
    load_settings(IdentitySettings, ENV_PREFIX, {**environ, f"{ENV_PREFIX}{name}": "3600"})


@pytest.mark.parametrize(
    ("address", "subject"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),  # not lumped with every IPv4 client
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("unix:/run/socket", "unix:/run/socket"),
    ],
)
def test_the_address_throttle_counts_ipv4_addresses_and_ipv6_slash_64s(
    address: str, subject: str
) -> None:
    assert address_subject(address) == subject
