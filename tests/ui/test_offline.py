"""The window's activation by file (ui/offline.py) and the language choice reaching the agent."""

from __future__ import annotations

from ui import strings


def test_the_request_file_is_saved_where_the_owner_chose(qtbot, ui, control, tmp_path):
    worker, window, _ = ui
    window.show_page("activate")
    window.pages["activate"].by_file.click()
    assert window.page == "offline"
    page = window.pages["offline"]
    qtbot.waitUntil(lambda: "https://license.pospal.gr/offline" in page.intro.text(), timeout=2000)
    target = tmp_path / "usb" / "request.json"
    target.parent.mkdir()
    page.choose_save_path = lambda _parent, _name: str(target)
    with qtbot.waitSignal(worker.action_finished, timeout=2000):
        page.save.click()
    assert target.read_bytes().startswith(b'{"type": "pospal-offline-request"}')
    assert str(target) in window.banner.text()
    assert "https://license.pospal.gr/offline" in window.banner.text()  # where to take it next


def test_an_imported_license_file_shows_the_offline_license_and_its_end(qtbot, ui, control, tmp_path):
    worker, window, _ = ui
    window.show_page("offline")
    page = window.pages["offline"]
    good = tmp_path / "pospal-license.json"
    good.write_bytes(b"GOOD")
    page.choose_open_path = lambda _parent, _name: str(good)
    with qtbot.waitSignal(worker.status_changed, timeout=2000):
        page.load.click()
    qtbot.waitUntil(lambda: window.page == "overview", timeout=2000)
    assert "Offline license until" in window.card.detail.text()
    assert control.called("import_offline_license") == 1


def test_a_refused_license_file_says_why_and_stays_on_the_page(qtbot, ui, control, tmp_path):
    worker, window, _ = ui
    window.show_page("offline")
    page = window.pages["offline"]
    bad = tmp_path / "other.json"
    bad.write_bytes(b"OTHER")
    page.choose_open_path = lambda _parent, _name: str(bad)
    with qtbot.waitSignal(worker.action_failed, timeout=2000):
        page.load.click()
    assert window.page == "offline"
    assert window.banner.text() == "This license file was made for another computer."
    assert page.load.isEnabled()


def test_choosing_greek_in_the_window_tells_the_agent(qtbot, ui, control):
    worker, window, _ = ui
    with qtbot.waitSignal(
        worker.action_finished, timeout=2000, check_params_cb=lambda tag, _result: tag == "set_language"
    ):
        window.language_box.setCurrentIndex(1)
    assert strings.language.code == "el"
    assert ("set_language", ("el",)) in control.calls


def test_no_window_text_falls_back_to_english_for_any_state_reason_or_refusal(qtbot):
    """Every state and reason the agent can give, and every refusal, is drawn from the Greek catalogue."""
    from agent import messages
    from agent.core.state import ERROR_REASONS
    from agent.errors import Offline, ServerRefused
    from tests.agent.test_state import CATALOGUE_REASONS, ROWS
    from tests.ui.fakes import make_status
    from ui.errortext import _REFUSALS, describe
    from ui.present import present

    strings.language.set("el")
    try:
        messages.clear_fallbacks()
        pairs = {(r.state, r.reason) for r in ROWS} | {("licensed_active", "offline_license")}
        pairs |= {("license_error", reason) for reason in ERROR_REASONS}
        pairs.add(("licensed_renewal_required", "payment_action_required"))  # 3-D Secure (issue 14)
        assert {reason for _, reason in pairs} >= CATALOGUE_REASONS
        for state, reason in sorted(pairs):
            view = present(make_status(state, reason=reason))
            assert view.headline and view.detail
        for code in (*_REFUSALS, "rate_limited", "checkout_expired", "bad_signature"):
            assert describe(ServerRefused(code, "English text from the server"))
        assert describe(Offline("down"))
        assert messages.fallbacks() == []
    finally:
        strings.language.set("en")
