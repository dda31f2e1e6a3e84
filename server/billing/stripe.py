"""`StripeBilling`: the real provider, on the official SDK through one `stripe.StripeClient`.

`STRIPE_API_BASE` becomes the client's `api` base address, so tests point the very same code at
localstripe or at a local stub. Subscriptions are read in both payload shapes: the old one (period end
and quantity on the subscription, as localstripe sends) and the current one (on the subscription
item). Webhook signatures are checked by the SDK's `WebhookSignature` over the raw body, with a
timestamp tolerance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import stripe

from server.billing.base import CheckoutRequest, CheckoutSession, ProviderSubscription
from server.errors import BillingError, WebhookSignatureInvalid

# Stripe's own default: a signed delivery older than 5 minutes is refused (replay protection).
DEFAULT_TOLERANCE_S = 300
_STRIPE_LOCALES = {"en": "en", "el": "el"}


class StripeBilling:
    """Stripe Checkout, Billing Portal and subscription reads for one price."""

    name = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        price_id: str,
        *,
        api_base: str | None = None,
        automatic_tax: bool = False,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        max_network_retries: int = 2,
    ) -> None:
        base: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
        self.client = stripe.StripeClient(
            secret_key,
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=max_network_retries,
        )
        self._webhook_secret = webhook_secret
        self.price_id = price_id
        self.automatic_tax = automatic_tax
        self.tolerance_s = tolerance_s

    def __repr__(self) -> str:
        return f"StripeBilling(price_id={self.price_id!r})"

    def find_or_create_customer(self, email: str, name: str | None, existing_id: str | None) -> str:
        """Reuse `existing_id`, else the newest Stripe customer with this email, else create one."""
        if existing_id:
            return existing_id
        with _translated():
            found = self.client.v1.customers.list(params={"email": email, "limit": 1})
            if found.data:
                return str(found.data[0].id)
            params: dict[str, Any] = {"email": email, "metadata": {"source": "pospal"}}
            if name:
                params["name"] = name
            # Stripe refuses a reused key with other parameters, so the key covers all of them.
            key = hashlib.sha256(f"{email}\n{name or ''}".encode()).hexdigest()[:32]
            created = self.client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"pospal-customer-{key}"},
            )
            return str(created.id)

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Create a subscription-mode Checkout Session for the configured price."""
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": request.customer_id,
            "line_items": [{"price": self.price_id, "quantity": request.quantity}],
            "client_reference_id": request.client_reference_id,
            "metadata": dict(request.metadata),
            "subscription_data": {"metadata": dict(request.metadata)},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "allow_promotion_codes": True,
            "billing_address_collection": "required",
            # The address goes on the customer so invoices (and tax, when on) use it.
            "customer_update": {"address": "auto", "name": "auto"},
            "locale": _STRIPE_LOCALES.get(request.locale, "auto"),
        }
        if self.automatic_tax:
            params["automatic_tax"] = {"enabled": True}
        with _translated():
            session = self.client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"pospal-checkout-{request.client_reference_id}"},
            )
        return _checkout(_plain(session))

    def fetch_checkout(self, session_id: str) -> CheckoutSession:
        """Return a Checkout Session's current state."""
        with _translated():
            return _checkout(_plain(self.client.v1.checkout.sessions.retrieve(session_id)))

    def fetch_subscription(self, subscription_id: str) -> ProviderSubscription:
        """Retrieve a subscription (Stripe keeps cancelled ones retrievable)."""
        with _translated():
            sub = self.client.v1.subscriptions.retrieve(subscription_id)
        return subscription_from_stripe(_plain(sub))

    def fetch_customer_email(self, customer_id: str) -> str | None:
        """Return the customer's email, or None for a deleted or email-less customer."""
        with _translated():
            customer = _plain(self.client.v1.customers.retrieve(customer_id))
        email = customer.get("email")
        return str(email) if email else None

    def create_portal_session(self, customer_id: str, return_url: str) -> str:
        """Create a Billing Portal session and return its URL."""
        with _translated():
            session = self.client.v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url}
            )
        return str(session.url)

    def verify_webhook(self, raw_body: bytes, sig_header: str | None) -> dict[str, Any]:
        """Check `Stripe-Signature` over the exact raw bytes, then parse the event JSON."""
        if not sig_header:
            raise WebhookSignatureInvalid("missing Stripe-Signature header")
        try:
            payload = raw_body.decode("utf-8")
            stripe.WebhookSignature.verify_header(payload, sig_header, self._webhook_secret, self.tolerance_s)
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
            raise WebhookSignatureInvalid(f"webhook signature rejected: {exc}") from exc
        if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
            raise WebhookSignatureInvalid("webhook body is not an event")
        return event


def subscription_from_stripe(sub: Mapping[str, Any]) -> ProviderSubscription:
    """Build a `ProviderSubscription` from a Stripe subscription dict of any API version."""
    items = ((sub.get("items") or {}).get("data")) or []
    first = items[0] if items else {}
    quantity = sub.get("quantity") or first.get("quantity") or 1
    period_end = sub.get("current_period_end") or first.get("current_period_end")
    customer = sub.get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    if not sub.get("id") or not customer or not sub.get("status"):
        raise BillingError("the provider returned a subscription without id, customer or status")
    return ProviderSubscription(
        id=str(sub["id"]),
        customer_id=str(customer),
        status=str(sub["status"]),
        quantity=int(quantity),
        current_period_end=int(period_end) if period_end else None,
        cancel_at=int(sub["cancel_at"]) if sub.get("cancel_at") else None,
        cancel_at_period_end=bool(sub.get("cancel_at_period_end")),
        trial_end=int(sub["trial_end"]) if sub.get("trial_end") else None,
        metadata={str(k): str(v) for k, v in (sub.get("metadata") or {}).items()},
    )


def _checkout(session: Mapping[str, Any]) -> CheckoutSession:
    customer = session.get("customer")
    subscription = session.get("subscription")
    return CheckoutSession(
        id=str(session["id"]),
        url=str(session.get("url") or ""),
        status=str(session.get("status") or "open"),
        customer_id=customer.get("id") if isinstance(customer, Mapping) else customer,
        subscription_id=subscription.get("id") if isinstance(subscription, Mapping) else subscription,
        client_reference_id=session.get("client_reference_id"),
    )


def _plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


@contextmanager
def _translated() -> Iterator[None]:
    """Turn any SDK error into `BillingError`, so callers handle one type (and answer 5xx)."""
    try:
        yield
    except stripe.StripeError as exc:
        detail = exc.user_message or ""
        raise BillingError(f"Stripe request failed: {type(exc).__name__}: {detail}") from exc
