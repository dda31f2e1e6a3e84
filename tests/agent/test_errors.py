"""The agent's error tree (agent/errors.py)."""

from __future__ import annotations

import inspect

from agent import errors


def test_every_error_descends_from_the_one_root_and_carries_a_message():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.Error)
        assert cls.__name__ in errors.__doc__, f"{cls.__name__} missing from the tree drawing"


def test_token_errors_say_why():
    exc = errors.MachineMismatch("fingerprint", "bound elsewhere")
    assert isinstance(exc, errors.TokenInvalid)
    assert (exc.reason, exc.message) == ("fingerprint", "bound elsewhere")
    assert "nbf" in errors.TokenInvalid("nbf").message


def test_server_refused_keeps_code_and_extra():
    exc = errors.ServerRefused("seats_full", "All seats are in use.", {"terminals": [{"machine_id": "m_1"}]})
    assert isinstance(exc, errors.TransportError)
    assert (exc.code, exc.message, exc.extra["terminals"][0]["machine_id"]) == (
        "seats_full",
        "All seats are in use.",
        "m_1",
    )
    assert str(exc) == "All seats are in use."
