"""POSPal License Agent: the headless core that owns license state on a POS computer."""

from protocol import __version__

__all__ = ["__version__"]
