"""Test-wide setup: offscreen Qt, and the skip policy.

**Skips under CI.** CI (`CI=true`, set by `.ci/run`) provides every service and tool the suite can use:
PostgreSQL, Redis, makensis, Xvfb, Wine. There, a test that skips because one of them is missing is a
*failure*, so a broken install step cannot hide behind a green run. The only skips allowed under CI are
for another operating system's code paths (the reason names Windows, macOS or POSIX). On a developer's
machine the same skips stay skips, and the summary says which services were missing.
"""

from __future__ import annotations

import os
import re

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

IN_CI = os.environ.get("CI", "").lower() == "true"
# A reason that names another platform: the code path cannot run on this OS at all, so no install fixes it.
OTHER_PLATFORM = re.compile(r"\b(windows|win32|darwin|macos|ioreg|posix|is posix)\b", re.IGNORECASE)


def skip_reason(report: pytest.TestReport) -> str:
    """The text a skip was given (`pytest.skip(reason)` or a skipif mark)."""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def allowed_in_ci(reason: str) -> bool:
    """Whether a skip with this reason may pass under CI=true: only another platform's code paths."""
    return OTHER_PLATFORM.search(reason) is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Under CI=true, turn a skip for a missing service or tool into a failure that names it."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if not allowed_in_ci(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, where every service and tool must be present: {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """On a developer's machine, say plainly which variants did not run and how CI differs."""
    skipped = terminalreporter.stats.get("skipped", [])
    missing = sorted({skip_reason(r) for r in skipped if not allowed_in_ci(skip_reason(r))})
    if missing and not IN_CI:
        terminalreporter.write_sep("-", "variants that did not run here (CI=true makes these failures)")
        for reason in missing:
            terminalreporter.write_line(f"  {reason}")
