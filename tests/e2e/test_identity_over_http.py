"""Issue 1 end to end: a new user signs up and manages the account over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import LOGIN_FAILURES_PER_ACCOUNT
from tests.support.api import bearer, delete_account, new_credentials, sign_up


async def test_sign_up_log_in_profile_refresh_log_out(http: httpx.AsyncClient) -> None:
    credentials = new_credentials()
    signed_up = await http.post("/v1/auth:signUp", json={**credentials, "displayName": "Ada"})
    assert signed_up.status_code == 200, signed_up.text
    body = signed_up.json()
    assert body["user"]["email"] == credentials["email"]
    assert body["user"]["displayName"] == "Ada"
    assert body["user"]["tier"] == "free"
    assert body["expiresIn"] <= 900
    uuid.UUID(body["user"]["id"])

    logged_in = await http.post(
        "/v1/auth:logIn",
        json={"login": credentials["username"].upper(), "password": credentials["password"]},
    )
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()
    auth = {"Authorization": f"Bearer {tokens['accessToken']}"}

    me = await http.get("/v1/users/me", headers=auth)
    assert me.status_code == 200
    assert me.json()["user"]["id"] == body["user"]["id"]
    assert me.json()["user"].get("emailVerified", False) is False

    patched = await http.patch("/v1/users/me", headers=auth, json={"displayName": "Ada L."})
    assert patched.status_code == 200, patched.text
    assert patched.json()["user"]["displayName"] == "Ada L."
    assert patched.json()["user"]["username"] == credentials["username"]

    refreshed = await http.post("/v1/auth:refresh", json={"refreshToken": tokens["refreshToken"]})
    assert refreshed.status_code == 200, refreshed.text
    new_tokens = refreshed.json()
    assert new_tokens["refreshToken"] != tokens["refreshToken"]
    me_again = await http.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {new_tokens['accessToken']}"}
    )
    assert me_again.json()["user"]["displayName"] == "Ada L."

    logged_out = await http.post(
        "/v1/auth:logOut", json={"refreshToken": new_tokens["refreshToken"]}
    )
    assert logged_out.status_code == 200
    assert logged_out.json() == {}
    after = await http.post("/v1/auth:refresh", json={"refreshToken": new_tokens["refreshToken"]})
    assert after.status_code == 401


async def test_usernames_are_unique_and_a_registered_address_is_not_revealed(
    http: httpx.AsyncClient,
) -> None:
    account = await sign_up(http)
    other = {**new_credentials(), "username": account["username"].upper()}
    taken = await http.post("/v1/auth:signUp", json=other)
    assert taken.status_code == 409, taken.text
    assert "username" in taken.json()["message"]
    # A registered address answers like any sign-up; its owner is mailed (ADR 0013).
    again = await http.post(
        "/v1/auth:signUp", json={**new_credentials(), "email": account["email"].upper()}
    )
    assert again.status_code == 200, again.text
    assert again.json()["user"]["email"] == account["email"]
    assert again.json()["user"]["id"] != account["user"]["id"]
    # So does an e-mail change to a registered address (it used to answer 409).
    newcomer = await sign_up(http)
    moved = await http.patch(
        "/v1/users/me",
        headers=bearer(newcomer),
        json={"email": account["email"], "currentPassword": newcomer["password"]},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["user"]["email"] == account["email"]


async def test_an_email_change_needs_the_current_password(http: httpx.AsyncClient) -> None:
    """An access token alone must not move the account to another mailbox (from which
    its holder could reset the password); the display name needs no password."""
    account = await sign_up(http)
    new_address = "moved-" + account["email"]
    missing = await http.patch("/v1/users/me", headers=bearer(account), json={"email": new_address})
    wrong = await http.patch(
        "/v1/users/me",
        headers=bearer(account),
        json={"email": new_address, "currentPassword": "not the password!"},
    )
    wrong_change = await http.post(
        "/v1/users/me:changePassword",
        headers=bearer(account),
        json={"currentPassword": "not the password!", "newPassword": "whatever it becomes"},
    )
    for refused in (missing, wrong):
        assert refused.status_code == 400, refused.text
        assert "current_password" in refused.json()["message"]
    # A wrong password is answered exactly as ChangePassword answers it.
    assert wrong.json() == wrong_change.json()
    me = await http.get("/v1/users/me", headers=bearer(account))
    assert me.json()["user"]["email"] == account["email"]  # nothing pending

    renamed = await http.patch(
        "/v1/users/me", headers=bearer(account), json={"displayName": "No password needed"}
    )
    assert renamed.status_code == 200, renamed.text
    moved = await http.patch(
        "/v1/users/me",
        headers=bearer(account),
        json={"email": new_address, "currentPassword": account["password"]},
    )
    assert moved.status_code == 200, moved.text
    user = moved.json()["user"]
    assert (user["email"], user.get("emailVerified", False)) == (new_address, False)


async def test_unknown_user_and_wrong_password_look_the_same(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    wrong_password = await http.post(
        "/v1/auth:logIn", json={"login": account["email"], "password": "not the password!"}
    )
    unknown_user = await http.post(
        "/v1/auth:logIn", json={"login": "nobody-" + account["email"], "password": "whatever12345"}
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


def _with_claims(token: str, **claims: Any) -> str:
    """The same token with changed claims and its (now wrong) signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(claims)
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


