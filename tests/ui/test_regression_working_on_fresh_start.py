"""Regression: on a fresh data directory the window said "Working…" until the license state changed.

``run_tray`` starts the worker and, with no system tray, opens the window at once. The first status
(answered from memory, so in a few milliseconds) was emitted while the window was still being built,
before it connected to ``status_changed``: the window never got it and waited for the next change, which
on a fresh PC comes only with a trial (or a sync that times out ~25 s later). These tests pin that exact
order of events with a direct-connected probe, so they fail deterministically without the fix.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt

from agent.errors import LocalApiError
from tests.ui.fakes import BlockingControl, FakeControl
from ui.strings import t
from ui.tray import Tray
from ui.window import AgentWindow
from ui.worker import ControlWorker


def _start_and_open(qtbot, control, opener):
    """Start the worker like run_tray, let the first status be emitted, then open the window."""
    worker = ControlWorker(control)
    windows: list[AgentWindow] = []

    def make_window() -> AgentWindow:
        window = AgentWindow(worker, opener=opener)
        qtbot.addWidget(window)
        windows.append(window)
        return window

    tray = Tray(worker, window_factory=make_window, quit_app=lambda: None)
    emitted = threading.Event()
    # Direct: runs on the pool thread at emission time, after the tray's queued delivery was posted.
    worker.status_changed.connect(lambda _status: emitted.set(), Qt.ConnectionType.DirectConnection)
    worker.start()
    assert emitted.wait(5), "the first status never came"
    tray.open_window()  # as run_tray does when the desktop has no system tray
    return worker, tray, windows[0]


def test_fresh_start_shows_not_activated_at_once(qtbot, opener):
    control = FakeControl("license_missing")
    worker, tray, window = _start_and_open(qtbot, control, opener)
    try:
        # The status the worker already had is on screen as soon as the window exists.
        assert window.card.headline.text() == t("ui.state.license_missing")
        assert window.pages["overview"].visible_actions()
        qtbot.waitUntil(lambda: tray.status is not None and not worker.is_pending("subscribe"), timeout=2000)
        # And it stays that way: nothing is waiting for a state change to replace "Working…".
        assert window.card.headline.text() == t("ui.state.license_missing")
        assert window.card.headline.text() != t("ui.busy")
    finally:
        assert worker.shutdown(5000)


class _NotUpYet(FakeControl):
    """An agent whose first status() fails (a tray started a moment before its agent service)."""

    def __init__(self) -> None:
        super().__init__("license_missing")
        self.status_calls = 0

    def status(self):
        """Fail the first call, answer from memory afterwards."""
        self.status_calls += 1
        if self.status_calls == 1:
            raise LocalApiError("The agent is not running.", code="agent_unavailable")
        return super().status()


def test_window_asks_again_when_the_first_status_failed(qtbot, opener):
    control = _NotUpYet()
    worker = ControlWorker(control)
    try:
        with qtbot.waitSignal(worker.action_failed, timeout=2000):
            worker.start()
        qtbot.waitUntil(lambda: not worker.is_pending("status"), timeout=2000)
        with qtbot.waitSignal(worker.status_changed, timeout=2000):
            window = AgentWindow(worker, opener=opener)
            qtbot.addWidget(window)
        assert window.card.headline.text() == t("ui.state.license_missing")
    finally:
        assert worker.shutdown(5000)


def test_a_background_sync_does_not_hide_the_state(qtbot, opener):
    control = BlockingControl("trial_active")
    worker = ControlWorker(control)
    window = AgentWindow(worker, opener=opener)
    qtbot.addWidget(window)
    try:
        with qtbot.waitSignal(worker.status_changed, timeout=2000):
            worker.start()
        qtbot.waitUntil(lambda: not worker.is_pending("subscribe"), timeout=2000)
        worker.call("sync", "sync_now")  # never returns while the test runs
        qtbot.waitUntil(lambda: not window.card.sync_hint.isHidden(), timeout=2000)
        assert window.card.headline.text() == t("ui.state.trial_active")
        assert window.card.sync_hint.text() == t("ui.action.syncing")
        control.release.set()
        qtbot.waitUntil(lambda: window.card.sync_hint.isHidden(), timeout=5000)
    finally:
        control.release.set()
        assert worker.shutdown(5000)
