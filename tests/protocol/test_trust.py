"""Trusted keys (agent/trust.py): key-set updates signed by a trusted key, JWKs, the bundled and
configured key files."""

from __future__ import annotations

import json

import pytest

from agent import anchors
from agent.errors import ConfigError, KeyInvalid, KeySetRejected
from protocol import tokens, trust
from tests.agent.tokenkit import NOW, NOW_TS, Signer

SERVER = Signer()


def test_keyset_update_signed_by_trusted_key_adds_the_new_key():
    trusted = SERVER.trusted()
    new = Signer()
    doc = tokens.make_keyset_document(SERVER.key, SERVER.kid, {"keys": [new.jwk(), SERVER.jwk()]}, NOW_TS)
    assert trusted.apply_keyset_update(doc) == [new.kid]
    assert tokens.verify_token(new.sign(), trusted, NOW).kid == new.kid
    assert tokens.verify_token(SERVER.sign(), trusted, NOW).kid == SERVER.kid  # old tokens stay valid
    assert trusted.accepted_updates == [doc]
    assert trusted.apply_keyset_update(doc) == []  # replaying changes nothing


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


def test_persisted_updates_are_reverified_in_any_order(tmp_path):
    k2, k3 = Signer(), Signer()
    doc2 = tokens.make_keyset_document(SERVER.key, SERVER.kid, [k2.jwk()], NOW_TS)
    doc3 = tokens.make_keyset_document(k2.key, k2.kid, [k3.jwk()], NOW_TS + 1)
    roots = tmp_path / "jwks.json"
    roots.write_text(json.dumps({"keys": [SERVER.jwk()]}))
    forged = tokens.make_keyset_document(Signer().key, SERVER.kid, [Signer().jwk()], NOW_TS)
    trusted = anchors.load_trusted_keys(roots, [doc3, forged, doc2])
    assert set(trusted.kids()) == {SERVER.kid, k2.kid, k3.kid}
    assert forged not in trusted.accepted_updates
    assert anchors.load_trusted_keys(None, [doc2, doc3]).kids() == []  # no root: nothing chains


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
