"""Sign-up, log-in, profile, refresh and log-out over real gRPC and Postgres."""

from __future__ import annotations

import datetime
import pathlib
import uuid

import asyncpg
import grpc
import jwt
import pytest
from google.protobuf import field_mask_pb2
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity.models import MailPurpose, MailRequest
from services.identity.repository import IdentityRepository
from services.identity.server import build, start
from services.identity.tests.conftest import AdjustableClock, identity_settings_for
from services.identity.tests.support import (
    PASSWORD,
    bearer,
    error_reason,
    log_in,
    mail_requests_handled,
    mailed_token,
    mails_to,
    sign_up,
    unique_name,
    violated_field,
    wait_for_mails,
)


async def test_sign_up_log_in_profile_refresh_log_out(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    name = unique_name("Flow")
    signed_up = await identity.SignUp(
        identity_pb2.SignUpRequest(
            email=f"{name}@Example.COM", username=name, password=PASSWORD, display_name="Flo"
        )
    )
    assert signed_up.user.email == f"{name.lower()}@example.com"
    assert signed_up.user.username == name.lower()
    assert signed_up.user.display_name == "Flo"
    assert signed_up.user.tier == "free"
    assert not signed_up.user.email_verified
    assert signed_up.expires_in == 900
    claims = jwt.decode(signed_up.access_token, options={"verify_signature": False})
    assert claims["sub"] == signed_up.user.id
    assert set(claims) >= {"sub", "sid", "tier", "iat", "exp", "iss", "aud", "jti"}
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(signed_up.access_token)["alg"] == "EdDSA"

    by_username = await log_in(identity, name.upper())
    by_email = await log_in(identity, f"{name}@EXAMPLE.com")
    assert by_username.user.id == by_email.user.id == signed_up.user.id

    me = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(by_email.access_token)
    )
    assert me.user.id == signed_up.user.id

    updated = await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(display_name="Florence"),
        metadata=bearer(by_email.access_token),
    )
    assert updated.user.display_name == "Florence"
    assert updated.user.username == name.lower()

    refreshed = await identity.Refresh(
        identity_pb2.RefreshRequest(refresh_token=by_email.refresh_token)
    )
    assert refreshed.refresh_token != by_email.refresh_token
    assert refreshed.user.display_name == "Florence"
    old_claims = jwt.decode(by_email.access_token, options={"verify_signature": False})
    new_claims = jwt.decode(refreshed.access_token, options={"verify_signature": False})
    assert new_claims["sid"] == old_claims["sid"]
    assert new_claims["jti"] != old_claims["jti"]

    await identity.LogOut(identity_pb2.LogOutRequest(refresh_token=refreshed.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await identity.Refresh(identity_pb2.RefreshRequest(refresh_token=refreshed.refresh_token))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Identity owns the sessions: its own RPCs stop accepting the session's access token.
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await identity.GetCurrentUser(
            identity_pb2.GetCurrentUserRequest(), metadata=bearer(refreshed.access_token)
        )
    assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The sign-up session is independent and still works.
    still = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(signed_up.access_token)
    )
    assert still.user.id == signed_up.user.id


async def test_log_out_with_an_unknown_token_is_ok(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    await identity.LogOut(identity_pb2.LogOutRequest(refresh_token="never-issued"))


@pytest.mark.parametrize(
    ("first", "second", "field"),
    [
        # Full-width "max" is the same username as MAX after NFKC.
        (("nfkc_a@example.com", "\uff4d\uff41\uff58"), ("nfkc_b@example.com", "MAX"), "username"),
        # The Kelvin sign folds to k, ß to ss.
        (("kelvin_a@example.com", "\u212aelvin"), ("kelvin_b@example.com", "kelvin"), "username"),
        (("strasse@example.com", "straße"), ("other@example.com", "STRASSE"), "username"),
        # The probe's look-alikes: Cyrillic U+0430 and U+043E for Latin a and o (UTS #39).
        (("cyr_a@example.com", "paypal"), ("cyr_b@example.com", "p\u0430yp\u0430l"), "username"),
        (("cyr_c@example.com", "b\u043eb"), ("cyr_d@example.com", "bob"), "username"),
        # Digit one for l, "rn" for m.
        (("one_a@example.com", "bill"), ("one_b@example.com", "bi11"), "username"),
        (("rn_a@example.com", "modern"), ("rn_b@example.com", "modem"), "username"),
    ],
)
async def test_usernames_are_unique_by_case_folding_and_by_look_alikes(
    identity: identity_pb2_grpc.IdentityServiceStub,
    first: tuple[str, str],
    second: tuple[str, str],
    field: str,
) -> None:
    suffix = unique_name("")
    first_email, first_name = first
    second_email, second_name = second

    def scoped(email: str, name: str) -> tuple[str, str]:
        local, domain = email.split("@")
        # Keep each case unique across runs without changing what is compared.
        return f"{local}{suffix}@{domain}", f"{name}{suffix}"

    first_email, first_name = scoped(first_email, first_name)
    second_email, second_name = scoped(second_email, second_name)
    await identity.SignUp(
        identity_pb2.SignUpRequest(email=first_email, username=first_name, password=PASSWORD)
    )
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await identity.SignUp(
            identity_pb2.SignUpRequest(email=second_email, username=second_name, password=PASSWORD)
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert field in (duplicate.value.details() or "")
    assert error_reason(duplicate.value) == f"{field.upper()}_TAKEN"


async def test_password_policy(identity: identity_pb2_grpc.IdentityServiceStub) -> None:
    name = unique_name()
    for password in ("short", "x" * 129, name, f"{name}@example.com".upper()):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity.SignUp(
                identity_pb2.SignUpRequest(
                    email=f"{name}@example.com", username=name, password=password
                )
            )
        assert violated_field(refused.value) == "password"


async def test_sign_up_with_a_registered_address_answers_as_usual_and_mails_its_owner(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
    admin_db: asyncpg.Connection,
) -> None:
    owner = await sign_up(identity)
    await wait_for_mails(mailbox, owner.email, "email_verification")
    # The probe: a sign-up with a taken address (in another case) used to answer EMAIL_TAKEN.
    asker = await sign_up(identity, email_address=owner.email.swapcase())
    assert asker.email == owner.email
    assert asker.user_id != owner.user_id
    me = await identity.GetCurrentUser(
        identity_pb2.GetCurrentUserRequest(), metadata=bearer(asker.access_token)
    )
    assert (me.user.email, me.user.email_verified) == (owner.email, False)

    await mail_requests_handled(admin_db, asker.user_id)
    kinds = [m["X-Pixelshop-Template"] for m in mails_to(mailbox, owner.email)]
    # The owner is told; nobody gets a link that would attach the address to the asker.
    assert kinds == ["email_verification", "address_in_use"]
    # Both log in by the address, each with their own password.
    assert (await log_in(identity, owner.email)).user.id == owner.user_id
    other_password = "another long passphrase"
    third = await sign_up(identity, email_address=owner.email, password=other_password)
    assert (await log_in(identity, owner.email, other_password)).user.id == third.user_id
    row = await admin_db.fetchrow(
        "SELECT email, pending_email FROM identity.users WHERE id = $1",
        uuid.UUID(third.user_id),
    )
    assert row is not None
    assert (row["email"], row["pending_email"]) == (None, owner.email)


async def test_update_profile_changes_username_and_email_once_confirmed(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
) -> None:
    account = await sign_up(identity)
    verified = await identity.VerifyEmail(
        identity_pb2.VerifyEmailRequest(
            token=await mailed_token(mailbox, account.email, "email_verification")
        )
    )
    assert verified.user.email_verified
    new_name = unique_name("Renamed")
    new_email = f"{new_name}@example.org"

    updated = await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(
            username=new_name, email=new_email.upper(), current_password=account.password
        ),
        metadata=bearer(account.access_token),
    )
    assert updated.user.username == new_name.lower()
    assert updated.user.email == new_email.lower()
    assert not updated.user.email_verified  # a new address must be confirmed
    token = await mailed_token(mailbox, new_email.lower(), "email_change")
    # Until then the old address is the account's, and it has heard nothing.
    await log_in(identity, account.email)
    assert [m["X-Pixelshop-Template"] for m in mails_to(mailbox, account.email)] == [
        "email_verification"
    ]

    moved = await identity.VerifyEmail(identity_pb2.VerifyEmailRequest(token=token))
    assert (moved.user.email, moved.user.email_verified) == (new_email.lower(), True)
    assert (await wait_for_mails(mailbox, account.email, "email_changed"))[-1]
    await log_in(identity, new_name)
    await log_in(identity, new_email)
    for old in (account.username, account.email):
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await log_in(identity, old)
        assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_update_mask_chooses_the_fields(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    account = await sign_up(identity)
    # username is present but not in the mask: it must not change.
    updated = await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(
            display_name="Masked",
            username=unique_name(),
            update_mask=field_mask_pb2.FieldMask(paths=["displayName"]),
        ),
        metadata=bearer(account.access_token),
    )
    assert updated.user.display_name == "Masked"
    assert updated.user.username == account.username

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await identity.UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(
                update_mask=field_mask_pb2.FieldMask(paths=["tier"])
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(unknown.value) == "update_mask"

    with pytest.raises(grpc.aio.AioRpcError) as emptied:
        await identity.UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(
                update_mask=field_mask_pb2.FieldMask(paths=["username"])
            ),
            metadata=bearer(account.access_token),
        )
    assert violated_field(emptied.value) == "username"


async def test_a_taken_username_is_already_exists_but_a_taken_email_is_not_revealed(
    identity: identity_pb2_grpc.IdentityServiceStub,
    mailbox: pathlib.Path,
    admin_db: asyncpg.Connection,
) -> None:
    taken = await sign_up(identity)
    account = await sign_up(identity)
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await identity.UpdateCurrentUser(
            identity_pb2.UpdateCurrentUserRequest(username=taken.username.upper()),
            metadata=bearer(account.access_token),
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(duplicate.value) == "USERNAME_TAKEN"

    # The probe: PATCH /v1/users/me with a registered address answered 409.
    updated = await identity.UpdateCurrentUser(
        identity_pb2.UpdateCurrentUserRequest(
            email=taken.email.upper(), current_password=account.password
        ),
        metadata=bearer(account.access_token),
    )
    assert (updated.user.email, updated.user.email_verified) == (taken.email, False)
    await mail_requests_handled(admin_db, account.user_id)
    assert mails_to(mailbox, taken.email)[-1]["X-Pixelshop-Template"] == "address_in_use"
    # Nothing moved: each account keeps its own address.
    assert (await log_in(identity, taken.email)).user.id == taken.user_id
    assert (await log_in(identity, account.email)).user.id == account.user_id


async def test_list_tiers_is_public_and_seeded(
    identity: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    listed = await identity.ListTiers(identity_pb2.ListTiersRequest())
    tiers = {tier.code: tier for tier in listed.tiers}
    free, pro = tiers["free"], tiers["pro"]
    assert (free.limits.ai_edits_per_month, free.limits.storage_bytes) == (25, 1024**3)
    assert (free.limits.max_projects, free.limits.max_upload_bytes) == (20, 15 * 1024**2)
    assert free.limits.max_pixels == 40_000_000
    assert dict(free.features) == {"public_presets": False}
    assert (pro.limits.ai_edits_per_month, pro.limits.storage_bytes) == (1000, 100 * 1024**3)
    assert (pro.limits.max_projects, pro.limits.max_upload_bytes) == (0, 50 * 1024**2)
    assert pro.limits.max_pixels == 100_000_000
    assert dict(pro.features) == {"public_presets": True}
    assert pro.purchasable
    assert not free.purchasable
    assert [tier.code for tier in tiers.values()][:2] == ["free", "pro"]


async def test_a_mailbox_that_cannot_be_written_does_not_fail_a_sign_up(
    migrated_db: str,
    tmp_path: pathlib.Path,
    clock: AdjustableClock,
    admin_db: asyncpg.Connection,
) -> None:
    # Mail goes out after the request, from the worker: a full or read-only disk delays
    # it (the request stays, to be retried) and never fails the sign-up.
    not_a_directory = tmp_path / "occupied"
    not_a_directory.write_text("")
    settings = identity_settings_for(migrated_db, not_a_directory / "mailbox")
    running = await start(settings, port=0, clock=clock, mail_worker=False)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            account = await sign_up(identity_pb2_grpc.IdentityServiceStub(channel))
        components = build(settings, clock=clock)
        try:
            # Due a day from now, so that no other replica's worker takes it first.
            later = clock() + datetime.timedelta(days=1)
            async with components.database.transaction() as session:
                request = await IdentityRepository(session).insert_mail_request(
                    purpose=MailPurpose.EMAIL_VERIFICATION,
                    address=None,
                    user_id=uuid.UUID(account.user_id),
                    now=later,
                )
            claimed = MailRequest(
                id=request,
                purpose=MailPurpose.EMAIL_VERIFICATION,
                address=None,
                user_id=uuid.UUID(account.user_id),
                requested_at=later,
                attempts=1,
            )
            with pytest.raises(OSError, match="Not a directory"):
                await components.mail.handle(claimed)
        finally:
            await components.close()
    finally:
        await running.stop(0)
    kept = await admin_db.fetchval(
        "SELECT count(*) FROM identity.mail_requests WHERE id = $1", request
    )
    assert kept == 1  # retried once the claim lapses
    assert not await admin_db.fetchval(
        "SELECT count(*) FROM identity.outbox WHERE type = 'mail.sent'"
    )
    await admin_db.execute("DELETE FROM identity.mail_requests WHERE id = $1", request)