async def test_forged_tokens_are_rejected(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    token = account["accessToken"]
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = token.split(".")[1]
    forged = [
        f"{header}.{payload}.",
        _with_claims(token, aud="elsewhere"),
        _with_claims(token, exp=1),
        "garbage",
    ]
    for bad in forged:
        response = await http.get("/v1/users/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert response.json()["code"] == 16
    assert (await http.get("/v1/users/me")).status_code == 401


async def test_reusing_a_rotated_refresh_token_revokes_the_session(
    http: httpx.AsyncClient,
) -> None:
    account = await sign_up(http)
    first = account["refreshToken"]
    second = (await http.post("/v1/auth:refresh", json={"refreshToken": first})).json()
    third = await http.post("/v1/auth:refresh", json={"refreshToken": second["refreshToken"]})
    assert third.status_code == 200
    # `first` was rotated two generations ago: a thief or a replay. The session dies.
    replay = await http.post("/v1/auth:refresh", json={"refreshToken": first})
    assert replay.status_code == 401
    current = await http.post(
        "/v1/auth:refresh", json={"refreshToken": third.json()["refreshToken"]}
    )
    assert current.status_code == 401


async def test_password_change_revokes_other_sessions(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    other = await http.post(
        "/v1/auth:logIn", json={"login": account["email"], "password": account["password"]}
    )
    other_refresh = other.json()["refreshToken"]
    changed = await http.post(
        "/v1/users/me:changePassword",
        headers=bearer(account),
        json={"currentPassword": account["password"], "newPassword": "a brand new secret"},
    )
    assert changed.status_code == 200, changed.text
    assert (
        await http.post("/v1/auth:refresh", json={"refreshToken": other_refresh})
    ).status_code == 401
    # The session that changed the password lives on.
    mine = await http.post("/v1/auth:refresh", json={"refreshToken": account["refreshToken"]})
    assert mine.status_code == 200, mine.text
    relog = await http.post(
        "/v1/auth:logIn", json={"login": account["email"], "password": "a brand new secret"}
    )
    assert relog.status_code == 200


async def test_log_in_throttling_answers_429_with_a_delay(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    attempt = {"login": account["username"], "password": "wrong password!"}
    for _ in range(LOGIN_FAILURES_PER_ACCOUNT):
        assert (await http.post("/v1/auth:logIn", json=attempt)).status_code == 401
    throttled = await http.post("/v1/auth:logIn", json=attempt)
    assert throttled.status_code == 429, throttled.text
    assert int(throttled.headers["Retry-After"]) >= 1
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in throttled.json()["details"])
    # Even the right password waits: no guessing through the throttle.
    right = {"login": account["username"], "password": account["password"]}
    assert (await http.post("/v1/auth:logIn", json=right)).status_code == 429


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": ""}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a\u0000b@example.com"}, "email"),
        ({"email": "x" * 300 + "@example.com"}, "email"),
        ({"username": ""}, "username"),
        ({"username": "no spaces allowed"}, "username"),
        ({"username": "u" * 200}, "username"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 500}, "password"),
        ({"password": "nul\u0000inside-the-password"}, "password"),
        ({"displayName": "d" * 1000}, "display_name"),
    ],
)
async def test_bad_sign_up_input_is_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, str], field: str
) -> None:
    response = await http.post("/v1/auth:signUp", json={**new_credentials(), **body})
    assert response.status_code == 400, response.text
    status = response.json()
    assert status["code"] == 3
    assert field in status["message"] or field in json.dumps(status["details"])


async def test_other_bad_input_is_400_never_500(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    cases = [
        http.delete("/v1/users/me/sessions/not-a-uuid", headers=bearer(account)),
        http.get("/v1/users/me/sessions?pageToken=bogus", headers=bearer(account)),
        http.get("/v1/users/me/sessions?pageSize=-1", headers=bearer(account)),
        http.patch("/v1/users/me", headers=bearer(account), json={"email": "nope"}),
        http.post("/v1/auth:logIn", json={"login": "", "password": "x"}),
        http.post("/v1/auth:refresh", json={"refreshToken": ""}),
        http.post(
            "/v1/auth:signUp", content=b"{not json", headers={"Content-Type": "application/json"}
        ),
    ]
    for response in await asyncio.gather(*cases):
        assert response.status_code == 400, response.text
        assert "Traceback" not in response.text


async def test_public_keys_and_tiers(http: httpx.AsyncClient) -> None:
    jwks = (await http.get("/.well-known/jwks.json")).json()
    assert jwks["keys"]
    assert all(k["alg"] == "EdDSA" and k["kid"] for k in jwks["keys"])
    tiers = {t["code"]: t for t in (await http.get("/v1/tiers")).json()["tiers"]}
    assert tiers["free"]["limits"]["aiEditsPerMonth"] == "25"
    assert tiers["pro"]["features"]["public_presets"] is True


async def test_sessions_and_account_deletion(http: httpx.AsyncClient) -> None:
    account = await sign_up(http)
    sessions = (await http.get("/v1/users/me/sessions", headers=bearer(account))).json()
    assert len(sessions["sessions"]) == 1
    assert sessions["sessions"][0]["current"]
    refused = await http.request(
        "DELETE", "/v1/users/me", headers=bearer(account), json={"password": "wrong password!"}
    )
    assert refused.status_code in (400, 401, 403)
    await delete_account(http, account)
    relog = await http.post(
        "/v1/auth:logIn", json={"login": account["email"], "password": account["password"]}
    )
    assert relog.status_code == 401
