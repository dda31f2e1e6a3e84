"""server.signing: key files 0600 made on first run, rotation signed by the previous key, JWKS horizon."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest

from agent.errors import KeySetRejected
from pospal_protocol.tokens import verify_token
from pospal_protocol.trust import TrustedKeys, decode_public_key
from server.errors import SigningError
from server.signing import SigningKeys, load_server_secret
from tests.agent.tokenkit import Authority
from tests.server.conftest import token_claims


def trust(keys, session, now):
    return TrustedKeys([decode_public_key(k["x"]) for k in keys.jwks(session, now)["keys"]])


def test_first_run_makes_one_private_key_file_readable_only_by_the_owner(database, clock, tmp_path):
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        kid = keys.ensure_current(session, clock.now())
        assert keys.ensure_current(session, clock.now()) == kid
    path = tmp_path / "keys" / f"{kid}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in path.read_bytes()


def test_tokens_verify_with_the_published_key(database, clock, tmp_path):
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        keys.ensure_current(session, clock.now())
        token = keys.sign(session, _claims(clock))
        assert verify_token(token, trust(keys, session, clock.now()), clock.now()).sub == "lic_1"


def test_rotation_reaches_agents_only_through_the_published_authority_document(database, clock, tmp_path):
    """The document `rotate` signs with the old (online) key is refused; the offline authority's copy in
    the key directory is what agents are sent, and it makes the new key trusted."""
    authority = Authority()
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        old = keys.ensure_current(session, clock.now())
        agent_trust = TrustedKeys.from_jwks(authority.anchors(keys.jwks(session, clock.now())))
        old_token = keys.sign(session, _claims(clock))
        new, legacy = keys.rotate(session, clock.now())
        assert keys.current_kid(session) == new != old
        new_token = keys.sign(session, _claims(clock))
        assert keys.keyset_for(session, [old], clock.now()) == legacy
        with pytest.raises(KeySetRejected):
            agent_trust.apply_keyset_update(legacy)
        (tmp_path / "keys" / "keyset.json").write_text(authority.keyset(1, keys.jwks(session, clock.now())))
        document = keys.keyset_for(session, [old], clock.now())
    with pytest.raises(Exception):  # noqa: B017 - any TokenInvalid: the new key is not trusted yet
        verify_token(new_token, agent_trust, clock.now())
    assert agent_trust.apply_keyset_update(document) == [new]
    assert verify_token(new_token, agent_trust, clock.now()).kid == new
    assert verify_token(old_token, agent_trust, clock.now()).kid == old


def test_a_keyset_signed_by_an_unknown_key_is_rejected(database, clock, tmp_path):
    ours, theirs = SigningKeys(tmp_path / "ours"), SigningKeys(tmp_path / "theirs")
    with database.transaction() as session:
        ours.ensure_current(session, clock.now())
        agent_trust = trust(ours, session, clock.now())
    other = tmp_path / "other.db"
    from server.db import Database, upgrade

    other_db = Database(f"sqlite:///{other}")
    upgrade(other_db)
    with other_db.transaction() as session:
        theirs.ensure_current(session, clock.now())
        _, forged = theirs.rotate(session, clock.now())
    other_db.dispose()
    with pytest.raises(KeySetRejected):
        TrustedKeys.from_jwks(Authority().anchors(agent_trust.to_jwks())).apply_keyset_update(forged)


def test_retired_key_leaves_the_jwks_after_one_offline_lease(database, clock, tmp_path):
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        old = keys.ensure_current(session, clock.now())
        new, _ = keys.rotate(session, clock.now())
        assert [k["kid"] for k in keys.jwks(session, clock.now())["keys"]] == [new, old]
        later = clock.now() + timedelta(days=14, seconds=1)
        assert [k["kid"] for k in keys.jwks(session, later)["keys"]] == [new]


def test_missing_private_key_file_is_a_clear_error(database, clock, tmp_path):
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        kid = keys.ensure_current(session, clock.now())
    (tmp_path / "keys" / f"{kid}.pem").unlink()
    fresh = SigningKeys(tmp_path / "keys")
    with database.transaction() as session, pytest.raises(SigningError, match="missing"):
        fresh.ensure_current(session, clock.now())


def test_server_secret_file_is_made_once_with_mode_0600(tmp_path):
    first = load_server_secret(tmp_path / "keys")
    assert load_server_secret(tmp_path / "keys") == first
    assert len(first) == 64
    assert stat.S_IMODE((tmp_path / "keys" / "server-secret").stat().st_mode) == 0o600
    assert load_server_secret(tmp_path / "keys", "configured") == b"configured"


def test_app_serves_jwks_without_private_parts(client):
    keys = client.get("/v1/keys").json()["keys"]
    assert len(keys) == 1
    assert set(keys[0]) == {"kty", "crv", "x", "kid", "use"}


def _claims(clock):
    iat = int(clock.now().timestamp())
    return {
        "iss": "pospal",
        "aud": "pospal-agent",
        "sub": "lic_1",
        "kind": "license",
        "mid": "m_1",
        "fp": {},
        "status": "active",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 1209600,
        "srv": iat,
        "policy": {},
    }


del token_claims


def test_a_prepared_key_signs_nothing_until_rotate_makes_it_current(database, clock, tmp_path):
    """`prepare` lets the publisher list the next key in a key set before any token is signed with it."""
    keys = SigningKeys(tmp_path / "keys")
    with database.transaction() as session:
        old = keys.ensure_current(session, clock.now())
        nxt = keys.prepare()
        assert keys.prepare() == nxt != old  # asking again keeps the same next key
        assert keys.current_kid(session) == old
        assert verify_token(
            keys.sign(session, _claims(clock)), trust(keys, session, clock.now()), clock.now()
        )
        assert [k["kid"] for k in keys.next_jwks(session, clock.now())["keys"]] == [old, nxt]
        assert [k["kid"] for k in keys.jwks(session, clock.now())["keys"]] == [old]  # not published yet
    again = SigningKeys(tmp_path / "keys")  # another instance (or the CLI later) finds it
    with database.transaction() as session:
        new, _ = again.rotate(session, clock.now())
        assert new == nxt == again.current_kid(session)
    assert not (tmp_path / "keys" / "next-key").exists()
