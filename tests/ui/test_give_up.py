"""Giving a license file up from the window (ui/offline.py; issue 28 case 7), and the owner's list showing a
removed till that keeps its seat because its license file still runs (ui/terminals.py)."""

from __future__ import annotations

from datetime import timedelta

from agent.control import Terminal
from tests.ui.fakes import NOW, make_status
from ui import strings

URL = "https://license.pospal.gr/offline"


def by_file(qtbot, worker, control):
    """This PC runs on a license file."""
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(
            make_status("licensed_active", reason="offline_license", offline_license=True, days_left=40)
        )


def open_offline(qtbot, window):
    page = window.pages["offline"]
    window.show_page("offline")
    qtbot.waitUntil(lambda: URL in page.intro.text(), timeout=2000)  # the agent told it the server
    return page


def test_give_up_is_offered_only_to_a_till_licensed_by_file(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active"))
    page = open_offline(qtbot, window)
    assert page.give_up.isHidden()
    by_file(qtbot, worker, control)
    assert not page.give_up.isHidden() and page.give_up.text() == "Give up this license file…"


def test_declining_the_confirmation_keeps_the_license_and_writes_nothing(
    qtbot, ui, control, questions, tmp_path
):
    worker, window, _ = ui
    by_file(qtbot, worker, control)
    page = open_offline(qtbot, window)
    page.choose_save_path = lambda _parent, _name: str(tmp_path / "deactivation.json")
    questions.answer = False
    page.give_up.click()
    assert questions.asked == ["Give up the license file?"]
    assert control.called("offline_deactivation") == 0 and not (tmp_path / "deactivation.json").exists()
    assert window.status.licensed


def test_giving_up_writes_the_deactivation_file_and_says_where_to_upload_it(
    qtbot, ui, control, questions, tmp_path
):
    worker, window, _ = ui
    by_file(qtbot, worker, control)
    page = open_offline(qtbot, window)
    target = tmp_path / "usb" / "pospal-deactivation.json"
    target.parent.mkdir()
    names: list[str] = []
    page.choose_save_path = lambda _parent, name: names.append(name) or str(target)
    questions.answer = True
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "offline_deactivate"
    ):
        page.give_up.click()
    assert names == ["pospal-deactivation.json"]
    assert target.read_bytes().startswith(b'{"type": "pospal-offline-deactivation"}')
    banner = window.banner.text()
    assert str(target) in banner and URL in banner and "given up" in banner
    qtbot.waitUntil(lambda: not window.status.licensed, timeout=2000)  # the till stopped being licensed
    assert page.give_up.isHidden()


def test_a_deactivation_file_that_could_not_be_written_is_kept_for_another_place(
    qtbot, ui, control, questions, tmp_path
):
    worker, window, _ = ui
    by_file(qtbot, worker, control)
    page = open_offline(qtbot, window)
    pulled_out = tmp_path / "usb-gone" / "pospal-deactivation.json"  # its folder does not exist
    page.choose_save_path = lambda _parent, _name: str(pulled_out)
    questions.answer = True
    with qtbot.waitSignal(
        worker.action_failed, timeout=2000, check_params_cb=lambda tag, _e: tag == "offline_deactivate"
    ):
        page.give_up.click()
    assert f"Could not write {pulled_out}" in window.banner.text()
    assert "Traceback" not in window.banner.text()
    qtbot.waitUntil(lambda: not window.status.licensed, timeout=2000)
    assert not page.give_up.isHidden()  # the file is still to be saved
    again = tmp_path / "pospal-deactivation.json"
    page.choose_save_path = lambda _parent, _name: str(again)
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "offline_deactivate"
    ):
        page.give_up.click()
    assert again.read_bytes().startswith(b'{"type": "pospal-offline-deactivation"}')
    assert control.called("offline_deactivation") == 1  # the same file, not a second give-up
    assert questions.asked == ["Give up the license file?"]  # asked once: it is given up already


def test_move_on_a_till_licensed_by_file_leads_to_giving_the_file_up(qtbot, ui, control):
    worker, window, _ = ui
    by_file(qtbot, worker, control)
    window.show_page("move")
    move = window.pages["move"]
    assert move.deactivate_button.text() == "Give up this license file…"
    move.deactivate_button.click()
    assert window.page == "offline" and control.called("deactivate") == 0


def test_the_give_up_question_and_answer_are_greek_in_greek(qtbot, ui, control, questions, tmp_path):
    worker, window, _ = ui
    by_file(qtbot, worker, control)
    page = open_offline(qtbot, window)
    strings.language.set("el")
    target = tmp_path / "pospal-deactivation.json"
    page.choose_save_path = lambda _parent, _name: str(target)
    questions.answer = True
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "offline_deactivate"
    ):
        page.give_up.click()
    assert questions.asked == ["Παράδοση του αρχείου άδειας;"]
    assert window.banner.text().startswith(f"Γράφτηκε το {target}") and URL in window.banner.text()


def test_a_removed_till_running_its_file_shows_its_seat_held_until_the_date(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active"))
    held = Terminal(
        "m_boat",
        "Boat bar",
        NOW.isoformat(),
        (NOW - timedelta(days=3)).isoformat(),
        False,
        active=True,
        reason="removed_offline_license",
        seat_held_until=(NOW + timedelta(days=34)).isoformat(),
    )
    control.terminals = [*control.terminals, held]
    move = window.pages["move"]
    with qtbot.waitSignal(worker.action_finished, check_params_cb=lambda tag, _r: tag == "terminals"):
        window.show_page("move")
    texts = [label.text() for label in move.terminals.findChildren(type(move.intro))]
    line = next(x for x in texts if "Removed" in x)
    assert "license file runs until 30 December 2026" in line and "keeps its seat" in line
    # Removed already: no Remove (nor Rename) for it; the ordinary other terminal keeps its button.
    assert set(move.terminals.remove_buttons) == {"m_bar"}
    assert "m_boat" not in move.terminals.rename_buttons
    strings.language.set("el")
    texts = [label.text() for label in move.terminals.findChildren(type(move.intro))]
    assert any("Αφαιρέθηκε" in x and "30 Δεκεμβρίου 2026" in x for x in texts)


def test_the_seat_held_until_date_reaches_the_window_from_the_servers_answer(qtbot):
    row = {
        "machine_id": "m_boat",
        "terminal_name": "Boat bar",
        "activated_at": NOW.isoformat(),
        "last_seen": None,
        "this_machine": False,
        "active": True,
        "reason": "removed_offline_license",
        "seat_held_until": "2026-12-30T09:30:00Z",
    }
    parsed = Terminal.from_dict(row)
    assert parsed.seat_held_until == "2026-12-30T09:30:00Z"
    assert Terminal.from_dict(parsed.to_dict()) == parsed
