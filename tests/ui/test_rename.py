"""Renaming terminals from the window (issue 27): this PC from the status card, another from the owner's
terminal list (after the owner's code), in the agent's words."""

from __future__ import annotations

import pytest

from agent.errors import ServerRefused
from tests.ui.fakes import make_status

# The offscreen platform cannot size a shown dialog's window hints; that warning says nothing about us.
pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def test_a_till_called_vm_like_its_twin_is_renamed_from_the_status_card(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("trial_active", terminal_name="vm-3F2A"))
    assert window.card.values["terminal"].text() == "vm-3F2A"
    window.card.rename.click()
    dialog = window.rename_dialog
    assert dialog.isVisible() and dialog.name.text() == "vm-3F2A"
    dialog.name.setText("   ")
    dialog.save.click()
    assert dialog.message.text() == "Give the terminal a name." and control.called("rename_terminal") == 0
    dialog.name.setText("  Bar ")
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "rename"):
        dialog.save.click()
    assert ("rename_terminal", ("Bar", None, None, None)) in control.calls
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: window.card.values["terminal"].text() == "Bar", timeout=2000)
    assert "Bar" in window.banner.text()


def test_the_owner_renames_another_terminal_from_the_list_after_the_owners_code(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active", customer_email="owner@cafe.gr"))
    window.show_page("move")
    page = window.pages["move"]
    qtbot.waitUntil(lambda: "m_bar" in page.terminals.rename_buttons, timeout=2000)
    assert "m_front" in page.terminals.rename_buttons  # this PC too
    control.fail_next["rename_terminal"] = ServerRefused(
        "owner_proof_required", "Only the owner can do this."
    )
    page.terminals.rename_buttons["m_bar"].click()
    dialog = page.rename_dialog
    assert dialog.name.text() == "Beach bar"
    dialog.name.setText("Terrace")
    with qtbot.waitSignal(worker.action_failed, check_params_cb=lambda tag, _e: tag == "rename"):
        dialog.save.click()
    owner = window.owner_dialog
    assert owner.isVisible() and dialog.message.text() == ""  # a step, not an error
    owner.code.setText("424242")
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "rename"):
        owner.submit.click()
    assert control.calls[-1] == ("rename_terminal", ("Terrace", "m_bar", None, None))
    assert not dialog.isVisible()
    names = [t.terminal_name for t in page.terminals._rows]
    assert names == ["Front counter", "Terrace"]


def test_the_seats_full_list_offers_no_rename(qtbot, ui, control):
    from ui.terminals import TerminalList

    rows = [{"machine_id": "m_bar", "terminal_name": "Bar", "last_seen": None}]
    seats_full = TerminalList()
    qtbot.addWidget(seats_full)
    seats_full.set_terminals(rows)
    assert seats_full.rename_buttons == {} and "m_bar" in seats_full.remove_buttons
