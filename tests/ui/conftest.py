"""UI test fixtures: a FakeControl-backed worker, window and tray, and QMessageBox answered by the test."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox
from pytestqt import wait_signal

from tests.ui.fakes import FakeControl
from ui.strings import language
from ui.tray import Tray
from ui.window import AgentWindow
from ui.worker import ControlWorker

# The worker emits from pool threads, so a signal a qtbot.waitSignal blocker listened to can already be
# queued for it when the blocker returns and is freed. PySide6 then calls the freed blocker's bound method
# ("'View' object has no attribute 'check_params_callback'", or a segfault). Blockers are small: keeping
# each alive for the session turns such a late call into a harmless no-op on a finished blocker.
_BLOCKERS: list[object] = []
_blocker_init = wait_signal._AbstractSignalBlocker.__init__


def _kept_blocker_init(self, *args, **kwargs) -> None:
    _blocker_init(self, *args, **kwargs)
    _BLOCKERS.append(self)


wait_signal._AbstractSignalBlocker.__init__ = _kept_blocker_init


@pytest.fixture(autouse=True)
def english():
    """Every test starts (and ends) in English."""
    language.set("en")
    yield
    language.set("en")


class Questions:
    """Records every confirmation asked, and answers with ``answer`` (True = the action button)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answer = False


@pytest.fixture
def questions(monkeypatch) -> Questions:
    """Replace QMessageBox.exec: record the question and press the chosen button, never block."""
    record = Questions()

    def fake_exec(box: QMessageBox) -> int:
        record.asked.append(box.text())
        role = QMessageBox.ButtonRole.AcceptRole if record.answer else QMessageBox.ButtonRole.RejectRole
        chosen = next(b for b in box.buttons() if box.buttonRole(b) == role)
        chosen.click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return record


@pytest.fixture
def control() -> FakeControl:
    """A fresh FakeControl in license_missing."""
    return FakeControl()


class Opener:
    """The injected browser: remembers the URLs it was asked to open."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> None:
        self.urls.append(url)


@pytest.fixture
def opener() -> Opener:
    """A fake browser."""
    return Opener()


def build(qtbot, control, opener, autostart=None):
    """Worker + window + tray over ``control``, started, with the first status shown."""
    worker = ControlWorker(control)
    window = AgentWindow(worker, opener=opener, autostart=autostart)
    qtbot.addWidget(window)
    quits: list[bool] = []
    tray = Tray(worker, window_factory=lambda: window, quit_app=lambda: quits.append(True))
    tray.quits = quits
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        worker.start()
    qtbot.waitUntil(lambda: window.status is not None and not worker.is_pending("subscribe"), timeout=2000)
    return worker, window, tray


@pytest.fixture
def ui(qtbot, control, opener):
    """(worker, window, tray) over the FakeControl; shut down cleanly after the test."""
    parts = build(qtbot, control, opener)
    yield parts
    control.paid.set()
    parts[1].pages["wait"].cancel_pending()
    assert parts[0].shutdown(5000)
