"""pospal_client.trust: the POS's roots are the agent's shipped keys plus, in development only, the JWKS
file POSPAL_TRUSTED_KEYS names (the demo's trust file), exactly as the agent's; a release build (frozen,
or `pospal_client._build.RELEASE`) ignores it. Learned updates are kept as signed documents and
re-verified from the roots at every load.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pospal_client import trust

from pospal_protocol.errors import ConfigError
from pospal_protocol.tokens import make_keyset_document
from pospal_protocol.trust import TrustedKeys, jwk_from_public_key, kid_for
from tests.agent.tokenkit import Authority, Signer


def jwks_file(tmp_path, key) -> str:
    path = tmp_path / "trusted-keys.json"
    path.write_text(json.dumps({"keys": [jwk_from_public_key(key.public_key())]}))
    return str(path)


def test_the_roots_are_the_agents_shipped_keys():
    shipped = {k["kid"] for k in trust.bundled_jwks()["keys"]}
    assert set(trust.default_roots({}).kids()) == shipped


def test_a_development_tree_adds_the_demo_trust_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    roots = trust.default_roots({"POSPAL_TRUSTED_KEYS": jwks_file(tmp_path, key)})
    assert kid_for(key.public_key()) in roots.kids()


@pytest.mark.parametrize("how", ["frozen", "build module"])
def test_a_release_build_ignores_the_trust_path(tmp_path, monkeypatch, how):
    if how == "frozen":
        monkeypatch.setattr(sys, "frozen", True, raising=False)
    else:
        monkeypatch.setitem(sys.modules, "pospal_client._build", types.SimpleNamespace(RELEASE=True))
    key = Ed25519PrivateKey.generate()
    roots = trust.default_roots({"POSPAL_TRUSTED_KEYS": jwks_file(tmp_path, key)})
    assert kid_for(key.public_key()) not in roots.kids()


def test_an_unreadable_trust_path_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="POSPAL_TRUSTED_KEYS"):
        trust.default_roots({"POSPAL_TRUSTED_KEYS": str(tmp_path / "missing.json")})


def test_learned_keys_persist_as_documents_and_reverify_from_the_roots(tmp_path):
    old, new, authority = Signer(), Signer(), Authority()
    update = authority.keyset(1, [new.jwk()])

    def roots(anchor: Authority) -> TrustedKeys:
        return TrustedKeys.from_jwks(anchor.anchors({"keys": [old.jwk()]}))

    path = tmp_path / "state" / "key-updates.json"
    store = trust.TrustStore(roots(authority), path)
    assert store.learn([update]) == [new.kid]
    assert json.loads(path.read_text()) == {"keyset_updates": [update]}
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temporary file left
    again = trust.TrustStore(roots(authority), path)
    assert new.kid in again.keys.kids()
    stranger = trust.TrustStore(roots(Authority()), path)
    assert new.kid not in stranger.keys.kids()  # the file alone proves nothing


def test_a_keyset_signed_by_the_old_online_key_teaches_the_pos_nothing(tmp_path):
    old, thief = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    update = make_keyset_document(
        old, kid_for(old.public_key()), [jwk_from_public_key(thief.public_key())], 1
    )
    anchors = Authority().anchors({"keys": [jwk_from_public_key(old.public_key())]})
    store = trust.TrustStore(TrustedKeys.from_jwks(anchors), tmp_path / "key-updates.json")
    assert store.learn([update]) == []
    assert kid_for(thief.public_key()) not in store.keys.kids()


def test_the_default_trust_file_is_per_user(monkeypatch):
    assert trust.default_trust_file({"HOME": "/home/till"}).parts[:3] == ("/", "home", "till")
