"""Updates from the tray (ui/updates.py; issue 24 item 1): "Check for updates" on demand and the update
status. An update never blocks licensing: whatever a check finds is a sentence, never a traceback."""

from __future__ import annotations

from dataclasses import replace

from agent.errors import AgentUnavailable
from agent.selfupdate.updatestate import UpdateStatus
from tests.ui.fakes import NOW, make_status
from ui import strings
from ui.present import format_datetime


def checked(qtbot, worker, trigger) -> None:
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "update_check"
    ):
        trigger()


def facts(page) -> dict[str, str]:
    """The page's rows, label → value."""
    rows = {}
    for i in range(page.facts.rowCount()):
        label = page.facts.itemAt(i, page.facts.ItemRole.LabelRole).widget().text()
        rows[label] = page.facts.itemAt(i, page.facts.ItemRole.FieldRole).widget().text()
    return rows


def test_the_trays_check_for_updates_opens_the_page_and_says_up_to_date(qtbot, ui, control):
    worker, window, tray = ui
    assert tray.updates_action.text() == "Check for updates"
    checked(qtbot, worker, tray.updates_action.trigger)
    assert window.isVisible() and window.page == "updates"
    assert window.banner.text() == "This agent is up to date."
    page = window.pages["updates"]
    assert facts(page)["Running version"] == "1.0.0"
    assert facts(page)["Last check"] == f"{format_datetime(NOW.isoformat())}: up to date"  # local time
    assert control.called("check_updates") == 1


def test_a_staged_version_is_shown_as_ready_for_the_next_quiet_moment(qtbot, ui, control):
    worker, window, _ = ui
    control.update_outcome = "staged"
    window.show_page("updates")
    page = window.pages["updates"]
    checked(qtbot, worker, page.check.click)
    assert window.banner.text().startswith("Version 1.1.0 is downloaded and verified")
    assert facts(page)["Ready to install"] == "1.1.0, at the next quiet moment"
    assert page.check.isEnabled() and page.check.text() == "Check for updates"


def test_a_failed_check_is_a_sentence_and_the_till_keeps_selling(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        control.set_status(make_status("licensed_active"))
    control.update_outcome = "failed"
    window.show_page("updates")
    checked(qtbot, worker, window.pages["updates"].check.click)
    banner = window.banner.text()
    assert banner == (
        "The update check failed: cannot reach https://license.pospal.gr/updates. "
        "The till keeps selling; it tries again later."
    )
    assert window.banner.kind == "error"
    assert window.card.headline.text() == "Licensed"  # licensing untouched


def test_an_unreachable_agent_is_explained_not_a_traceback(qtbot, ui, control):
    worker, window, _ = ui
    control.fail_next["check_updates"] = AgentUnavailable("The POSPal License service does not answer.")
    window.show_page("updates")
    page = window.pages["updates"]
    with qtbot.waitSignal(
        worker.action_failed, timeout=2000, check_params_cb=lambda tag, _e: tag == "update_check"
    ):
        page.check.click()
    assert window.banner.text() == "The POSPal License service does not answer."
    assert page.check.isEnabled()


def test_the_page_shows_the_launchers_rollback_and_skipped_versions(qtbot, ui, control):
    worker, window, _ = ui
    control.updates = replace(
        control.updates,
        last_swap_outcome="rolled_back",
        last_swap_from="1.0.0",
        last_swap_to="1.2.0",
        last_swap_reason="no answer on /v1/health within 30 s",
        failed=("1.2.0",),
    )
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "update_status"
    ):
        window.updates_button.click()
    rows = facts(window.pages["updates"])
    assert rows["Last update"] == (
        "1.2.0 failed its start check and was rolled back to 1.0.0: no answer on /v1/health within 30 s"
    )
    assert rows["Skipped versions"] == "1.2.0" and rows["Last check"] == "not yet"
    strings.language.set("el")
    rows = facts(window.pages["updates"])
    assert rows["Τελευταία ενημέρωση"].startswith("Η 1.2.0 απέτυχε στον έλεγχο εκκίνησης")


def test_an_agent_that_does_not_update_itself_says_so(qtbot, ui, control):
    worker, window, _ = ui
    control.updates = UpdateStatus(enabled=False, current="1.0.0")
    window.show_page("updates")
    checked(qtbot, worker, window.pages["updates"].check.click)
    assert window.banner.text() == (
        "This agent does not update itself (it was not installed with the updater)."
    )


def test_a_status_read_that_returns_after_a_check_does_not_undo_what_the_check_found(qtbot, ui, control):
    """Seen once in CI: the opening read came back after "Check for updates" and put back the old state."""
    import threading

    worker, window, _ = ui
    control.update_outcome = "staged"
    release = threading.Event()
    before = control.updates  # the state as the opening read sees it, before the check
    read = control.update_status

    def slow_read():
        read()
        assert release.wait(5)
        return before

    control.update_status = slow_read
    window.show_page("updates")
    page = window.pages["updates"]
    checked(qtbot, worker, page.check.click)
    assert facts(page)["Ready to install"] == "1.1.0, at the next quiet moment"
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _r: tag == "update_status"
    ):
        release.set()
    assert facts(page)["Ready to install"] == "1.1.0, at the next quiet moment"
    assert window.banner.text().startswith("Version 1.1.0 is downloaded and verified")
