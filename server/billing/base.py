"""The `BillingProvider` protocol and the provider-neutral shapes it returns.

The rest of the server never touches a Stripe object: it sees `ProviderSubscription` and
`CheckoutSession`, built by `StripeBilling` from the Stripe API (old and new payload shapes alike) or by
`SandboxBilling` from its own table. Webhook handling relies on `fetch_subscription` returning the
provider's *current* state, which is what makes events safe to apply in any order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Subscription statuses (Stripe's strings) that mean "the customer may use POSPal".
LIVE_STATUSES = frozenset({"active", "trialing", "past_due"})
# Statuses in which a payment has failed and the 7-day payment grace runs.
FAILED_PAYMENT_STATUSES = frozenset({"past_due", "unpaid"})


@dataclass(frozen=True)
class ProviderSubscription:
    """A subscription as the provider has it now. Times are Unix seconds (UTC) or None."""

    id: str
    customer_id: str
    status: str
    quantity: int
    current_period_end: int | None
    cancel_at: int | None
    cancel_at_period_end: bool
    trial_end: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The prices of its items (Stripe); empty for the sandbox, whose subscriptions are all ours.
    price_ids: tuple[str, ...] = ()
    # Collection paused (Stripe `pause_collection`) until `pause_resumes_at` (None: until resumed).
    paused: bool = False
    pause_resumes_at: int | None = None


@dataclass(frozen=True)
class ProviderInvoice:
    """An invoice as the provider has it now, reduced to what renewals need.

    `needs_action` says its payment waits for the cardholder's confirmation (3-D Secure, SCA): the card is
    fine, the bank wants the owner to approve it at `hosted_invoice_url`.
    """

    id: str
    status: str
    subscription_id: str | None = None
    customer_id: str | None = None
    hosted_invoice_url: str | None = None
    needs_action: bool = False


@dataclass(frozen=True)
class ProviderCustomer:
    """A provider customer's contact details (None fields when the provider has none)."""

    id: str
    email: str | None
    name: str | None = None
    deleted: bool = False


@dataclass(frozen=True)
class CheckoutRequest:
    """What the server asks the provider for when a restaurant clicks "Buy"."""

    customer_id: str
    email: str
    quantity: int
    client_reference_id: str
    success_url: str
    cancel_url: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    locale: str = "en"


@dataclass(frozen=True)
class CheckoutSession:
    """A hosted checkout page: `status` is "open", "complete" or "expired"."""

    id: str
    url: str
    status: str
    customer_id: str | None = None
    subscription_id: str | None = None
    client_reference_id: str | None = None


@dataclass(frozen=True)
class QuantityPreview:
    """What changing a subscription's quantity now would charge: the prorated amount, in minor units."""

    quantity_now: int
    quantity_new: int
    amount_due: int
    currency: str
    period_end: int | None = None


class BillingProvider(Protocol):
    """One billing back end (Stripe or the sandbox); chosen by `POSPAL_BILLING`."""

    name: str

    def find_or_create_customer(self, email: str, name: str | None, existing_id: str | None) -> str:
        """Return the provider customer id for `email`, reusing `existing_id` or a match by email."""
        ...

    def create_checkout(self, request: CheckoutRequest) -> CheckoutSession:
        """Open a subscription-mode checkout for the configured price and `request.quantity`."""
        ...

    def fetch_checkout(self, session_id: str) -> CheckoutSession:
        """Return a checkout session's current state."""
        ...

    def fetch_subscription(self, subscription_id: str) -> ProviderSubscription:
        """Return the subscription's current state (cancelled ones too); raise `BillingError` if unknown."""
        ...

    def fetch_customer_email(self, customer_id: str) -> str | None:
        """Return the email the provider holds for a customer, if any."""
        ...

    def create_portal_session(self, customer_id: str, return_url: str, locale: str | None = None) -> str:
        """Return a one-time Customer Portal URL for `customer_id` (in `locale`, else the browser's)."""
        ...

    def fetch_customer(self, customer_id: str) -> ProviderCustomer:
        """Return a customer's current email and name (for `customer.updated`)."""
        ...

    def fetch_invoice(self, invoice_id: str) -> ProviderInvoice:
        """Return an invoice's current state, including whether its payment waits for 3-D Secure."""
        ...

    def invoice_of_payment(self, payment_intent_id: str) -> str | None:
        """Return the invoice a PaymentIntent pays, if any (for `payment_intent.requires_action`)."""
        ...

    def customer_of_charge(self, charge_id: str) -> str | None:
        """Return the provider customer id a charge belongs to (a dispute names only its charge)."""
        ...

    def verify_webhook(self, raw_body: bytes, sig_header: str | None) -> dict[str, Any]:
        """Verify the signature over the raw body and return the event; raise `WebhookSignatureInvalid`."""
        ...

    def preview_quantity(self, subscription_id: str, quantity: int) -> QuantityPreview:
        """The prorated charge of changing the subscription to `quantity` terminals now (nothing changes)."""
        ...

    def update_quantity(
        self, subscription_id: str, quantity: int, idempotency_key: str
    ) -> ProviderSubscription:
        """Change the subscription to `quantity` terminals now, prorated and invoiced at once."""
        ...

    def set_pause(self, subscription_id: str, paused: bool, resumes_at: int | None) -> ProviderSubscription:
        """Pause collection (nothing is charged) until `resumes_at` (None: until resumed), or resume now."""
        ...

    def list_subscriptions(self, price_id: str | None) -> Iterator[ProviderSubscription]:
        """Every subscription of `price_id` (all statuses), for `pospal-server stripe reconcile`."""
        ...


def invoice_subscription(obj: Mapping[str, Any]) -> str | None:
    """The subscription an invoice belongs to, in old (`subscription`) and new (`parent`) shapes."""
    found = _id(obj.get("subscription"))
    if found:
        return found
    # API 2025-03-31 and later moved it under `parent`.
    details = ((obj.get("parent") or {}).get("subscription_details")) or {}
    return _id(details.get("subscription"))


def subscription_id_of(event: Mapping[str, Any]) -> str | None:
    """Return the subscription id an event is about, across old and new Stripe payload shapes."""
    obj = (event.get("data") or {}).get("object") or {}
    kind = obj.get("object")
    if kind == "subscription":
        return _id(obj.get("id"))
    if kind == "checkout.session":
        return _id(obj.get("subscription"))
    if kind == "invoice":
        return invoice_subscription(obj)
    return None


def _id(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return _id(value.get("id"))
    return None
