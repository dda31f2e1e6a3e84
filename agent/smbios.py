"""`protocol.smbios` under its older name: the same module object, so patches and caches are shared.

It moved to the kernel so the POS's verifying client (`pospal-client`) ships the one implementation.
"""

import sys

from protocol import smbios as _impl
from protocol.smbios import *  # noqa: F403 (this name is the kernel's module itself)

sys.modules[__name__] = _impl
