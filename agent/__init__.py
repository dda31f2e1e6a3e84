"""POSPal License Agent: the headless core that owns license state on a POS computer."""

__version__ = "1.0.0"
