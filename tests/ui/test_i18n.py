"""English and Greek: every UI text exists in both, and switching re-translates the window and tray live."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from PySide6.QtCore import QLocale

from agent import messages
from tests.ui.fakes import make_status
from ui import strings
from ui.present import Action

GREEK = re.compile(r"[\u0370-\u03ff]")


@pytest.mark.parametrize("key", strings.ui_keys())
def test_every_ui_text_has_english_and_greek(key):
    english, greek = messages.text(key, "en"), messages.text(key, "el")
    assert english and greek and english != key
    if GREEK.search(greek) is None:
        # Only names, placeholders and symbols may stay the same in Greek.
        names = re.sub(r"POSPal License Agent|POSPal|Email|\{\w+\}", "", greek)
        assert english == greek and not re.search(r"[a-z]{4,}", names)


def test_switching_to_greek_re_translates_card_and_menu(qtbot, ui, control):
    worker, window, tray = ui
    with qtbot.waitSignal(worker.status_changed):
        control.set_status(make_status("licensed_grace", days_left=3))
    assert window.card.headline.text() == "Licensed, offline"

    with qtbot.waitSignal(strings.language.language_changed):
        window.language_box.setCurrentIndex(1)

    assert window.card.headline.text() == "Ενεργή άδεια, εκτός σύνδεσης"
    assert "μέσα σε 3 ημέρες" in window.card.detail.text()
    assert window.card.labels["last_sync"].text() == "Τελευταίος συγχρονισμός"
    assert window.card.values["end"].text() == "29 Νοεμβρίου 2026"
    assert window.pages["overview"].buttons[Action.SYNC].text() == "Συγχρονισμός τώρα"
    menu = [a.text() for a in tray.menu.actions() if not a.isSeparator()]
    assert menu == [
        "Ενεργή άδεια, εκτός σύνδεσης",
        "Άνοιγμα POSPal Agent",
        "Συγχρονισμός τώρα",
        "Διαχείριση συνδρομής",
        "Έλεγχος για ενημερώσεις",
        "Έξοδος",
    ]
    assert tray.icon.toolTip() == "POSPal: Ενεργή άδεια, εκτός σύνδεσης, απομένουν 3 ημέρες"
    assert window.windowTitle() == "POSPal License Agent"

    window.language_box.setCurrentIndex(0)
    assert window.card.headline.text() == "Licensed, offline"


def test_a_message_on_screen_is_re_translated(qtbot, ui, control):
    worker, window, _ = ui
    window.show_page("activate")
    window.pages["activate"].email.setText("nope")
    window.pages["activate"].send.click()
    assert window.banner.text() == "Enter a valid email address."
    strings.language.set("el")
    assert window.banner.text() == "Εισαγάγετε έγκυρη διεύθυνση email."
    assert window.pages["activate"].title.text() == "Ενεργοποίηση υπολογιστή"


@pytest.mark.parametrize(("locale", "expected"), [("el_GR", "el"), ("en_US", "en"), ("de_DE", "en")])
def test_language_follows_the_locale(locale, expected):
    assert strings.system_language(QLocale(locale)) == expected


def test_a_greek_system_starts_in_greek():
    env = {**os.environ, "LANG": "el_GR.UTF-8", "LC_ALL": "el_GR.UTF-8", "LANGUAGE": "el"}
    code = "from ui.strings import system_language; print(system_language())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "el"


@pytest.mark.parametrize("reason", ["service_stopped", "service_not_genuine"])
def test_the_tray_says_in_greek_and_english_when_it_cannot_reach_the_service(reason):
    from agent.link.channelcontrol import stopped_status
    from ui.present import Kind, present

    try:
        for lang in ("el", "en"):
            strings.language.set(lang)
            view = present(stopped_status(reason, lang))
            assert view.kind is Kind.STOPPED
            assert view.detail.startswith(messages.text(f"channel.{reason}", lang))
            assert (GREEK.search(view.detail) is not None) == (lang == "el")
    finally:
        strings.language.set("en")
