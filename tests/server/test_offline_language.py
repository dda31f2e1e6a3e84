"""The `/offline` page speaks the request file's language (issue 27, item 5): a Greek till's file gets
Greek answers even from a browser set to English."""

from __future__ import annotations

from tests.server.test_offline import EMAIL, _request_file, _round_trip


def test_a_greek_tills_request_file_is_answered_in_greek_from_an_english_browser(
    client, database, seed_subscription, make_machine, clock
):
    seed_subscription(email=EMAIL, seats=1)
    machine = make_machine()
    greek = _request_file(machine, clock, locale="el")
    answer = _round_trip(client, database, machine, clock, lang="en", file=greek, code="000000")
    assert answer.status_code == 401
    assert "Δεν έγινε" in answer.text, answer.text
    assert "lang=el" in answer.text  # "try again" leads back to the Greek page
    english = _round_trip(client, database, machine, clock, lang="el", code="000000")
    assert english.status_code == 401 and "That did not work" in english.text and "lang=en" in english.text
