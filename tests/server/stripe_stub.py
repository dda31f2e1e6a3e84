"""A local HTTP server answering Stripe-shaped JSON, recording every request it gets.

localstripe has no Checkout Sessions, Billing Portal or Prices, so tests of those point
`STRIPE_API_BASE` here. Objects it returns follow the Stripe API's current shapes (trimmed to the
fields we read). Tests may set `stub.subscriptions[id]` / `stub.customers[id]` to control what
`fetch_subscription` and `fetch_customer_email` see, and `stub.fail_next` to answer 500s.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Recorded:
    """One request: method, path, the form or query fields (Stripe's flattened keys), and headers."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class StripeStub:
    """State and recordings of a running stub; `url` is its base address."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_next: int = 0
    # When set, a subscription read waits for `hold` (after setting `held`): a slow Stripe, on demand.
    hold: threading.Event | None = None
    held: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str, path: str) -> list[Recorded]:
        """The recorded requests to one endpoint, oldest first."""
        return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Compute the JSON reply for one request."""
        if self.hold is not None and method == "GET" and path.startswith("/v1/subscriptions/"):
            self.held.set()
            self.hold.wait(30)
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500, {"error": {"type": "api_error", "message": "stub failure"}}
            parts = [p for p in path.split("/") if p]
            if method == "GET" and path == "/v1/customers/search":
                # Stripe's search matches e-mail without regard to letter case.
                wanted = params.get("query", "").partition("'")[2].rstrip("'").lower()
                found = [c for c in self.customers.values() if (c.get("email") or "").lower() == wanted]
                return 200, {"object": "search_result", "data": found, "has_more": False, "url": path}
            if method == "POST" and path.startswith("/v1/customers/") and len(parts) == 3:
                if parts[2] not in self.customers:
                    return self._get(self.customers, parts[2])
                self.customers[parts[2]].update(
                    {k: v for k, v in params.items() if not k.startswith(("preferred_locales", "metadata"))}
                )
                locales = [v for k, v in sorted(params.items()) if k.startswith("preferred_locales")]
                if locales:
                    self.customers[parts[2]]["preferred_locales"] = locales
                return 200, self.customers[parts[2]]
            if method == "GET" and parts[:2] == ["v1", "invoices"] and len(parts) == 3:
                return self._get(self.invoices, parts[2])
            if method == "GET" and parts[:2] == ["v1", "payment_intents"] and len(parts) == 3:
                return self._get(self.payment_intents, parts[2])
            if method == "GET" and parts[:2] == ["v1", "charges"] and len(parts) == 3:
                return self._get(self.charges, parts[2])
            if method == "GET" and path == "/v1/invoice_payments":
                pi = params.get("payment[payment_intent]")
                found = [
                    {"object": "invoice_payment", "id": "inpay_" + inv_id, "invoice": inv_id}
                    for inv_id, inv in self.invoices.items()
                    if any(
                        ((p.get("payment") or {}).get("payment_intent") or {}).get("id") == pi
                        for p in ((inv.get("payments") or {}).get("data") or [])
                    )
                ]
                return 200, {"object": "list", "data": found[:1], "has_more": False, "url": path}
            if method == "GET" and path == "/v1/customers":
                email = params.get("email")
                found = [c for c in self.customers.values() if email is None or c["email"] == email]
                return 200, {"object": "list", "data": found[:1], "has_more": False, "url": "/v1/customers"}
            if method == "POST" and path == "/v1/customers":
                cid = "cus_" + secrets.token_hex(7)
                self.customers[cid] = {"id": cid, "object": "customer", "email": params.get("email")}
                return 200, self.customers[cid]
            if method == "GET" and parts[:2] == ["v1", "customers"] and len(parts) == 3:
                return self._get(self.customers, parts[2])
            if method == "POST" and path == "/v1/checkout/sessions":
                sid = "cs_test_" + secrets.token_hex(12)
                self.sessions[sid] = {
                    "id": sid,
                    "object": "checkout.session",
                    "mode": params.get("mode"),
                    "status": "open",
                    "url": f"https://checkout.stripe.test/c/pay/{sid}",
                    "customer": params.get("customer"),
                    "client_reference_id": params.get("client_reference_id"),
                    "subscription": None,
                    "success_url": params.get("success_url"),
                    "cancel_url": params.get("cancel_url"),
                }
                return 200, self.sessions[sid]
            if method == "GET" and parts[:3] == ["v1", "checkout", "sessions"] and len(parts) == 4:
                return self._get(self.sessions, parts[3])
            if method == "POST" and path == "/v1/billing_portal/sessions":
                pid = "bps_" + secrets.token_hex(8)
                return 200, {
                    "id": pid,
                    "object": "billing_portal.session",
                    "customer": params.get("customer"),
                    "return_url": params.get("return_url"),
                    "url": f"https://billing.stripe.test/p/session/{pid}",
                }
            if method == "GET" and parts[:2] == ["v1", "prices"] and len(parts) == 3:
                return 200, {
                    "id": parts[2],
                    "object": "price",
                    "unit_amount": 2000,
                    "currency": "eur",
                    "recurring": {"interval": "month"},
                }
            if method == "POST" and parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
                if parts[2] not in self.subscriptions:
                    return self._get(self.subscriptions, parts[2])
                sub = self.subscriptions[parts[2]]
                if "pause_collection" in params and not params["pause_collection"]:
                    sub["pause_collection"] = None  # Stripe clears a hash given as ""
                elif "pause_collection[behavior]" in params:
                    resumes = params.get("pause_collection[resumes_at]")
                    sub["pause_collection"] = {
                        "behavior": params["pause_collection[behavior]"],
                        "resumes_at": int(resumes) if resumes else None,
                    }
                return 200, sub
            if method == "GET" and path == "/v1/subscriptions":
                price = params.get("price")
                found = [
                    s
                    for s in self.subscriptions.values()
                    if price is None
                    or any((i.get("price") or {}).get("id") == price for i in s["items"]["data"])
                ]
                return 200, {"object": "list", "data": found, "has_more": False, "url": path}
            if method == "GET" and parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
                return self._get(self.subscriptions, parts[2])
            return 404, {"error": {"type": "invalid_request_error", "message": f"no route {method} {path}"}}

    @staticmethod
    def _get(table: dict[str, dict[str, Any]], key: str) -> tuple[int, dict[str, Any]]:
        if key in table:
            return 200, table[key]
        return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": key}}


def start_stripe_stub() -> tuple[StripeStub, ThreadingHTTPServer]:
    """Start the stub on 127.0.0.1 and a free port; the caller must `shutdown()` the server."""
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            params = dict(parse_qsl(body if self.command == "POST" else split.query, keep_blank_values=True))
            stub.requests.append(
                Recorded(self.command, split.path, params, {k.lower(): v for k, v in self.headers.items()})
            )
            status, payload = stub.answer(self.command, split.path, params)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="stripe-stub", daemon=True).start()
    return stub, server


