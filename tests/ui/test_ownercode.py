"""The owner's code dialog: a till refused "only the owner" asks for the e-mailed code, then retries."""

from __future__ import annotations

import pytest

from agent.errors import ServerRefused
from tests.ui.fakes import make_status
from ui.present import Action

# The offscreen platform cannot size a shown dialog's window hints; that warning says nothing about us.
pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def _owner_only():
    return ServerRefused("owner_proof_required", "Only the owner can do this.")


def test_any_staff_member_could_open_billing_so_the_window_asks_the_owner_first(qtbot, ui, control, opener):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active", customer_email="owner@cafe.gr"))
    control.fail_next["portal_url"] = _owner_only()
    with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "portal"):
        window.pages["overview"].buttons[Action.BILLING].click()
    dialog = window.owner_dialog
    assert dialog.isVisible() and dialog.email.text() == "owner@cafe.gr"
    assert opener.urls == []  # nothing opened for the waiter
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "owner_code"):
        dialog.send.click()
    assert control.calls[-1] == ("request_code", ("owner@cafe.gr", "owner"))
    dialog.code.setText("123 456")
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "portal"):
        dialog.submit.click()
    assert ("prove_owner", ("owner@cafe.gr", "123456")) in control.calls
    assert not dialog.isVisible()
    assert opener.urls == ["https://billing.example/portal/session"]


def test_a_wrong_owner_code_keeps_the_dialog_open_with_the_reason(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active", customer_email="owner@cafe.gr"))
    window.ask_owner("portal")
    dialog = window.owner_dialog
    dialog.code.setText("000000")
    with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "owner_prove"):
        dialog.submit.click()
    assert dialog.isVisible() and dialog.message.text().startswith("That code is not right")
    assert control.called("portal_url") == 0
    dialog.code.setText("12")
    dialog.submit.click()
    assert dialog.message.text() == "The code has 6 digits."


def test_second_pc_of_a_customer_bought_a_second_subscription_so_buy_offers_add_this_terminal(
    qtbot, ui, control, questions
):
    worker, window, _ = ui
    control.fail_next["start_checkout"] = ServerRefused("subscription_exists", "Already subscribed.")
    window.show_page("buy")
    page = window.pages["buy"]
    page.email.setText("owner@cafe.gr")
    page.restaurant.setText("Cafe")
    questions.answer = True
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "add_terminal"):
        page.submit.click()
    assert questions.asked == ["Add this terminal?"]
    assert ("add_terminal", ("owner@cafe.gr", False, None)) in control.calls  # the price, first
    assert control.calls[-1] == ("add_terminal", ("owner@cafe.gr", True, 2))
    assert window.page == "overview" and control.called("start_checkout") == 1


def test_terminal_list_shows_inactive_terminals_and_why(qtbot):
    from PySide6.QtWidgets import QLabel

    from agent.control import Terminal
    from ui.terminals import TerminalList

    listing = TerminalList()
    qtbot.addWidget(listing)
    listing.set_terminals(
        [
            Terminal("m_a", "Front", None, "2026-11-26T10:00:00Z", True),
            Terminal("m_b", "Beach bar", None, "2026-10-01T10:00:00Z", False, active=False, reason="idle"),
        ]
    )
    labels = [label.text() for label in listing.findChildren(QLabel)]
    assert sum("Inactive: not seen for a month" in text for text in labels) == 1
    assert "m_b" in listing.remove_buttons  # an inactive terminal can still be removed


def test_owner_picks_a_terminal_over_the_quantity_to_keep(qtbot, ui, control):
    from agent.control import Terminal

    worker, window, _ = ui
    control.terminals = [
        Terminal("m_front", "Front counter", None, None, True),
        Terminal("m_bar", "Beach bar", None, None, False, active=False, reason="seats_exceeded"),
    ]
    window.show_page("move")
    page = window.pages["move"]
    qtbot.waitUntil(lambda: "m_bar" in page.terminals.keep_buttons, timeout=2000)
    assert "m_front" not in page.terminals.keep_buttons
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "keep:m_bar"):
        page.terminals.keep_buttons["m_bar"].click()
    assert control.calls[-1] == ("keep_terminals", (["m_bar"],))


def test_the_owner_s_code_is_asked_for_as_a_step_not_shown_as_an_error(qtbot, ui, control):
    """Issue 27: "Only the owner can do this." read like a failure before the code prompt; the dialog
    and the message line now say what comes next, in both languages."""
    from agent import messages
    from ui.errortext import describe

    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active", customer_email="owner@cafe.gr"))
    window.ask_owner("portal")
    dialog = window.owner_dialog
    assert dialog.title.text() == "Confirm you are the owner"
    assert "Step 1" in dialog.intro.text() and "Step 2" in dialog.intro.text()
    assert describe(_owner_only()).startswith("Next step:")
    for key in ("owner.title", "owner.step", "owner.next", "owner.cli"):
        assert messages.text(key, "el", email="a@b.gr") != messages.text(key, "en", email="a@b.gr")
    assert "Βήμα 1" in messages.text("owner.step", "el")
    dialog.reject()
