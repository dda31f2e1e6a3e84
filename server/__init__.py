"""POSPal license server: trials, activations, token signing, Stripe billing, email outbox."""

from pospal_protocol import __version__

__all__ = ["__version__"]
