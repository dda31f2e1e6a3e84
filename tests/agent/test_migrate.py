"""Moving a per-user install's identity into the per-machine data dir (agent/vault/migrate.py)."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.vault import migrate, store
from tests.agent.test_store import FakeSealer, MemoryKeyring


def per_user_install(tmp_path, ring):
    """What 1.0 left: state.json in the user's dir and the key in the user's keyring."""
    user = tmp_path / "user"
    key = Ed25519PrivateKey.generate()
    old = store.MachineKeyStore(user, backend=ring)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ring.set_password(store.KEYRING_SERVICE, old.keyring_user, pem)
    store.StateStore(user).save(
        {"machine_id": "m_1", "token": "t", "high_water": 1_800_000_000, "provisional_trial_started": None}
    )
    return user, key


def test_the_first_start_moves_key_and_state_to_the_machine_dir(tmp_path):
    ring, sealer = MemoryKeyring(), FakeSealer()
    user, key = per_user_install(tmp_path, ring)
    machine = tmp_path / "machine"
    moved = migrate.from_user_dir(user, machine, keyring_backend=ring, sealer=sealer)
    assert moved == ["machine key", "license state"]
    new_key = store.MachineKeyStore(machine, backend=MemoryKeyring(), sealer=sealer).load()
    assert new_key.public_key() == key.public_key()
    assert not ring.items, "the per-user keyring copy is removed: one identity"
    assert store.StateStore(machine).load().data["machine_id"] == "m_1"
    assert (user / "state.json.moved").exists() and not (user / "state.json").exists()
    assert migrate.from_user_dir(user, machine, keyring_backend=ring, sealer=sealer) == []  # once only


def test_a_second_users_data_never_replaces_the_machines_identity(tmp_path):
    ring, sealer = MemoryKeyring(), FakeSealer()
    machine = tmp_path / "machine"
    store.StateStore(machine).save({"machine_id": "m_first"})
    user, _key = per_user_install(tmp_path, ring)
    assert migrate.from_user_dir(user, machine, keyring_backend=ring, sealer=sealer) == []
    assert store.StateStore(machine).load().data["machine_id"] == "m_first"
    assert (user / "state.json").exists() and ring.items  # left alone


def test_a_machine_state_with_only_clock_marks_is_replaced(tmp_path):
    ring, sealer = MemoryKeyring(), FakeSealer()
    machine = tmp_path / "machine"
    store.StateStore(machine).save({"high_water": 1_700_000_000, "clock_rolled_back": False})
    user, _key = per_user_install(tmp_path, ring)
    assert migrate.from_user_dir(user, machine, keyring_backend=ring, sealer=sealer) == [
        "machine key",
        "license state",
    ]


def test_nothing_to_move(tmp_path):
    assert (
        migrate.from_user_dir(
            tmp_path / "none", tmp_path / "machine", keyring_backend=MemoryKeyring(), sealer=FakeSealer()
        )
        == []
    )
    assert migrate.from_user_dir(tmp_path, tmp_path, keyring_backend=MemoryKeyring()) == []
