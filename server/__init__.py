"""POSPal license server: trials, activations, token signing, Stripe billing, email outbox."""

__version__ = "1.0.0"
