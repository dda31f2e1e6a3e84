"""Nothing blocks the UI thread: with an agent whose calls never return, the window keeps working."""

from __future__ import annotations

from PySide6.QtCore import QTimer

from tests.ui.conftest import build
from tests.ui.fakes import BlockingControl
from ui.present import Action


def test_event_loop_runs_while_an_action_hangs(qtbot, opener):
    control = BlockingControl("licensed_grace")
    worker, window, tray = build(qtbot, control, opener)
    try:
        window.pages["overview"].buttons[Action.SYNC].click()  # returns at once; the call hangs in the pool
        qtbot.waitUntil(control.entered.is_set, timeout=2000)
        assert worker.is_pending("sync")
        assert not window.pages["overview"].buttons[Action.SYNC].isEnabled()
        assert tray.sync_action.text() == "Syncing…"

        ran: list[bool] = []
        QTimer.singleShot(0, lambda: ran.append(True))
        qtbot.waitUntil(lambda: ran == [True], timeout=100)

        # The window still reacts to the owner: pages switch and status pushes still land.
        window.show_page("diagnostics")
        assert window.page == "diagnostics"
        with qtbot.waitSignal(worker.status_changed, timeout=100):
            control.set_status(control.status())
    finally:
        control.release.set()
        assert worker.shutdown(5000)


def test_a_hung_payment_wait_can_be_cancelled(qtbot, opener):
    control = BlockingControl("license_missing")
    worker, window, _ = build(qtbot, control, opener)
    try:
        window.show_page("buy")
        window.pages["buy"].email.setText("a@b.gr")
        window.pages["buy"].restaurant.setText("Kyma")
        window.pages["buy"].submit.click()
        qtbot.waitUntil(control.entered.is_set, timeout=2000)
        window.show_page("overview")  # the owner walks away from the stuck step; the UI follows at once
        assert window.page == "overview"
    finally:
        control.release.set()
        assert worker.shutdown(5000)
