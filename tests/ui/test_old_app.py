"""An old POSPal till whose license could not be moved: the window's card says why, in Greek too, and
still offers the trial, the purchase and the activation (a real agent service behind the window)."""

from __future__ import annotations

import pytest

from agent.control import InProcessControl
from agent.vault.pospal1 import LICENSE_FILE, take_over_once
from tests.agent.test_service import Rig
from tests.ui.conftest import build
from ui.present import Action

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def test_a_damaged_old_license_is_explained_on_the_card_and_activation_is_offered(qtbot, tmp_path, opener):
    from ui import strings

    folder = tmp_path / "old"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / LICENSE_FILE).write_text("damaged")
    service = Rig(tmp_path).service()
    worker, window, _ = build(qtbot, InProcessControl(service), opener)
    try:
        assert window.card.detail.text() != ""
        # The first run's take-over runs beside the window (agent/cli.py starts it on a thread).
        assert take_over_once(service, tmp_path / "data", {"POSPAL_OLD_APP_DIR": str(folder)}) == (
            "refused:unreadable"
        )
        qtbot.waitUntil(lambda: "cannot be read" in window.card.detail.text(), timeout=2000)
        assert "Nothing is lost" in window.card.detail.text()
        assert window.card.headline.text() == strings.t("ui.state.license_missing")
        offered = window.pages["overview"].visible_actions()
        assert {Action.TRIAL, Action.BUY, Action.ACTIVATE} <= set(offered)
        strings.language.set("el")
        window.retranslate()
        assert window.card.detail.text().startswith("Υπάρχει παλιά άδεια POSPal")
    finally:
        strings.language.set("en")
        assert worker.shutdown(5000)
