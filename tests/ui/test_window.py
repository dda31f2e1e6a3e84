"""The agent window: status card, actions per state, move the license, refusals, diagnostics."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QGuiApplication

from agent.errors import Offline, ServerRefused
from tests.ui.fakes import make_status
from ui.present import Action
from ui.strings import t
from ui.window import AgentWindow


def set_status(qtbot, worker, control, status):
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(status)


def test_card_shows_state_plan_dates_sync_and_terminal(qtbot, ui, control):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_active", days_left=27))
    card = window.card
    assert card.headline.text() == "Licensed"
    assert card.detail.text() == "This terminal can take orders."
    facts = {card.labels[k].text(): card.values[k].text() for k in card.labels}
    assert facts["Plan"] == "Monthly, 2 terminals"
    assert facts["Renews on"] == "23 December 2026"
    assert not card.values["days_left"].isVisibleTo(window)  # it renews by itself: no countdown shown
    assert facts["Last sync"].startswith("26 Nov 2026")
    assert facts["Terminal"] == "Front counter"


def test_card_says_when_orders_stop_after_a_failed_payment(qtbot, ui, control):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_renewal_required", days_left=4))
    card = window.card
    assert card.headline.text() == "Payment failed"
    assert "Orders work for 4 days more" in card.detail.text()
    assert card.labels["end"].text() == "Orders stop on"
    assert card.values["days_left"].isVisibleTo(window) and card.values["days_left"].text() == "4 days"
    assert window.pages["overview"].buttons[Action.BILLING].text() == "Update payment card"


def test_license_error_uses_the_agent_catalogue_sentence(qtbot, ui, control):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("license_error", reason="clock_rollback"))
    assert window.card.detail.text() == (
        "The computer's clock has been set back. Set the correct date and time, then press Sync now."
    )
    assert not window.card.values["days_left"].isVisibleTo(window)
    assert not window.card.values["end"].isVisibleTo(window)


def test_start_trial_goes_to_trial_active(qtbot, ui, control):
    worker, window, _ = ui
    window.pages["overview"].buttons[Action.TRIAL].click()
    assert window.page == "trial"  # the optional reminder email is asked for; empty is fine
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "trial"):
        window.pages["trial"].submit.click()
    assert control.calls[-1] == ("start_trial", (None,))
    assert window.page == "overview"
    assert window.card.headline.text() == "Free trial"
    assert window.banner.text() == "Your free trial has started."
    assert window.pages["overview"].visible_actions()[0] is Action.BUY


def test_a_trial_email_is_checked_then_passed_to_the_agent(qtbot, ui, control):
    worker, window, _ = ui
    window.show_page("trial")
    page = window.pages["trial"]
    page.email.setText("not an email")
    page.submit.click()
    assert window.banner.text() == t("ui.error.email")
    assert control.called("start_trial") == 0
    page.email.setText("  owner@cafe.gr ")
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "trial"):
        page.email.returnPressed.emit()
    assert control.calls[-1] == ("start_trial", ("owner@cafe.gr",))
    assert window.page == "overview"


def test_a_failed_trial_start_stays_on_the_trial_page_and_explains(qtbot, ui, control):
    worker, window, _ = ui
    window.show_page("trial")
    control.fail_next["start_trial"] = Offline("The license server cannot be reached.")
    with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "trial"):
        window.pages["trial"].submit.click()
    assert window.page == "trial"
    assert window.banner.text() != ""
    assert window.pages["trial"].submit.isEnabled()


def test_deactivate_asks_and_declining_changes_nothing(qtbot, ui, control, questions):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_active"))
    window.show_page("move")
    questions.answer = False
    window.pages["move"].deactivate_button.click()
    assert questions.asked == ["Deactivate this PC?"]
    assert control.called("deactivate") == 0
    assert window.card.headline.text() == "Licensed"


def test_deactivate_confirmed_deactivates(qtbot, ui, control, questions):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_active"))
    window.show_page("move")
    questions.answer = True
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "deactivate"):
        window.pages["move"].deactivate_button.click()
    assert questions.asked == ["Deactivate this PC?"]
    assert control.called("deactivate") == 1
    assert window.card.headline.text() == "Not activated"
    assert window.page == "overview"
    assert window.banner.text() == "This PC is deactivated."


def test_move_lists_terminals_and_removes_one_after_confirming(qtbot, ui, control, questions):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_active"))
    move = window.pages["move"]
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "terminals"):
        window.show_page("move")
    assert set(move.terminals.remove_buttons) == {"m_bar"}  # this PC has no Remove button
    questions.answer = False
    move.terminals.remove_buttons["m_bar"].click()
    assert questions.asked == ["Remove Beach bar?"] and control.called("remove_terminal") == 0
    questions.answer = True
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "remove:m_bar"):
        move.terminals.remove_buttons["m_bar"].click()
    assert [t.machine_id for t in control.terminals] == ["m_front"]
    assert move.terminals.remove_buttons == {}
    assert window.banner.text() == "Terminal removed."


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            Offline("connection refused"),
            "Cannot reach the POSPal cloud. Check the internet connection and try again.",
        ),
        (
            ServerRefused("rate_limited", "slow down", {"retry_after": 130}),
            "Too many tries. Wait 3 min and try again.",
        ),
        (ServerRefused("rate_limited", "slow down"), "Too many tries. Wait a few minutes and try again."),
        (ServerRefused("no_subscription", "none"), "No subscription was found for this email."),
        (ServerRefused("code_expired", "old"), "That code has expired. Ask for a new one."),
        (ServerRefused("too_many_attempts", "stop"), "Too many wrong tries. Ask for a new code."),
        (ServerRefused("checkout_expired", "late"), "The payment page expired. Start again."),
        (
            ServerRefused("unknown_machine", "who"),
            "The POSPal cloud does not know this PC. Activate it again.",
        ),
        (ServerRefused("weird_new_code", "The server said no."), "The server said no."),
    ],
)
def test_refusals_read_as_clear_sentences(qtbot, ui, control, error, text):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_grace"))
    control.fail_next["sync_now"] = error
    with qtbot.waitSignal(worker.action_failed, timeout=2000):
        window.pages["overview"].buttons[Action.SYNC].click()
    assert window.banner.kind == "error"
    assert window.banner.text() == text


def test_manage_billing_opens_the_portal_in_the_browser(qtbot, ui, control, opener):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_renewal_required"))
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "portal"):
        window.pages["overview"].buttons[Action.BILLING].click()
    assert opener.urls == ["https://billing.example/portal/session"]


def test_diagnostics_shows_sources_and_copies_a_support_report(qtbot, ui, control):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("licensed_active"))
    page = window.pages["diagnostics"]
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "diagnostics"):
        window.diagnostics_button.click()
    shown = {
        page.sources.itemAt(i * 2).widget().text(): page.sources.itemAt(i * 2 + 1).widget().text()
        for i in range(page.sources.rowCount())
    }
    assert shown["board_serial"] == "✗ unavailable"
    assert shown["machine_id"] == "✓ works"
    facts = {
        page.facts.itemAt(i * 2).widget().text(): page.facts.itemAt(i * 2 + 1).widget().text()
        for i in range(page.facts.rowCount())
    }
    assert facts["Fingerprint check"] == "4 compared, 0 differ, 5 bound: same machine"
    assert facts["Proxy"] == "none (direct)" and "Cloned PC?" not in facts
    page.copy.click()
    report = QGuiApplication.clipboard().text()
    assert "board_serial: unavailable" in report
    assert '"license_state": "licensed_active"' in report
    assert window.banner.text().startswith("Support report copied")


class FakeAutostart:
    def __init__(self, enabled=False, broken=False):
        self.enabled, self.broken = enabled, broken

    def is_enabled(self):
        return self.enabled

    def set_enabled(self, on):
        if self.broken:
            raise PermissionError("access denied")
        self.enabled = on


def test_start_at_login_box_reflects_and_switches_the_setting(qtbot, control, opener):
    from tests.ui.conftest import build

    autostart = FakeAutostart(enabled=True)
    worker, window, _ = build(qtbot, control, opener, autostart=autostart)
    try:
        assert window.autostart_box.isChecked()
        window.autostart_box.click()
        assert autostart.enabled is False
        autostart.broken = True
        window.autostart_box.click()
        assert not window.autostart_box.isChecked()
        assert "access denied" in window.banner.text()
    finally:
        worker.shutdown()


def test_closing_the_window_only_hides_it(qtbot, ui):
    _, window, _ = ui
    window.bring_up()
    qtbot.waitExposed(window)
    window.close()
    assert not window.isVisible()
    assert isinstance(window, AgentWindow)


def test_a_long_message_never_squeezes_the_card_facts(qtbot, ui, control):
    worker, window, _ = ui
    set_status(qtbot, worker, control, make_status("trial_active"))  # two-line detail sentence
    window.bring_up()
    qtbot.waitExposed(window)
    window.show_error("Cannot reach the POSPal cloud. Check the internet connection and try again. " * 2)
    facts = [v for v in window.card.values.values() if v.isVisibleTo(window)]
    qtbot.waitUntil(lambda: all(v.height() >= v.sizeHint().height() for v in facts), timeout=2000)
    assert window.height() >= window.layout().totalMinimumSize().height()
