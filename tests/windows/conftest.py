"""Windows-only tests (run under Windows Python: in CI under Wine, by scripts/windows_ci.sh).

Every test here is marked `windows` and skipped elsewhere; the directory imports nothing from the
server, so Windows Python needs only the agent's dependencies to collect it.
"""

import sys

import pytest


def pytest_collection_modifyitems(items):
    """Mark every test in this directory `windows`, and skip it off Windows."""
    off_windows = pytest.mark.skip(reason="Windows-only")
    for item in items:
        if "tests/windows/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("tests/windows"):
            item.add_marker(pytest.mark.windows)
            if sys.platform != "win32":
                item.add_marker(off_windows)
