"""A local fake of the Stripe API for the real stripe client, and signed webhook events.

A threaded HTTP server (so it serves any event loop and any process) answering the calls
billing makes, form-encoded in and JSON with `"object"` out, shaped like API 2025-03-31
and later (subscription periods on the items, invoices pointing at their subscription
through `parent.subscription_details`). Tests set subscriptions' latest state, make it
fail or hang, and read back every request it got.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

SECRET_KEY = "sk_test_pixelshop_fake"
WEBHOOK_SECRET = "whsec_test_current_0123456789"
WEBHOOK_SECRET_PREVIOUS = "whsec_test_previous_0123456789"
PRICE_PRO = "price_pro_monthly"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str


@dataclass
class FakeStripe:
    requests: list[Request] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Set to an HTTP status to make every call fail with a Stripe error; a delay (s) hangs.
    failing: int = 0
    delay: float = 0.0
    _idempotent: dict[tuple[str, str, str], tuple[int, dict[str, Any]]] = field(
        default_factory=dict
    )
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                path, _, query = self.path.partition("?")
                params = dict(urllib.parse.parse_qsl(raw or query, keep_blank_values=True))
                key = self.headers.get("Idempotency-Key", "")
                status, body = fake.handle(self.command, path, params, key)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.failing = 0
            self.delay = 0.0

    def calls(self, method: str, prefix: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # --- what the fake answers --------------------------------------------------------

    def handle(
        self, method: str, path: str, params: dict[str, str], key: str
    ) -> tuple[int, dict[str, Any]]:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.requests.append(Request(method, path, params, key))
            if self.failing:
                return self.failing, _error("api_error", "the fake Stripe is failing")
            if key and (method, path, key) in self._idempotent:
                return self._idempotent[(method, path, key)]
            answer = self._route(method, path, params)
            if key and method == "POST":
                self._idempotent[(method, path, key)] = answer
            return answer

    def _route(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/customers":
            customer_id = f"cus_{uuid.uuid4().hex[:14]}"
            customer = {
                "id": customer_id,
                "object": "customer",
                "metadata": _nested(params, "metadata"),
            }
            self.customers[customer_id] = customer
            return 200, customer
        if method == "POST" and path == "/v1/checkout/sessions":
            session_id = f"cs_test_{uuid.uuid4().hex[:16]}"
            return 200, {
                "id": session_id,
                "object": "checkout.session",
                "mode": params.get("mode"),
                "customer": params.get("customer"),
                "client_reference_id": params.get("client_reference_id"),
                "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            }
        if method == "POST" and path == "/v1/billing_portal/sessions":
            return 200, {
                "id": f"bps_{uuid.uuid4().hex[:14]}",
                "object": "billing_portal.session",
                "customer": params.get("customer"),
                "url": f"https://billing.stripe.test/p/session/{uuid.uuid4().hex[:12]}",
            }
        if parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
            found = self.subscriptions.get(parts[2])
            if found is None:
                return 404, _error(
                    "invalid_request_error", "No such subscription", "resource_missing"
                )
            if method == "DELETE":
                found["status"] = "canceled"
                found["canceled_at"] = int(time.time())
            return 200, found
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method} {path})")

    # --- test helpers -----------------------------------------------------------------

    def put_subscription(
        self,
        subscription_id: str,
        *,
        status: str,
        user_id: str,
        customer: str = "",
        price: str = PRICE_PRO,
        period_start: int | None = None,
        period_end: int | None = None,
        cancel_at_period_end: bool = False,
    ) -> dict[str, Any]:
        start = period_start if period_start is not None else int(time.time()) - 3600
        end = period_end if period_end is not None else start + 30 * 86_400
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "customer": customer or f"cus_{uuid.uuid4().hex[:14]}",
            "status": status,
            "cancel_at_period_end": cancel_at_period_end,
            "metadata": {"user_id": user_id, "tier": "pro"},
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{uuid.uuid4().hex[:14]}",
                        "object": "subscription_item",
                        "price": {"id": price, "object": "price"},
                        "quantity": 1,
                        "current_period_start": start,
                        "current_period_end": end,
                    }
                ],
            },
        }
        with self._lock:
            self.subscriptions[subscription_id] = subscription
        return subscription


def _error(kind: str, message: str, code: str = "") -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **({"code": code} if code else {})}}


def _nested(params: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {
        k[len(prefix) : -1]: v
        for k, v in params.items()
        if k.startswith(prefix) and k.endswith("]")
    }


def event(type_: str, obj: dict[str, Any], *, event_id: str = "") -> bytes:
    """A Stripe event body as Stripe sends it."""
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:20]}",
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": int(time.time()),
            "type": type_,
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


def signature(payload: bytes, secret: str = WEBHOOK_SECRET, *, timestamp: int | None = None) -> str:
    moment = int(time.time()) if timestamp is None else timestamp
    return str(
        stripe.WebhookSignature.generate_signature_header(
            payload.decode(), secret, timestamp=moment
        )
    )


def subscription_event(type_: str, subscription: dict[str, Any]) -> bytes:
    return event(type_, subscription)


def checkout_completed(user_id: str, subscription_id: str, customer: str) -> bytes:
    return event(
        "checkout.session.completed",
        {
            "id": f"cs_test_{uuid.uuid4().hex[:16]}",
            "object": "checkout.session",
            "mode": "subscription",
            "client_reference_id": user_id,
            "customer": customer,
            "subscription": subscription_id,
            "metadata": {"user_id": user_id, "tier": "pro"},
            "status": "complete",
        },
    )


def invoice_event(type_: str, subscription_id: str, customer: str) -> bytes:
    """An invoice as API 2025-03-31 and later shapes it: no top-level `subscription`."""
    return event(
        type_,
        {
            "id": f"in_{uuid.uuid4().hex[:16]}",
            "object": "invoice",
            "customer": customer,
            "status": "paid" if type_ == "invoice.paid" else "open",
            "parent": {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription_id, "metadata": {}},
            },
        },
    )
