"""`StripeBilling`: the real provider, on the official SDK through one `stripe.StripeClient`.

`STRIPE_API_BASE` becomes the client's `api` base address, so tests point the very same code at
localstripe or at a local stub. Subscriptions are read in both payload shapes: the old one (period end
and quantity on the subscription, as localstripe sends) and the current one (on the subscription
item). Webhook signatures are checked by the SDK's `WebhookSignature` over the raw body, with a
timestamp tolerance.

The API version is pinned (`API_VERSION`, sent on every request as `Stripe-Version`): the payloads this
code reads are the ones of that version, whatever SDK pip installs, and the webhook endpoint in the
Dashboard must be created with the same version (README, "Stripe"). The SDK must have the
`StripeClient.v1` surface (stripe 12.5 and later); pyproject asks for the major version tested here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import stripe

from server.billing.base import (
    CheckoutRequest,
    CheckoutSession,
    ProviderCustomer,
    ProviderInvoice,
    ProviderSubscription,
    QuantityPreview,
    invoice_subscription,
)
from server.errors import BillingError, WebhookSignatureInvalid

log = logging.getLogger("pospal.billing")

# Stripe's own default: a signed delivery older than 5 minutes is refused (replay protection).
DEFAULT_TOLERANCE_S = 300
# The Stripe API version this code is written for (the one stripe 16.1 pins). Change it only together
# with the payload readers below and the webhook endpoint's version in the Dashboard.
API_VERSION = "2026-10-28.endive"
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
            stripe_version=API_VERSION,
        )
        self._webhook_secret = webhook_secret
        self.price_id = price_id
        self.automatic_tax = automatic_tax
        self.tolerance_s = tolerance_s

    def __repr__(self) -> str:
        return f"StripeBilling(price_id={self.price_id!r})"

    def find_or_create_customer(self, email: str, name: str | None, existing_id: str | None) -> str:
        """Reuse `existing_id`, else the newest Stripe customer with this email (any case), else make one."""
        if existing_id:
            return existing_id
        with _translated():
            found = self._find_customer_by_email(email)
            if found:
                return found
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

    def _find_customer_by_email(self, email: str) -> str | None:
        """The newest Stripe customer whose email is `email`, ignoring letter case.

        `customers.list(email=...)` matches case-sensitively, so `Info@cafe.gr` typed in the Dashboard
        would not be found for `info@cafe.gr`: the list is asked for the address as typed and lower-cased,
        then Stripe's search (case-insensitive, but up to a minute behind) is asked too.
        """
        wanted = email.strip().lower()
        for candidate in dict.fromkeys([email.strip(), wanted]):
            listed = self.client.v1.customers.list(params={"email": candidate, "limit": 1})
            if listed.data:
                return str(listed.data[0].id)
        try:
            quoted = wanted.replace("\\", "\\\\").replace("'", "\\'")
            searched = self.client.v1.customers.search(params={"query": f"email:'{quoted}'", "limit": 10})
        except stripe.StripeError:
            return None  # search is unavailable in some regions and in localstripe: the list answered
        for customer in searched.data:
            if str(getattr(customer, "email", "") or "").lower() == wanted:
                return str(customer.id)
        return None

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
            # A Greek business gives its VAT number (ΑΦΜ, EL...) here; Stripe puts it on every invoice.
            "tax_id_collection": {"enabled": True},
            # The billing name, address and tax id go on the (existing) customer, so renewal invoices and
            # Stripe Tax use them; Stripe requires `name: auto` with tax id collection for a customer.
            "customer_update": {"address": "auto", "name": "auto"},
            "locale": _STRIPE_LOCALES.get(request.locale, "auto"),
        }
        if self.automatic_tax:
            params["automatic_tax"] = {"enabled": True}
        try:
            # Invoices, receipts and the portal speak the customer's preferred language. Best effort:
            # a customer we cannot update still buys (Checkout itself follows `locale`).
            self.client.v1.customers.update(
                request.customer_id,
                params={"preferred_locales": [_STRIPE_LOCALES.get(request.locale, "en")]},
            )
        except stripe.StripeError as exc:
            log.warning("stripe_locale_not_set", extra={"customer": request.customer_id, "error": str(exc)})
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

    def set_pause(self, subscription_id: str, paused: bool, resumes_at: int | None) -> ProviderSubscription:
        """Set or clear `pause_collection` (behavior `void`: no invoice is collected while paused)."""
        pause: Any = ""  # an empty value clears the pause (Stripe's way to unset a hash)
        if paused:
            pause = {"behavior": "void", **({"resumes_at": resumes_at} if resumes_at else {})}
        with _translated():
            sub = self.client.v1.subscriptions.update(subscription_id, params={"pause_collection": pause})
        return subscription_from_stripe(_plain(sub))

    def list_subscriptions(self, price_id: str | None) -> Iterator[ProviderSubscription]:
        """Every subscription of `price_id`, whatever its status, page by page."""
        params: dict[str, Any] = {"status": "all", "limit": 100}
        if price_id:
            params["price"] = price_id
        with _translated():
            for sub in self.client.v1.subscriptions.list(params=params).auto_paging_iter():  # type: ignore[arg-type]
                yield subscription_from_stripe(_plain(sub))

    def fetch_customer_email(self, customer_id: str) -> str | None:
        """Return the customer's email, or None for a deleted or email-less customer."""
        with _translated():
            customer = _plain(self.client.v1.customers.retrieve(customer_id))
        email = customer.get("email")
        return str(email) if email else None

    def fetch_customer(self, customer_id: str) -> ProviderCustomer:
        """Return the customer's email and name (`deleted` for a deleted customer)."""
        with _translated():
            customer = _plain(self.client.v1.customers.retrieve(customer_id))
        return ProviderCustomer(
            id=str(customer.get("id") or customer_id),
            email=str(customer["email"]) if customer.get("email") else None,
            name=str(customer["name"]) if customer.get("name") else None,
            deleted=bool(customer.get("deleted")),
        )

    def fetch_invoice(self, invoice_id: str) -> ProviderInvoice:
        """Retrieve an invoice with its payment's PaymentIntent (old and new API shapes)."""
        with _translated():
            invoice = _plain(
                self.client.v1.invoices.retrieve(
                    invoice_id, params={"expand": ["payments.data.payment.payment_intent"]}
                )
            )
            intents = _payment_intents(invoice)
            if any(isinstance(i, str) for i in intents):
                intents = [
                    _plain(self.client.v1.payment_intents.retrieve(i)) if isinstance(i, str) else i
                    for i in intents
                ]
        return invoice_from_stripe(invoice, intents)

    def invoice_of_payment(self, payment_intent_id: str) -> str | None:
        """The invoice a PaymentIntent pays: `invoice` on old API versions, InvoicePayments on new ones."""
        with _translated():
            intent = _plain(self.client.v1.payment_intents.retrieve(payment_intent_id))
            if intent.get("invoice"):
                value = intent["invoice"]
                return str(value.get("id") if isinstance(value, Mapping) else value)
            payments = self.client.v1.invoice_payments.list(
                params={
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
                    "limit": 1,
                }
            )
        for payment in payments.data:
            value = getattr(payment, "invoice", None)
            if value:
                return str(value if isinstance(value, str) else value.id)
        return None

    def customer_of_charge(self, charge_id: str) -> str | None:
        """The customer id of a charge (a dispute names only its charge)."""
        with _translated():
            charge = _plain(self.client.v1.charges.retrieve(charge_id))
        customer = charge.get("customer")
        if isinstance(customer, Mapping):
            customer = customer.get("id")
        return str(customer) if customer else None

    def create_portal_session(self, customer_id: str, return_url: str, locale: str | None = None) -> str:
        """Create a Billing Portal session (in `locale` when given) and return its URL."""
        params: dict[str, Any] = {"customer": customer_id, "return_url": return_url}
        if locale:
            params["locale"] = _STRIPE_LOCALES.get(locale, "auto")
        with _translated():
            session = self.client.v1.billing_portal.sessions.create(params=params)  # type: ignore[arg-type]
        return str(session.url)

    def preview_quantity(self, subscription_id: str, quantity: int) -> QuantityPreview:
        """Preview the invoice the change would create now (`invoices.create_preview`, always_invoice)."""
        with _translated():
            sub = _plain(self.client.v1.subscriptions.retrieve(subscription_id))
            item = _item(sub)
            preview = _plain(
                self.client.v1.invoices.create_preview(
                    params={
                        "subscription": subscription_id,
                        "subscription_details": {
                            "items": [{"id": item["id"], "quantity": quantity}],
                            "proration_behavior": "always_invoice",
                        },
                    }
                )
            )
        current = subscription_from_stripe(sub)
        return QuantityPreview(
            quantity_now=current.quantity,
            quantity_new=quantity,
            amount_due=int(preview.get("amount_due") or 0),
            currency=str(preview.get("currency") or "eur"),
            period_end=current.current_period_end,
        )

    def update_quantity(
        self, subscription_id: str, quantity: int, idempotency_key: str
    ) -> ProviderSubscription:
        """Set the subscription item's quantity, prorated and invoiced now (`always_invoice`)."""
        with _translated():
            sub = _plain(self.client.v1.subscriptions.retrieve(subscription_id))
            updated = self.client.v1.subscriptions.update(
                subscription_id,
                params={
                    "items": [{"id": _item(sub)["id"], "quantity": quantity}],
                    "proration_behavior": "always_invoice",
                },
                options={"idempotency_key": f"pospal-quantity-{idempotency_key}"},
            )
        return subscription_from_stripe(_plain(updated))

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
    pause = sub.get("pause_collection") if isinstance(sub.get("pause_collection"), Mapping) else None
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
        price_ids=tuple(_price_id(item) for item in items if _price_id(item)),
        paused=bool(pause),
        pause_resumes_at=int(pause["resumes_at"]) if pause and pause.get("resumes_at") else None,
    )


