"""Nothing blocks the UI thread: with an agent whose calls never return, the window keeps working."""

from __future__ import annotations

import threading

from PySide6.QtCore import QTimer

from tests.ui.conftest import build
from tests.ui.fakes import BlockingControl, FakeControl
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
        qtbot.waitUntil(lambda: ran == [True], timeout=5000)

        # The window still reacts to the owner: pages switch and status pushes still land.
        window.show_page("diagnostics")
        assert window.page == "diagnostics"
        with qtbot.waitSignal(worker.status_changed, timeout=5000):
            control.set_status(control.status())
    finally:
        control.release.set()
        assert worker.shutdown(5000)


class HangingWait(FakeControl):
    """Checkout starts at once; the payment wait then hangs (nobody pays) until its cancel event is set."""

    def __init__(self) -> None:
        super().__init__("license_missing")
        self.waiting = threading.Event()
        self.cancel_events: list[threading.Event] = []

    def wait_checkout(self, checkout_id, cancel, poll_s=2.0):
        """Block until cancelled (bounded), like a payment that never arrives."""
        self.cancel_events.append(cancel)
        self.waiting.set()
        cancel.wait(60)
        return self._status


def test_a_hung_payment_wait_can_be_cancelled(qtbot, opener):
    control = HangingWait()
    worker, window, _ = build(qtbot, control, opener)
    try:
        window.show_page("buy")
        window.pages["buy"].email.setText("a@b.gr")
        window.pages["buy"].restaurant.setText("Kyma")
        window.pages["buy"].submit.click()
        qtbot.waitUntil(control.waiting.is_set, timeout=5000)  # checkout done, the wait now hangs
        wait_page = window.pages["wait"]
        assert window.page == "wait" and wait_page.waiting
        tag = f"wait_checkout:{wait_page.checkout.checkout_id}"
        assert worker.is_pending(tag)

        wait_page.cancel_button.click()

        assert window.page == "overview"
        assert not wait_page.waiting
        [cancel] = control.cancel_events
        assert cancel.is_set()  # the background poll is told to stop, not abandoned
        qtbot.waitUntil(lambda: not worker.is_pending(tag), timeout=5000)
        assert window.page == "overview"  # the ended wait's result does not pull the window back
    finally:
        for event in control.cancel_events:
            event.set()
        assert worker.shutdown(5000)
