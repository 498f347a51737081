"""Errors identity adds to runtime.errors."""

from __future__ import annotations

from runtime.errors import InvalidArgument, Unauthenticated

# One message for "no such account" and "wrong password": the answer must not tell them apart.
INVALID_LOGIN_MESSAGE = "invalid login or password"


def invalid_login() -> Unauthenticated:
    return Unauthenticated(INVALID_LOGIN_MESSAGE, reason="INVALID_LOGIN")


def invalid_refresh_token() -> Unauthenticated:
    return Unauthenticated(
        "refresh token is invalid, expired or revoked", reason="REFRESH_TOKEN_INVALID"
    )


def invalid_one_time_token() -> InvalidArgument:
    return InvalidArgument("token", "is invalid, expired or already used", reason="TOKEN_INVALID")


def wrong_password(field: str) -> InvalidArgument:
    """Re-authentication failed: the caller is logged in, so this is a bad field, not a
    401 that would make a browser drop its session."""
    return InvalidArgument(field, "is not the account's password", reason="WRONG_PASSWORD")
