"""The build flavour rule, for the agent and for the POS's client: a release build or a development tree.

A build is a release when it runs frozen (PyInstaller, py2exe and the like set `sys.frozen`: nothing can
turn a bundle back into a development build), or when its generated build module (`agent._build` for the
agent, `pospal_client._build` for a POS that packages the client some other way) says `RELEASE = True`.
That module can only switch release mode on, never off. A release build takes no trust anchor from
anything the person at the till can change; a development tree (the demo, the tests) may read the
development-only trust path `POSPAL_TRUSTED_KEYS`.
"""

from __future__ import annotations

import importlib
import sys


def is_release(build_module: str) -> bool:
    """True when this process is frozen or `build_module` sets `RELEASE = True`."""
    if getattr(sys, "frozen", False):
        return True
    try:
        build = importlib.import_module(build_module)
    except ImportError:
        return False
    return getattr(build, "RELEASE", False) is True
