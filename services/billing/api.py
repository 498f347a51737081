"""gRPC servicers of billing: validate every field, map protobuf to the domain and back.

Plain RPCs are one unit of work each; checkout, portal, webhooks and account deletion hand
over to workflows.py, which owns their commit points. The user's tier (limits) is looked up
before a unit of work opens: a peer call inside one is refused (ADR 0011).
"""

from __future__ import annotations

import datetime
from typing import Any, TypeAlias

import grpc
from google.api import httpbody_pb2
from pixelshop.billing.v1 import billing_pb2, billing_pb2_grpc

from runtime import validation
from runtime.context import current_principal
from runtime.db import Database
from runtime.errors import InvalidArgument, Unauthenticated
from runtime.peers.billing import METRIC_NUMBERS, metric_number, metric_of
from runtime.peers.identity import CachedTierLookup
from runtime.timestamps import to_timestamp
from runtime.tombstones import DELETED_MESSAGE, Tombstones
from runtime.usage import Metric
from services.billing.models import Reservation, ReservationState
from services.billing.service import SubscriptionService, UsageService
from services.billing.workflows import BillingWorkflows

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

TIER_CODE_MAX = 32
URL_MAX = 2048

STATE_TO_PROTO = {
    ReservationState.RESERVED: billing_pb2.RESERVATION_STATE_RESERVED,
    ReservationState.COMMITTED: billing_pb2.RESERVATION_STATE_COMMITTED,
    ReservationState.RELEASED: billing_pb2.RESERVATION_STATE_RELEASED,
}


def _timestamp(moment: datetime.datetime | None) -> Any:
    return to_timestamp(moment) if moment is not None else None


_METRIC_VALUES = frozenset(int(number) for number in METRIC_NUMBERS.values())


def _metric(value: int, field: str = "metric") -> Metric:
    validation.enum_value(value, field, _METRIC_VALUES, allow_unspecified=False)
    return metric_of(value)


def _url(value: str, field: str, default: str) -> str:
    url = validation.text(value, field, max_length=URL_MAX, required=False)
    if not url:
        return default
    if not url.startswith(("https://", "http://")):
        raise InvalidArgument(field, "must be an http(s) URL")
    return url


