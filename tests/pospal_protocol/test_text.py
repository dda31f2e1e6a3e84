"""The text rule (pospal_protocol/text.py): which characters a typed name may not hold, and how output shows
them."""

from __future__ import annotations

import pytest

from pospal_protocol import text

HOSTILE = ["Bar\x1b[31m", "Bar\x00", "Bar\x7f", "Bar\u009b2J", "Bar\u202eraB", "Bar\u2066x\u2069", "a\u2028b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_control_c1_and_bidi_characters_are_refused_and_escaped(value):
    assert text.problem(value) is not None
    with pytest.raises(ValueError):
        text.check(value)
    shown = text.escape(value)
    assert text.problem(shown) is None and "\\u" in shown


@pytest.mark.parametrize("value", ["Beach bar", "Ταβέρνα Ο Νίκος", "Café №1 (πάνω)", "👨\u200d🍳 Chef"])
def test_ordinary_names_in_any_script_pass_unchanged(value):
    assert text.problem(value) is None and text.check(value) == value and text.escape(value) == value


def test_escape_all_reaches_nested_values_and_keys():
    data = {"name\u202e": ["a\u009b", ("b\x1b",)], "n": 5}
    assert text.escape_all(data) == {"name\\u202e": ["a\\u009b", ["b\\u001b"]], "n": 5}


def test_an_email_address_with_c1_or_bidi_characters_is_not_an_address():
    from pospal_protocol.emails import is_email

    assert is_email("owner@cafe.gr")
    assert not is_email("owner\u202e@cafe.gr") and not is_email("owner@cafe\u009b.gr")
