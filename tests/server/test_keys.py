"""GET /v1/keys after rotation: the new key first, the retired one still published while tokens live."""

from __future__ import annotations

from datetime import timedelta


def test_keys_lists_current_and_retired_until_the_lease_ends(client, app, clock):
    old = client.get("/v1/keys").json()["keys"][0]["kid"]
    services = app.state.services
    with services.db.transaction() as session:
        new, document = services.keys.rotate(session, clock.now())
    assert document
    assert [k["kid"] for k in client.get("/v1/keys").json()["keys"]] == [new, old]
    clock.advance(timedelta(days=14, seconds=1).total_seconds())
    assert [k["kid"] for k in client.get("/v1/keys").json()["keys"]] == [new]


def test_new_tokens_are_signed_with_the_rotated_key(client, app, clock, make_machine):
    import jwt

    machine = make_machine()
    machine.start_trial(client)
    services = app.state.services
    with services.db.transaction() as session:
        new, _ = services.keys.rotate(session, clock.now())
    token = machine.refresh(client).json()["token"]
    assert jwt.get_unverified_header(token)["kid"] == new