def _metadata_value(context: Context, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


class BillingApi(billing_pb2_grpc.BillingServiceServicer):
    """The public service: the caller is the user of the access token (the webhook is
    anonymous and trusted only through its signature)."""

    def __init__(
        self,
        *,
        database: Database,
        usage: UsageService,
        subscriptions: SubscriptionService,
        tiers: CachedTierLookup,
        workflows: BillingWorkflows,
        checkout_success_url: str,
        checkout_cancel_url: str,
        portal_return_url: str,
    ) -> None:
        self._database = database
        self._usage = usage
        self._subscriptions = subscriptions
        self._tiers = tiers
        self._workflows = workflows
        self._success_url = checkout_success_url
        self._cancel_url = checkout_cancel_url
        self._return_url = portal_return_url

    async def GetUsage(
        self, request: billing_pb2.GetUsageRequest, context: Context
    ) -> billing_pb2.GetUsageResponse:
        user_id = current_principal().user_id
        tier = await self._tiers.tier(user_id)
        async with self._database.read() as session:
            summary = await self._usage.summary(session, user_id, tier)
        return billing_pb2.GetUsageResponse(
            tier=summary.tier,
            period_start=_timestamp(summary.period.start),
            period_end=_timestamp(summary.period.end),
            metrics=[
                billing_pb2.UsageMetricValue(
                    metric=metric_number(counter.metric),
                    used=counter.used,
                    reserved=counter.reserved,
                    limit=counter.limit,
                    period_start=None
                    if counter.metric.is_gauge
                    else _timestamp(counter.period.start),
                    period_end=_timestamp(counter.period.end),
                )
                for counter in summary.counters
            ],
        )

    async def GetSubscription(
        self, request: billing_pb2.GetSubscriptionRequest, context: Context
    ) -> billing_pb2.GetSubscriptionResponse:
        user_id = current_principal().user_id
        async with self._database.read() as session:
            view = await self._subscriptions.view(session, user_id)
        return billing_pb2.GetSubscriptionResponse(
            subscription=billing_pb2.Subscription(
                tier=view.tier,
                status=view.status,
                current_period_start=_timestamp(view.current_period_start),
                current_period_end=_timestamp(view.current_period_end),
                cancel_at_period_end=view.cancel_at_period_end,
            )
        )

    async def CreateCheckoutSession(
        self, request: billing_pb2.CreateCheckoutSessionRequest, context: Context
    ) -> billing_pb2.CreateCheckoutSessionResponse:
        user_id = current_principal().user_id
        tier = validation.text(request.tier, "tier", max_length=TIER_CODE_MAX).lower()
        success_url = _url(request.success_url, "success_url", self._success_url)
        cancel_url = _url(request.cancel_url, "cancel_url", self._cancel_url)
        request_key = validation.idempotency_key_header(context.invocation_metadata()) or ""
        url = await self._workflows.checkout(
            user_id, tier, success_url=success_url, cancel_url=cancel_url, request_key=request_key
        )
        return billing_pb2.CreateCheckoutSessionResponse(url=url)

    async def CreatePortalSession(
        self, request: billing_pb2.CreatePortalSessionRequest, context: Context
    ) -> billing_pb2.CreatePortalSessionResponse:
        user_id = current_principal().user_id
        return_url = _url(request.return_url, "return_url", self._return_url)
        url = await self._workflows.portal(user_id, return_url)
        return billing_pb2.CreatePortalSessionResponse(url=url)

    async def HandleStripeWebhook(
        self, request: httpbody_pb2.HttpBody, context: Context
    ) -> billing_pb2.HandleStripeWebhookResponse:
        signature = _metadata_value(context, "stripe-signature")
        processed = await self._workflows.handle_webhook(bytes(request.data), signature)
        return billing_pb2.HandleStripeWebhookResponse(processed=processed)


def reservation_response(reservation: Reservation) -> billing_pb2.ReserveUsageResponse:
    return billing_pb2.ReserveUsageResponse(
        reservation_id=str(reservation.id), state=STATE_TO_PROTO[reservation.state]
    )


class BillingInternalApi(billing_pb2_grpc.BillingInternalServiceServicer):
    """Calls other services make for a user (service credential required)."""

    def __init__(
        self,
        *,
        database: Database,
        usage: UsageService,
        tiers: CachedTierLookup,
        workflows: BillingWorkflows,
        tombstones: Tombstones,
    ) -> None:
        self._database = database
        self._usage = usage
        self._tiers = tiers
        self._workflows = workflows
        self._tombstones = tombstones

    async def ReserveUsage(
        self, request: billing_pb2.ReserveUsageRequest, context: Context
    ) -> billing_pb2.ReserveUsageResponse:
        user_id = validation.required_uuid(request.user_id, "user_id")
        metric = _metric(request.metric)
        if request.amount <= 0:
            raise InvalidArgument("amount", "must be positive")
        key = validation.required_idempotency_key(request.idempotency_key, "idempotency_key")
        if request.ttl_seconds < 0:
            raise InvalidArgument("ttl_seconds", "must not be negative")
        # A fast refusal from memory, saving the tier lookup (identity no longer knows
        # the user either); what decides is `reserve`'s guard_write, under the lock.
        if self._tombstones.is_deleted(user_id):
            raise Unauthenticated(DELETED_MESSAGE, reason="ACCOUNT_DELETED")
        tier = await self._tiers.tier(user_id)
        async with self._database.transaction() as session:
            reservation = await self._usage.reserve(
                session,
                user_id=user_id,
                metric=metric,
                amount=request.amount,
                key=key,
                tier=tier,
                ttl_seconds=request.ttl_seconds,
            )
        return reservation_response(reservation)

    async def CommitUsage(
        self, request: billing_pb2.CommitUsageRequest, context: Context
    ) -> billing_pb2.CommitUsageResponse:
        reservation_id = validation.required_uuid(request.reservation_id, "reservation_id")
        async with self._database.transaction() as session:
            reservation = await self._usage.commit(session, reservation_id)
        state = reservation.state if reservation else ReservationState.RELEASED
        return billing_pb2.CommitUsageResponse(state=STATE_TO_PROTO[state])

    async def ReleaseUsage(
        self, request: billing_pb2.ReleaseUsageRequest, context: Context
    ) -> billing_pb2.ReleaseUsageResponse:
        reservation_id = validation.required_uuid(request.reservation_id, "reservation_id")
        async with self._database.transaction() as session:
            reservation = await self._usage.release(session, reservation_id)
        state = reservation.state if reservation else ReservationState.RELEASED
        return billing_pb2.ReleaseUsageResponse(state=STATE_TO_PROTO[state])

    async def CreditUsage(
        self, request: billing_pb2.CreditUsageRequest, context: Context
    ) -> billing_pb2.CreditUsageResponse:
        user_id = validation.required_uuid(request.user_id, "user_id")
        metric = _metric(request.metric)
        key = validation.required_idempotency_key(request.idempotency_key, "idempotency_key")
        async with self._database.transaction() as session:
            await self._usage.credit(
                session, user_id=user_id, metric=metric, amount=request.amount, key=key
            )
        return billing_pb2.CreditUsageResponse()

    async def PurgeUser(
        self, request: billing_pb2.PurgeUserRequest, context: Context
    ) -> billing_pb2.PurgeUserResponse:
        user_id = validation.required_uuid(request.user_id, "user_id")
        await self._workflows.delete_account(user_id)
        return billing_pb2.PurgeUserResponse()