WEBHOOK_SECRET = "whsec_test_0123456789"
PRICE_ID = "price_test_pospal"


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe computes it (HMAC-SHA256 of "t.body")."""
    import hashlib
    import hmac
    import time

    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def subscription(
    sub_id: str,
    customer: str,
    status: str = "active",
    quantity: int = 1,
    period_end: int = 1_800_000_000,
    cancel_at_period_end: bool = False,
    cancel_at: int | None = None,
) -> dict[str, Any]:
    """A subscription in the current API shape (period end and quantity on the item)."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": cancel_at,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_" + sub_id,
                    "object": "subscription_item",
                    "quantity": quantity,
                    "current_period_end": period_end,
                    "price": {"id": PRICE_ID},
                }
            ],
        },
    }


def event(
    event_type: str, obj: dict[str, Any], event_id: str | None = None, created: int = 1_768_478_400
) -> dict:
    """A Stripe event envelope around `obj`."""
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": created,
        "api_version": "2026-10-28.endive",
        "livemode": False,
        "data": {"object": obj},
    }


def stripe_settings(settings: Any, stub_url: str, **changes: Any) -> Any:
    """`settings` switched to Stripe billing against the stub."""
    from server.config import Secret

    return settings.with_changes(
        billing="stripe",
        stripe_secret_key=Secret("sk_test_stub"),
        stripe_webhook_secret=Secret(WEBHOOK_SECRET),
        stripe_price_id=PRICE_ID,
        stripe_api_base=stub_url,
        system_admin_email="ops@pospal.gr",
        **changes,
    )


def stripe_env(stub_url: str) -> dict[str, str]:
    """Environment for a real server process billing through the stub."""
    return {
        "POSPAL_BILLING": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_stub",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_ID": PRICE_ID,
        "STRIPE_API_BASE": stub_url,
        "SYSTEM_ADMIN_EMAIL": "ops@pospal.gr",
    }
