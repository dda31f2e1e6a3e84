"""The window's "Confirm payment": a renewal waiting for 3-D Secure opens the bank's confirmation page."""

from __future__ import annotations

from tests.ui.fakes import make_status
from ui.present import Action, actions_for
from ui.strings import t

URL = "https://invoice.stripe.com/i/acct_1/test_YWNjdF8x"


def _show(qtbot, worker, control, status) -> None:
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(status)


def test_confirm_payment_is_the_first_action_and_opens_the_invoice_page(qtbot, ui, control, opener):
    worker, window, _ = ui
    _show(
        qtbot,
        worker,
        control,
        make_status(
            "licensed_renewal_required", reason="payment_action_required", days_left=5, payment_action_url=URL
        ),
    )
    overview = window.pages["overview"]
    assert window.card.headline.text() == "Payment needs confirming"  # not "Payment failed"
    assert overview.visible_actions()[0] is Action.CONFIRM
    assert overview.buttons[Action.CONFIRM].text() == "Confirm payment"
    assert "confirm the payment" in window.card.detail.text() and "card is fine" in window.card.detail.text()
    overview.buttons[Action.CONFIRM].click()
    assert opener.urls == [URL]


def test_tray_says_payment_needs_confirming(qtbot, ui, control):
    worker, _, tray = ui
    _show(
        qtbot,
        worker,
        control,
        make_status(
            "licensed_renewal_required", reason="payment_action_required", days_left=5, payment_action_url=URL
        ),
    )
    assert "Payment needs confirming" in tray.icon.toolTip()


def test_a_failed_card_still_asks_for_a_new_card():
    assert Action.CONFIRM not in actions_for("licensed_renewal_required", "payment_failed")
    assert actions_for("licensed_renewal_required", "payment_action_required")[0] is Action.CONFIRM


def test_greek_label():
    from ui import strings

    assert strings._ENTRIES["ui.action.confirm_payment"]["el"] == "Επιβεβαίωση πληρωμής"
    assert t("ui.action.confirm_payment")
