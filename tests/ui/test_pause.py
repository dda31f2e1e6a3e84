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
        page.buttons[Action.PAUSE].click()
        assert page.pause_dialog.until_resumed.isChecked()  # "until I resume" unless a date is picked
        with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "pause"):
            page.pause_dialog.submit_button.click()
        dialog = window.owner_dialog
        dialog.code.setText("123456")
        with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "pause"):
            dialog.submit.click()
        assert control.called("pause_subscription") == 2  # refused, then done once the owner proved it
        assert [args for name, args in control.calls if name == "pause_subscription"] == [(None,), (None,)]
    finally:
        strings.language.set("en")


def test_pause_until_a_date_sends_the_start_of_that_day_and_says_until_when(qtbot, ui, control):
    """The owner picks 1 May: the agent is asked to resume then, and the message names the date."""
    from datetime import date

    from PySide6.QtCore import QDate

    from ui.season import PauseDialog

    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active", customer_email="bar@ammos.gr"))
    page = window.pages["overview"]
    page.buttons[Action.PAUSE].click()
    dialog = page.pause_dialog
    assert not dialog.date.isEnabled()  # the date counts only when "until this date" is chosen
    dialog.until_date.setChecked(True)
    assert dialog.date.isEnabled()
    dialog.date.setDate(QDate(dialog.date.minimumDate().year() + 1, 5, 1))
    wanted = dialog.date.date().toPython()
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "pause"):
        dialog.submit_button.click()
    (sent,) = [args[0] for name, args in control.calls if name == "pause_subscription"]
    assert sent.tzinfo is not None and sent.date() == wanted and (sent.hour, sent.minute) == (0, 0)
    assert wanted.strftime("%d/%m/%Y") in window.banner.text()
    # The date can be from tomorrow to the server's longest pause only.
    early = PauseDialog(worker, today=date(2026, 11, 1))
    assert early.date.minimumDate().toPython() == date(2026, 11, 2)
    assert early.date.maximumDate().toPython() == date(2027, 6, 28)
