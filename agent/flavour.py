"""The build flavour: a release build or a development tree.

A release build takes no trust anchor from anything the person at the till can change (no environment
variable, no user-writable file, no flag), and keeps its tamper marks in a fixed place outside the data
directory. A development tree (a source checkout: the demo, the tests) may use the development-only trust
path `POSPAL_TRUSTED_KEYS` and keeps its marks next to its data directory, so test agents never share them.

A build is a release when either holds:

- it runs frozen (the PyInstaller bundle sets `sys.frozen`): nothing can turn a bundle back into a
  development build, whatever sits next to it on disk;
- the generated module `agent/_build.py` says `RELEASE = True` (packaging may write it for a release made
  some other way). It can only switch release mode on, never off.
"""

from __future__ import annotations

from pospal_protocol import flavour as _rule


def is_release() -> bool:
    """True in a release build (see the module docstring; the rule is `pospal_protocol.flavour`)."""
    return _rule.is_release("agent._build")
