"""Trusted keys (pospal_protocol/trust.py): key-set documents signed by the offline authority (threshold,
revocation, rollback; a token key's signature counts for none), JWKs, the bundled and configured key files."""

from __future__ import annotations

import json

import pytest

from agent.core import anchors
from agent.errors import ConfigError, KeyInvalid, KeySetRejected, TokenInvalid
from pospal_protocol import tokens, trust
from tests.agent.tokenkit import NOW, NOW_TS, Signer

SERVER = Signer()


AUTHORITY = [Signer(), Signer()]


def authority_trust(*roots: Signer, threshold: int = 1) -> trust.TrustedKeys:
    """Trusted keys whose anchors name the offline key-set authority (threshold of AUTHORITY)."""
    return trust.TrustedKeys.from_jwks(
        {
            "keys": [r.jwk() for r in roots],
            "keyset_authority": {"threshold": threshold, "keys": [a.jwk() for a in AUTHORITY]},
        }
    )


def keyset(version: int, keys: list[Signer], revoked=(), signers=AUTHORITY[:1]) -> str:
    """A key-set document signed by `signers` (the authority, unless a test says otherwise)."""
    return tokens.make_authority_keyset(
        [(s.key, s.kid) for s in signers],
        version=version,
        keys=[k.jwk() for k in keys],
        revoked=[r.kid for r in revoked],
        iat=NOW_TS,
    )


def test_keyset_signed_by_the_offline_authority_adds_the_new_key():
    trusted = authority_trust(SERVER)
    new = Signer()
    doc = keyset(1, [new, SERVER])
    assert trusted.apply_keyset_update(doc) == [new.kid]
    assert tokens.verify_token(new.sign(), trusted, NOW).kid == new.kid
    assert tokens.verify_token(SERVER.sign(), trusted, NOW).kid == SERVER.kid  # old tokens stay valid
    assert trusted.accepted_updates == [doc] and trusted.keyset_version == 1
    assert trusted.apply_keyset_update(doc) == []  # replaying changes nothing


def test_a_keyset_update_signed_only_by_the_online_token_key_is_refused():
    """The thief of the server's token key cannot add a key of their own to a till, in either format."""
    trusted = authority_trust(SERVER)
    thief = Signer()
    legacy = tokens.make_keyset_document(SERVER.key, SERVER.kid, [thief.jwk()], NOW_TS)
    as_authority = keyset(1, [thief], signers=[SERVER])
    for doc in (legacy, as_authority):
        with pytest.raises(KeySetRejected):
            trusted.apply_keyset_update(doc)
    assert trusted.apply_chain([legacy, as_authority]) == []
    assert trusted.kids() == [SERVER.kid] and trusted.accepted_updates == []
    with pytest.raises(TokenInvalid):
        tokens.verify_token(thief.sign(), trusted, NOW)


def test_without_an_authority_in_the_anchors_no_keyset_is_accepted():
    with pytest.raises(KeySetRejected):
        SERVER.trusted().apply_keyset_update(keyset(1, [Signer()]))


def test_a_threshold_needs_that_many_distinct_authority_keys():
    trusted = authority_trust(SERVER, threshold=2)
    new = Signer()
    one = keyset(1, [new])
    twice_the_same = json.loads(one)
    twice_the_same["signatures"] *= 2
    for doc in (one, json.dumps(twice_the_same), keyset(1, [new], signers=[AUTHORITY[0], SERVER])):
        with pytest.raises(KeySetRejected):
            trusted.apply_keyset_update(doc)
    assert trusted.apply_keyset_update(keyset(1, [new], signers=AUTHORITY)) == [new.kid]


def test_a_stolen_online_key_is_refused_after_its_revocation():
    """Revoked in a newer document: tokens it signs are refused, and neither an older document nor its
    own signature brings it back."""
    stolen, successor = SERVER, Signer()
    trusted = authority_trust(stolen)
    before = keyset(1, [stolen])
    trusted.apply_keyset_update(before)
    assert trusted.apply_keyset_update(keyset(2, [successor], revoked=[stolen])) == [successor.kid]
    with pytest.raises(TokenInvalid, match="does not trust"):
        tokens.verify_token(stolen.sign(), trusted, NOW)
    assert tokens.verify_token(successor.sign(), trusted, NOW).kid == successor.kid
    with pytest.raises(KeySetRejected, match="older"):
        trusted.apply_keyset_update(before)  # rollback to before the revocation
    assert trusted.apply_chain([before, keyset(1, [stolen], signers=[stolen])]) == []
    assert stolen.kid not in trusted and trusted.revoked == {stolen.kid}


def test_an_edited_keyset_payload_breaks_its_signature():
    trusted = authority_trust(SERVER)
    doc = json.loads(keyset(1, [SERVER]))
    payload = json.loads(trust.b64url_decode(doc["payload"]))
    payload["keys"].append(Signer().jwk())
    doc["payload"] = trust.b64url_encode(json.dumps(payload).encode())
    with pytest.raises(KeySetRejected):
        trusted.apply_keyset_update(json.dumps(doc))


def test_unsigned_jwks_is_never_an_update():
    with pytest.raises(KeySetRejected):
        SERVER.trusted().apply_keyset_update(json.dumps({"keys": [Signer().jwk()]}))


def test_keyset_with_mismatched_kid_is_rejected():
    bad = dict(Signer().jwk(), kid="0123456789abcdef")
    with pytest.raises(KeyInvalid):
        tokens.make_keyset_document(SERVER.key, SERVER.kid, [bad], NOW_TS)
    with pytest.raises(KeyInvalid):
        trust.public_key_from_jwk(bad)


def test_private_jwk_is_refused():
    with pytest.raises(KeyInvalid):
        trust.public_key_from_jwk(dict(SERVER.jwk(), d="c2VjcmV0"))


def test_persisted_updates_are_reverified_and_the_newest_wins(tmp_path):
    k2, k3 = Signer(), Signer()
    doc1, doc2 = keyset(1, [k2]), keyset(2, [k3], revoked=[k2])
    roots = tmp_path / "jwks.json"
    roots.write_text(json.dumps(authority_trust(SERVER).to_jwks()))
    forged = keyset(3, [Signer()], signers=[Signer()])
    trusted = anchors.load_trusted_keys(roots, [doc2, forged, doc1])
    assert set(trusted.kids()) == {SERVER.kid, k3.kid}
    assert trusted.accepted_updates == [doc2]
    assert anchors.load_trusted_keys(None, [doc1, doc2]).kids() == []  # no anchors: nothing applies


def test_bundled_keys_are_public_only():
    doc = anchors.bundled_jwks()
    assert isinstance(doc["keys"], list)
    assert all("d" not in jwk for jwk in doc["keys"])


@pytest.mark.parametrize("content", ["not json", '{"keys": [{"kty": "RSA"}]}', '{"nokeys": 1}'])
def test_bad_trusted_keys_file_is_a_config_error(tmp_path, content):
    path = tmp_path / "jwks.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="POSPAL_TRUSTED_KEYS"):
        anchors.load_trusted_keys(path)


def test_jwk_round_trip():
    jwk = SERVER.jwk()
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["kid"]) == ("OKP", "Ed25519", "sig", SERVER.kid)
    assert trust.kid_for(trust.public_key_from_jwk(jwk)) == SERVER.kid
    assert trust.TrustedKeys.from_jwks(SERVER.trusted().to_jwks()).kids() == [SERVER.kid]
