"""identity's gRPC servicers: the only module that touches `_pb2` types.

Each method validates every field at the edge (INVALID_ARGUMENT naming the field), maps
protobuf to plain values, and either opens the call's one unit of work and hands its
session to the service (a plain RPC), or runs a workflow (sign-up, log-in, password
change and reset, account deletion: workflows.py), and maps the result back (ADR 0011).
A request that asks for mail only records it and wakes this replica's mail worker.
"""

from __future__ import annotations

import datetime
import ipaddress
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import TypeAlias, TypedDict

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message
from pixelshop.identity.v1 import identity_pb2, identity_pb2_grpc

from runtime import validation
from runtime.context import current_client, current_principal, current_service_caller
from runtime.db import Database
from runtime.errors import DomainError, InvalidArgument
from runtime.interceptors import AuthPolicy
from runtime.metrics import Metrics
from runtime.pagination import PageTokens
from runtime.timestamps import to_timestamp
from services.identity.keys import SigningKeys, jwk
from services.identity.models import OutboxEvent, Session, Tier, User
from services.identity.outbox import Outbox, event_types, position_of
from services.identity.service import (
    DISPLAY_NAME_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
    Accounts,
    ClientInfo,
    IssuedTokens,
    ProfileChanges,
    Sessions,
    Tiers,
    normalize_identifier,
    parse_email,
    parse_password,
    parse_username,
)
from services.identity.workflows import AccountWorkflows

IDENTITY_SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name
INTERNAL_SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityInternalService"].full_name
ANONYMOUS_METHODS = frozenset(
    f"/{IDENTITY_SERVICE}/{method}"
    for method in (
        "SignUp",
        "LogIn",
        "Refresh",
        "LogOut",
        "RequestPasswordReset",
        "ResetPassword",
        "VerifyEmail",
        "ListTiers",
        "GetJwks",
    )
)

# Opaque tokens we issue are 43 characters; anything much longer is not one of ours.
OPAQUE_TOKEN_MAX_LENGTH = 256
TIER_CODE_MAX_LENGTH = 32
USER_AGENT_MAX_LENGTH = 512
ADDRESS_MAX_LENGTH = 64
SESSIONS_PAGE_DEFAULT = 50
SESSIONS_PAGE_MAX = 100
EVENTS_PAGE_DEFAULT = 100
EVENTS_PAGE_MAX = 500
UPDATE_MASK_FIELDS = {
    "display_name": "display_name",
    "displayName": "display_name",
    "username": "username",
    "email": "email",
}

Context: TypeAlias = "grpc.aio.ServicerContext[Message, Message]"
JsonValue: TypeAlias = "str | int | float | bool | list[JsonValue] | dict[str, JsonValue] | None"


class TokenFields(TypedDict):
    user: identity_pb2.User
    access_token: str
    refresh_token: str
    expires_in: int


def auth_policy() -> AuthPolicy:
    return AuthPolicy(
        user_services=frozenset({IDENTITY_SERVICE}),
        internal_services=frozenset({INTERNAL_SERVICE}),
        anonymous_methods=ANONYMOUS_METHODS,
    )


# Edge validation


def client_info() -> ClientInfo:
    address, user_agent = current_client()
    return ClientInfo(
        address=client_address(address), user_agent=user_agent[:USER_AGENT_MAX_LENGTH]
    )


def client_address(peer: str) -> str:
    """The bare IP of a gRPC peer ('ipv4:1.2.3.4:5678', 'ipv6:%5B::1%5D:5678' — grpc
    percent-encodes the brackets) or of a forwarded '1.2.3.4'. The port is dropped:
    every new connection has a new one, and the throttle counts per address."""
    value = peer.strip()
    kind, separator, rest = value.partition(":")
    if separator and kind == "ipv4":
        value = rest.rsplit(":", 1)[0]
    elif separator and kind == "ipv6":
        host = urllib.parse.unquote(rest)
        value = host[1 : host.index("]")] if host.startswith("[") and "]" in host else host
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value[:ADDRESS_MAX_LENGTH]


def opaque_token(value: str, field: str) -> str:
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    value = value.strip()
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > OPAQUE_TOKEN_MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {OPAQUE_TOKEN_MAX_LENGTH} characters")
    return value


def display_name(value: str, *, required: bool) -> str:
    return validation.text(
        value, "display_name", max_length=DISPLAY_NAME_MAX_LENGTH, required=required
    )


