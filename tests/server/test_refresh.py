"""POST /v1/refresh and /v1/deactivate: signed by the machine key, replays refused, revocation signed."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pospal_protocol.tokens import verify_token
from pospal_protocol.trust import TrustedKeys, decode_public_key
from server.api.refresh import SodiumVerifiedKey
from tests.agent.tokenkit import Authority
from tests.server.conftest import token_claims


def trusted(client) -> TrustedKeys:
    keys = client.get("/v1/keys").json()["keys"]
    return TrustedKeys([decode_public_key(k["x"]) for k in keys])


def test_refresh_returns_a_token_the_agent_verifies(
    client, make_machine, seed_subscription, login_code, clock
):
    seed_subscription(email="owner@cafe.gr", seats=2)
    machine = make_machine()
    assert machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    clock.advance(hours=6)
    response = machine.refresh(client)
    assert response.status_code == 200, response.text
    claims = verify_token(response.json()["token"], trusted(client), clock.now())
    assert claims.status == "active"
    assert claims.mid == machine.machine_id
    assert claims.iat == int(clock.now().timestamp())
    assert claims.exp - claims.iat == 14 * 86400


def test_refresh_signed_by_another_machines_key_gets_401(client, make_machine):
    victim, attacker = make_machine(), make_machine()
    assert victim.start_trial(client).status_code == 200
    # The attacker knows the victim's machine id but signs with its own key.
    response = victim.refresh(client, key=attacker.key)
    assert response.status_code == 401
    assert response.json()["error"] == "bad_signature"


def test_replayed_refresh_is_refused(client, make_machine):
    machine = make_machine()
    machine.start_trial(client)
    raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp})
    first = client.post("/v1/refresh", content=raw, headers=headers)
    again = client.post("/v1/refresh", content=raw, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 409
    assert again.json()["error"] == "replay"


def test_stale_timestamp_is_refused_as_replay(client, make_machine, clock):
    machine = make_machine()
    machine.start_trial(client)
    old = int(clock.now().timestamp()) - 301
    response = machine.refresh(client, ts=old)
    assert response.status_code == 409
    assert response.json()["error"] == "replay"


def test_unknown_machine_and_unsigned_requests_get_401(client, make_machine):
    machine = make_machine(machine_id="m_doesnotexist")
    assert machine.refresh(client).json()["error"] == "unknown_machine"
    unsigned = client.post("/v1/refresh", json={"fingerprint": {}})
    assert unsigned.status_code == 401
    assert unsigned.json()["error"] == "bad_signature"


def test_tampered_body_fails_the_signature(client, make_machine):
    machine = make_machine()
    machine.start_trial(client)
    raw, headers = machine.signed("/v1/refresh", {"fingerprint": machine.fp, "known_kids": []})
    tampered = raw.replace(b'"known_kids": []', b'"known_kids": ["abc"]')
    assert tampered != raw
    response = client.post("/v1/refresh", content=tampered, headers=headers)
    assert response.status_code == 401


def test_deactivated_machine_gets_a_signed_revoked_token(
    client, make_machine, seed_subscription, login_code, clock
):
    _, _, license_id = seed_subscription(email="owner@cafe.gr")
    machine = make_machine()
    machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    assert machine.post(client, "/v1/deactivate", {}).json() == {"ok": True}
    response = machine.refresh(client)
    assert response.status_code == 200
    claims = verify_token(response.json()["token"], trusted(client), clock.now())
    assert claims.status == "revoked"
    assert claims.sub == license_id


def test_one_replaced_part_heals_the_binding_and_is_audited(client, make_machine, database):
    from server.models import AuditLog

    machine = make_machine()
    machine.start_trial(client)
    machine.fp = {**machine.fp, "disk_serial": "ff" * 32}
    claims = token_claims(machine.refresh(client).json()["token"])
    assert claims["fp"]["disk_serial"] == "ff" * 32
    with database.transaction() as session:
        audit = session.query(AuditLog).filter_by(action="machine.fingerprint_rebound").one()
    assert (audit.machine_id, audit.detail) == (machine.machine_id, {"components": ["disk_serial"]})


def test_a_different_computer_does_not_rebind(client, make_machine):
    machine = make_machine()
    machine.start_trial(client)
    original = dict(machine.fp)
    machine.fp = {name: "00" * 32 for name in machine.fp}
    claims = token_claims(machine.refresh(client).json()["token"])
    assert claims["fp"] == original


def test_refresh_sends_the_published_authority_keyset_after_rotation(client, app, clock, make_machine):
    machine = make_machine()
    machine.start_trial(client)
    old_kid = client.get("/v1/keys").json()["keys"][0]["kid"]
    authority = Authority()
    old_trust = TrustedKeys.from_jwks(authority.anchors(client.get("/v1/keys").json()))
    services = app.state.services
    with services.db.transaction() as session:
        new_kid, _legacy = services.keys.rotate(session, clock.now())
        published = authority.keyset(1, services.keys.jwks(session, clock.now()))
    (services.keys.key_dir / "keyset.json").write_text(published)
    response = machine.post(client, "/v1/refresh", {"fingerprint": machine.fp, "known_kids": [old_kid]})
    body = response.json()
    assert body["keyset"] == published
    assert new_kid not in old_trust
    assert old_trust.apply_keyset_update(body["keyset"]) == [new_kid]
    # With the update applied, the agent verifies the token signed by the new key.
    assert verify_token(body["token"], old_trust, clock.now()).mid == machine.machine_id
    # An agent that already trusts the new key is not sent a document.
    again = machine.post(client, "/v1/refresh", {"fingerprint": machine.fp, "known_kids": [new_kid]})
    assert again.json()["keyset"] is None


def test_the_libsodium_check_accepts_and_refuses_exactly_what_openssl_does():
    private, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    openssl = private.public_key()
    sodium = SodiumVerifiedKey(openssl)
    message = b"POST\n/v1/refresh\n1700000000\n" + b"a" * 32
    good = private.sign(message)
    cases = [
        (good, message),
        (good, message + b"x"),  # tampered
        (other.sign(message), message),  # another machine's key
        (good[:63], message),  # too short: libsodium alone would split the buffer elsewhere
        (good + b"\0", message),  # too long
        (good[:63] + bytes([good[63] ^ 1]), message),  # flipped bit
        (b"", message),
    ]
    for signature, data in cases:
        outcomes = []
        for key in (openssl, sodium):
            try:
                key.verify(signature, data)
                outcomes.append("ok")
            except InvalidSignature:
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1], (signature.hex(), data)
    sodium.verify(good, message)
    with pytest.raises(InvalidSignature):
        sodium.verify(good, message + b"x")
    assert sodium == openssl and sodium.public_bytes_raw() == openssl.public_bytes_raw()
