"""run_tray: the entry `pospal-agent run` uses. It starts, shows the state, and a second call defers."""

from __future__ import annotations

import uuid

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from tests.ui.fakes import FakeControl
from ui.app import run_tray
from ui.single_instance import SingleInstance


def test_run_tray_shows_the_state_and_quits_cleanly(qtbot):
    seen = {}

    def ready(tray):
        seen["tray"] = tray

        # No system tray on the offscreen platform: the window is shown instead, once the status lands.
        def check():
            if tray.status is None:
                QTimer.singleShot(10, check)
                return
            seen["tooltip"] = tray.icon.toolTip()
            seen["window_visible"] = tray.has_window and tray.window.isVisible()
            QApplication.quit()

        QTimer.singleShot(0, check)

    control = FakeControl("licensed_active")
    assert (
        run_tray(
            control,
            lang="en",
            instance_name=f"pospal-test-{uuid.uuid4().hex[:8]}",
            on_ready=ready,
            opener=lambda _url: None,
        )
        == 0
    )
    assert seen["tooltip"] == "POSPal: Licensed"
    assert seen["window_visible"] is True
    assert not seen["tray"].worker.is_pending("status")
    seen["tray"].window.hide_on_close = False
    seen["tray"].window.close()


def test_a_second_run_tray_defers_to_the_first(qtbot):
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    first = SingleInstance(name)
    assert first.claim()
    try:
        with qtbot.waitSignal(first.show_requested, timeout=5000):
            assert run_tray(FakeControl(), instance_name=name) == 0
    finally:
        first.release()