def login_identifier(value: str) -> str:
    """An email or a username, normalized exactly as both are stored. Its syntax is not
    checked: a malformed one is simply an unknown account, with the same answer."""
    return normalize_identifier(validation.text(value, "login", max_length=EMAIL_MAX_LENGTH))


def profile_changes(request: identity_pb2.UpdateCurrentUserRequest) -> ProfileChanges:
    """The fields named in update_mask, or else the fields present."""
    paths: Sequence[str] = list(request.update_mask.paths)
    fields: set[str] = set()
    for path in paths:
        field = UPDATE_MASK_FIELDS.get(path)
        if field is None:
            raise InvalidArgument("update_mask", f"unknown field {path[:64]!r}")
        fields.add(field)
    if not paths:
        fields = {name for name in ("display_name", "username", "email") if request.HasField(name)}
    return ProfileChanges(
        display_name=display_name(request.display_name, required=True)
        if "display_name" in fields
        else None,
        username=parse_username(request.username, "username") if "username" in fields else None,
        email=parse_email(request.email, "email") if "email" in fields else None,
    )


def session_position(
    tokens: PageTokens, page_token: str, query: str
) -> tuple[datetime.datetime, uuid.UUID] | None:
    position = tokens.decode(page_token, query)
    if position is None:
        return None
    try:
        created_at, session_id = position
        return datetime.datetime.fromisoformat(created_at), uuid.UUID(session_id)
    except (TypeError, ValueError) as error:
        raise InvalidArgument("page_token", "is not a valid page token") from error


# Domain → protobuf


