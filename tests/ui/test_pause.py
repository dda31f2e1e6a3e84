"""The seasonal pause in the window: "Pause for the season" asks for the owner's code, then pauses; a
paused till offers "Resume now" first."""

from __future__ import annotations

import pytest

from agent.errors import ServerRefused
from tests.ui.fakes import make_status
from ui.present import Action, actions_for

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def test_a_paused_till_offers_resume_first_and_an_active_one_offers_pause():
    assert actions_for("licensed_cancelled", "paused")[0] is Action.RESUME
    assert Action.PAUSE in actions_for("licensed_active", None)
    assert Action.RESUME not in actions_for("licensed_cancelled", "subscription_ended")


def test_pause_asks_the_owner_then_pauses_and_says_so_in_greek(qtbot, ui, control):
    from ui import strings

    worker, window, _ = ui
    strings.language.set("el")
    try:
        with qtbot.waitSignal(worker.status_changed, timeout=2000):
            control.set_status(make_status("licensed_active", customer_email="bar@ammos.gr"))
        page = window.pages["overview"]
        assert page.buttons[Action.PAUSE].text() == "Παύση για τη σεζόν"
        control.fail_next["pause_subscription"] = ServerRefused("owner_proof_required", "Only the owner.")
        with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "pause"):
            page.buttons[Action.PAUSE].click()
        dialog = window.owner_dialog
        dialog.code.setText("123456")
        with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "pause"):
            dialog.submit.click()
        assert control.called("pause_subscription") == 2  # refused, then done once the owner proved it
    finally:
        strings.language.set("en")
