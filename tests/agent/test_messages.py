"""The shared en/el message catalogue (agent/messages.py)."""

from __future__ import annotations

import re

import pytest

from agent import messages

# Entries that read the same in Greek: names and symbols. Everything else must really be Greek.
SAME_IN_BOTH = {"ui.app_name", "ui.tip_prefix", "ui.none", "ui.field.email"}


@pytest.fixture
def catalogue_snapshot(monkeypatch):
    """Let a test register entries without leaking them into the shared catalogue of later tests."""
    monkeypatch.setattr(messages, "_CATALOGUE", {k: dict(v) for k, v in messages._CATALOGUE.items()})


def test_every_entry_has_english_and_real_greek():
    import ui.strings  # noqa: F401  (registers the window's entries in the same catalogue)

    keys = messages.keys()
    assert any(k.startswith("status.") for k in keys) and any(k.startswith("ui.") for k in keys)
    for key in keys:
        en, el = messages.text(key, "en"), messages.text(key, "el")
        if not en:  # deliberately blank (nothing to fix when all is well): blank in Greek too
            assert el == "", key
        elif key in SAME_IN_BOTH:
            assert el == en, key
        else:
            assert re.search("[α-ωΑ-Ωά-ώΆ-Ώ]", el), (key, el)


def test_register_adds_to_the_same_catalogue_and_requires_both_languages(catalogue_snapshot):
    messages.register({"test.hello": {"en": "Hello {name}", "el": "Γεια σου {name}"}})
    assert messages.text("test.hello", "el", name="Νίκο") == "Γεια σου Νίκο"
    assert messages.text("test.hello", "fr", name="Nick") == "Hello Nick"
    with pytest.raises(ValueError, match="test.half"):
        messages.register({"test.half": {"en": "Only English"}})
    assert not messages.has("test.half")


def test_a_registering_test_leaves_the_shared_catalogue_as_it_was():
    assert not messages.has("test.hello")


def test_unknown_key_is_visible_not_fatal():
    assert messages.text("no.such.key", "el") == "no.such.key"


def test_days_and_dates():
    assert (messages.days(1), messages.days(3), messages.days(1, "el"), messages.days(2, "el")) == (
        "1 day",
        "3 days",
        "1 ημέρα",
        "2 ημέρες",
    )
    assert (messages.date(2026, 3, 7), messages.date(2026, 3, 7, "el")) == ("7 Mar 2026", "07/03/2026")