def _price_id(item: Mapping[str, Any]) -> str:
    """An item's price id; `plan`, the price's older shape (and localstripe's), when there is no price."""
    for key in ("price", "plan"):
        value = item.get(key)
        found = value.get("id") if isinstance(value, Mapping) else value
        if found:
            return str(found)
    return ""


def _payment_intents(invoice: Mapping[str, Any]) -> list[Any]:
    """The invoice's PaymentIntents (ids or objects): `payment_intent` before 2025-03-31, `payments` after."""
    found: list[Any] = []
    if invoice.get("payment_intent"):
        found.append(invoice["payment_intent"])
    for payment in ((invoice.get("payments") or {}).get("data")) or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            found.append(intent)
    return found


def invoice_from_stripe(invoice: Mapping[str, Any], intents: list[Any] | None = None) -> ProviderInvoice:
    """Build a `ProviderInvoice`; it needs action when open and one of its PaymentIntents requires it."""
    intents = _payment_intents(invoice) if intents is None else intents
    status = str(invoice.get("status") or "")
    needs_action = status == "open" and any(
        isinstance(i, Mapping) and i.get("status") == "requires_action" for i in intents
    )
    customer = invoice.get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    return ProviderInvoice(
        id=str(invoice.get("id") or ""),
        status=status,
        subscription_id=invoice_subscription(invoice),
        customer_id=str(customer) if customer else None,
        hosted_invoice_url=str(invoice["hosted_invoice_url"]) if invoice.get("hosted_invoice_url") else None,
        needs_action=needs_action,
    )


def _item(sub: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subscription's one item (the POSPal price); `BillingError` if it has none."""
    items = ((sub.get("items") or {}).get("data")) or []
    if not items or not items[0].get("id"):
        raise BillingError(f"subscription {sub.get('id')} has no item to change")
    return items[0]


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
