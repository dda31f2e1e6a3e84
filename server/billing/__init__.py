"""Billing providers behind one `BillingProvider` interface, chosen by `POSPAL_BILLING`.

`stripe` is `StripeBilling` (the official SDK; `STRIPE_API_BASE` points it elsewhere for tests) and
`sandbox` is `SandboxBilling` (a built-in checkout page; no money moves). Both feed the same webhook
handling in `server.webhooks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.billing.base import BillingProvider, CheckoutRequest, CheckoutSession, ProviderSubscription
from server.billing.sandbox import SandboxBilling
from server.billing.stripe import StripeBilling

if TYPE_CHECKING:
    from pospal_protocol.clock import Clock
    from server.config import Settings
    from server.db import Database

__all__ = [
    "BillingProvider",
    "CheckoutRequest",
    "CheckoutSession",
    "ProviderSubscription",
    "SandboxBilling",
    "StripeBilling",
    "make_provider",
]


def make_provider(settings: Settings, db: Database, clock: Clock) -> BillingProvider:
    """Build the provider `settings.billing` names."""
    if settings.billing == "stripe":
        # Settings.check guarantees the three Stripe settings when billing is stripe.
        assert settings.stripe_secret_key and settings.stripe_webhook_secret and settings.stripe_price_id
        return StripeBilling(
            settings.stripe_secret_key.reveal(),
            settings.stripe_webhook_secret.reveal(),
            settings.stripe_price_id,
            api_base=settings.stripe_api_base,
            automatic_tax=settings.stripe_automatic_tax,
        )
    return SandboxBilling(db, clock, settings.public_url)
