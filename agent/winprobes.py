"""`protocol.winprobes` under its older name: the same module object, so patches and caches are shared.

It moved to the kernel so the POS's verifying client (`pospal-client`) ships the one implementation.
"""

import sys

from protocol import winprobes as _impl
from protocol.winprobes import *  # noqa: F403 (this name is the kernel's module itself)

sys.modules[__name__] = _impl
