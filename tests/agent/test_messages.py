"""The shared en/el message catalogue (agent/messages.py)."""

from __future__ import annotations

import re

import pytest

from agent import messages


def test_every_entry_has_english_and_real_greek():
    for key in messages.keys():
        en, el = messages.text(key, "en"), messages.text(key, "el")
        if key.startswith(("status.", "fix.")) and en:
            assert re.search("[α-ωΑ-Ω]", el), key


def test_register_adds_to_the_same_catalogue_and_requires_both_languages():
    messages.register({"test.hello": {"en": "Hello {name}", "el": "Γεια σου {name}"}})
    assert messages.text("test.hello", "el", name="Νίκο") == "Γεια σου Νίκο"
    assert messages.text("test.hello", "fr", name="Nick") == "Hello Nick"
    with pytest.raises(ValueError, match="test.half"):
        messages.register({"test.half": {"en": "Only English"}})
    assert not messages.has("test.half")


def test_unknown_key_is_visible_not_fatal():
    assert messages.text("no.such.key", "el") == "no.such.key"


def test_days_and_dates():
    assert (messages.days(1), messages.days(3), messages.days(1, "el"), messages.days(2, "el")) == \
        ("1 day", "3 days", "1 ημέρα", "2 ημέρες")
    assert (messages.date(2026, 3, 7), messages.date(2026, 3, 7, "el")) == ("7 Mar 2026", "07/03/2026")
