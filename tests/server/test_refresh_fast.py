"""server.api.refresh_fast: the headers a refresh is checked with read as Starlette's would."""

from __future__ import annotations

from starlette.datastructures import Headers

from server.api.refresh_fast import RequestHeaders


def test_request_headers_give_what_starlette_gives_in_any_case_first_value_first():
    raw = [
        (b"x-pospal-nonce", b"a" * 32),
        (b"X-POSPal-Nonce", b"b" * 32),  # a second value: the first one counts, as in Starlette
        (b"x-pospal-machine", b"m_till1"),
        (b"user-agent", b"pospal-agent/1.2 caf\xe9"),  # latin-1, as HTTP headers are
    ]
    ours, starlette = RequestHeaders(raw), Headers(raw=raw)
    for name in ("X-POSPal-Nonce", "x-pospal-nonce", "X-POSPAL-MACHINE", "User-Agent", "X-POSPal-Signature"):
        assert ours.get(name) == starlette.get(name)
        assert (name in ours) == (name in starlette)
    assert ours.get("x-pospal-signature", "") == ""
    assert ours["X-POSPal-Machine"] == "m_till1"