def struct(value: dict[str, JsonValue]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def user_message(user: User) -> identity_pb2.User:
    return identity_pb2.User(
        id=str(user.id),
        email=user.shown_email,
        username=user.username,
        display_name=user.display_name,
        tier=user.tier_code,
        email_verified=user.verified,
        create_time=to_timestamp(user.created_at),
        update_time=to_timestamp(user.updated_at),
    )


def tier_message(tier: Tier) -> identity_pb2.Tier:
    return identity_pb2.Tier(
        code=tier.code,
        name=tier.name,
        limits=identity_pb2.TierLimits(
            ai_edits_per_month=tier.ai_edits_per_month,
            storage_bytes=tier.storage_bytes,
            max_projects=tier.max_projects,
            max_upload_bytes=tier.max_upload_bytes,
            max_pixels=tier.max_pixels,
        ),
        features=struct(tier.features),
        purchasable=tier.purchasable,
    )


def session_message(session: Session, current: uuid.UUID) -> identity_pb2.Session:
    return identity_pb2.Session(
        id=str(session.id),
        user_agent=session.user_agent,
        ip_address=session.ip_address,
        create_time=to_timestamp(session.created_at),
        last_used_time=to_timestamp(session.last_used_at),
        expire_time=to_timestamp(session.expires_at),
        current=session.id == current,
    )


def event_message(event: OutboxEvent) -> identity_pb2.Event:
    return identity_pb2.Event(
        xact_id=event.xact_id,
        sequence=event.sequence,
        id=str(event.id),
        type=event.type,
        user_id=str(event.user_id) if event.user_id else "",
        payload=struct(event.payload),
        create_time=to_timestamp(event.created_at),
    )


class IdentityApi(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        *,
        database: Database,
        accounts: Accounts,
        sessions: Sessions,
        workflows: AccountWorkflows,
        mail_requested: Callable[[], None],
        tiers: Tiers,
        keys: SigningKeys,
        page_tokens: PageTokens,
        metrics: Metrics,
    ) -> None:
        self._database = database
        self._accounts = accounts
        self._sessions = sessions
        self._workflows = workflows
        self._mail_requested = mail_requested
        self._tiers = tiers
        self._keys = keys
        self._page_tokens = page_tokens
        self._metrics = metrics

    async def SignUp(
        self,
        request: identity_pb2.SignUpRequest,
        context: Context,
    ) -> identity_pb2.SignUpResponse:
        email = parse_email(request.email, "email")
        username = parse_username(request.username, "username")
        password = parse_password(request.password, "password", new=True)
        name = display_name(request.display_name, required=False)
        issued = await self._workflows.sign_up(
            email=email,
            username=username,
            password=password,
            display_name=name,
            client=client_info(),
        )
        return identity_pb2.SignUpResponse(**self._tokens(issued))

    async def LogIn(
        self, request: identity_pb2.LogInRequest, context: Context
    ) -> identity_pb2.LogInResponse:
        login = login_identifier(request.login)
        password = parse_password(request.password, "password", new=False)
        try:
            issued = await self._workflows.log_in(login, password, client_info())
        except DomainError as error:
            self._count_login(error.reason.lower())
            raise
        self._count_login("success")
        return identity_pb2.LogInResponse(**self._tokens(issued))

    async def Refresh(
        self, request: identity_pb2.RefreshRequest, context: Context
    ) -> identity_pb2.RefreshResponse:
        token = opaque_token(request.refresh_token, "refresh_token")
        # A reused token revokes its session, which commits, and the call still fails
        # (FailAfterCommit).
        async with self._database.transaction() as session:
            issued = await self._sessions.refresh(session, token)
        return identity_pb2.RefreshResponse(**self._tokens(issued))

    async def LogOut(
        self, request: identity_pb2.LogOutRequest, context: Context
    ) -> identity_pb2.LogOutResponse:
        token = opaque_token(request.refresh_token, "refresh_token")
        async with self._database.transaction() as session:
            await self._sessions.log_out(session, token)
        return identity_pb2.LogOutResponse()

    async def RequestPasswordReset(
        self, request: identity_pb2.RequestPasswordResetRequest, context: Context
    ) -> identity_pb2.RequestPasswordResetResponse:
        email = parse_email(request.email, "email")
        async with self._database.transaction() as session:
            await self._accounts.request_password_reset(session, email)
        self._mail_requested()
        return identity_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: identity_pb2.ResetPasswordRequest, context: Context
    ) -> identity_pb2.ResetPasswordResponse:
        token = opaque_token(request.token, "token")
        password = parse_password(request.new_password, "new_password", new=True)
        await self._workflows.reset_password(token, password)
        return identity_pb2.ResetPasswordResponse()

    async def VerifyEmail(
        self, request: identity_pb2.VerifyEmailRequest, context: Context
    ) -> identity_pb2.VerifyEmailResponse:
        token = opaque_token(request.token, "token")
        async with self._database.transaction() as session:
            user = await self._accounts.verify_email(session, token)
        self._mail_requested()  # an address change tells the old address
        return identity_pb2.VerifyEmailResponse(user=user_message(user))

    async def SendVerificationEmail(
        self, request: identity_pb2.SendVerificationEmailRequest, context: Context
    ) -> identity_pb2.SendVerificationEmailResponse:
        principal = current_principal()
        async with self._database.transaction() as session:
            await self._accounts.send_verification_email(session, principal)
        self._mail_requested()
        return identity_pb2.SendVerificationEmailResponse()

    async def GetCurrentUser(
        self, request: identity_pb2.GetCurrentUserRequest, context: Context
    ) -> identity_pb2.GetCurrentUserResponse:
        principal = current_principal()
        async with self._database.transaction() as session:
            user = await self._accounts.current_user(session, principal)
        return identity_pb2.GetCurrentUserResponse(user=user_message(user))

    async def UpdateCurrentUser(
        self, request: identity_pb2.UpdateCurrentUserRequest, context: Context
    ) -> identity_pb2.UpdateCurrentUserResponse:
        principal = current_principal()
        changes = profile_changes(request)
        current_password = (
            parse_password(request.current_password, "current_password", new=False)
            if request.current_password
            else None
        )
        user = await self._workflows.update_profile(
            principal, changes, current_password=current_password, client=client_info()
        )
        return identity_pb2.UpdateCurrentUserResponse(user=user_message(user))

    async def DeleteCurrentUser(
        self, request: identity_pb2.DeleteCurrentUserRequest, context: Context
    ) -> identity_pb2.DeleteCurrentUserResponse:
        principal = current_principal()
        password = parse_password(request.password, "password", new=False)
        await self._workflows.delete_account(principal, password=password, client=client_info())
        return identity_pb2.DeleteCurrentUserResponse()

    async def ChangePassword(
        self, request: identity_pb2.ChangePasswordRequest, context: Context
    ) -> identity_pb2.ChangePasswordResponse:
        principal = current_principal()
        current_password = parse_password(request.current_password, "current_password", new=False)
        new_password = parse_password(request.new_password, "new_password", new=True)
        await self._workflows.change_password(
            principal,
            current_password=current_password,
            new_password=new_password,
            client=client_info(),
        )
        return identity_pb2.ChangePasswordResponse()

    async def ListSessions(
        self, request: identity_pb2.ListSessionsRequest, context: Context
    ) -> identity_pb2.ListSessionsResponse:
        principal = current_principal()
        size = validation.page_size(
            request.page_size, default=SESSIONS_PAGE_DEFAULT, maximum=SESSIONS_PAGE_MAX
        )
        query = f"sessions:{principal.user_id}"
        after = session_position(self._page_tokens, request.page_token, query)
        async with self._database.transaction() as session:
            page = await self._sessions.list_sessions(
                session, principal, page_size=size, after=after
            )
        next_token = ""
        if page.next_after is not None:
            created_at, session_id = page.next_after
            next_token = self._page_tokens.encode([created_at.isoformat(), str(session_id)], query)
        return identity_pb2.ListSessionsResponse(
            sessions=[session_message(s, principal.session_id) for s in page.sessions],
            next_page_token=next_token,
        )

    async def RevokeSession(
        self, request: identity_pb2.RevokeSessionRequest, context: Context
    ) -> identity_pb2.RevokeSessionResponse:
        principal = current_principal()
        session_id = validation.required_uuid(request.session_id, "session_id")
        async with self._database.transaction() as session:
            await self._sessions.revoke_session(session, principal, session_id)
        return identity_pb2.RevokeSessionResponse()

    async def ListTiers(
        self, request: identity_pb2.ListTiersRequest, context: Context
    ) -> identity_pb2.ListTiersResponse:
        async with self._database.read() as session:
            tiers = await self._tiers.list_tiers(session)
        return identity_pb2.ListTiersResponse(tiers=[tier_message(tier) for tier in tiers])

    async def GetJwks(
        self, request: identity_pb2.GetJwksRequest, context: Context
    ) -> identity_pb2.GetJwksResponse:
        async with self._database.read() as session:
            keys = await self._keys.published(session)
        return identity_pb2.GetJwksResponse(keys=[identity_pb2.Jwk(**jwk(key)) for key in keys])

    def _tokens(self, issued: IssuedTokens) -> TokenFields:
        return {
            "user": user_message(issued.user),
            "access_token": issued.access_token,
            "refresh_token": issued.refresh_token,
            "expires_in": issued.expires_in,
        }

    def _count_login(self, outcome: str) -> None:
        self._metrics.increment("identity_logins_total", "Log-in attempts", outcome=outcome)


