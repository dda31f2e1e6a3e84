"""Sealing local state (agent/vault/seal.py): a MAC under the machine key, which is not in the sealed file."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.vault.seal import SEAL_FIELD, Seal, seal_key, seal_state, unseal_state


def _seal() -> Seal:
    return Seal(seal_key(Ed25519PrivateKey.generate()))


def test_a_sealed_state_unseals_and_any_edit_breaks_it():
    seal = _seal()
    data = {"token": "a.b.c", "high_water": 1_700_000_000, "nested": {"x": [1, 2.5, None, True]}}
    sealed = seal_state(data, seal)
    assert unseal_state(sealed, seal) == (data, True)
    for edit in ({"high_water": 1_600_000_000}, {"token": "a.b.d"}, {"extra": 1}):
        assert unseal_state({**sealed, **edit}, seal)[1] is False
    assert unseal_state({k: v for k, v in sealed.items() if k != "token"}, seal)[1] is False


def test_another_machines_key_does_not_verify_and_no_key_means_unsealed():
    sealed = seal_state({"token": "t"}, _seal())
    assert unseal_state(sealed, _seal())[1] is False
    assert unseal_state(sealed, None)[1] is False
    assert SEAL_FIELD not in seal_state({"token": "t"}, None)


def test_a_mac_of_the_wrong_type_is_simply_invalid():
    seal = _seal()
    for mac in (None, 5, ["x"], {"a": 1}, "é" * 64, "\udcff"):
        assert seal.verify({"a": 1}, mac) is False


def test_the_key_is_stable_per_machine_key_and_hidden_from_repr():
    key = Ed25519PrivateKey.generate()
    assert seal_key(key) == seal_key(key) and len(seal_key(key)) == 32
    assert "hidden" in repr(Seal(seal_key(key)))