class IdentityInternalApi(identity_pb2_grpc.IdentityInternalServiceServicer):
    """Reached only with a service credential (the interceptor checks it)."""

    def __init__(self, *, database: Database, tiers: Tiers, outbox: Outbox) -> None:
        self._database = database
        self._tiers = tiers
        self._outbox = outbox

    async def SetUserTier(
        self, request: identity_pb2.SetUserTierRequest, context: Context
    ) -> identity_pb2.SetUserTierResponse:
        user_id = validation.required_uuid(request.user_id, "user_id")
        tier_code = validation.text(request.tier_code, "tier_code", max_length=TIER_CODE_MAX_LENGTH)
        caller = current_service_caller().name
        async with self._database.transaction() as session:
            user = await self._tiers.set_user_tier(session, user_id, tier_code, set_by=caller)
        return identity_pb2.SetUserTierResponse(user=user_message(user))

    async def GetUserTier(
        self, request: identity_pb2.GetUserTierRequest, context: Context
    ) -> identity_pb2.GetUserTierResponse:
        user_id = validation.required_uuid(request.user_id, "user_id")
        async with self._database.read() as session:
            tier = await self._tiers.user_tier(session, user_id)
        return identity_pb2.GetUserTierResponse(tier=tier_message(tier))

    async def ListEvents(
        self, request: identity_pb2.ListEventsRequest, context: Context
    ) -> identity_pb2.ListEventsResponse:
        """Events after the caller's position (which is recorded as the calling service's,
        for pruning), only of the types asked for and only of finished transactions."""
        after = position_of(request.after_xact_id, request.after_sequence)
        types = event_types(list(request.types))
        size = validation.page_size(
            request.page_size, default=EVENTS_PAGE_DEFAULT, maximum=EVENTS_PAGE_MAX
        )
        async with self._database.transaction() as session:
            await self._outbox.record_follower(session, current_service_caller().name, after)
        # One statement in autocommit: the page and its end come from one snapshot.
        async with self._database.read() as session:
            events, following = await self._outbox.page(session, after, size, types)
        return identity_pb2.ListEventsResponse(
            events=[event_message(e) for e in events],
            next_xact_id=following.xact_id,
            next_sequence=following.sequence,
        )
