"""The sealed state cache (agent/vault/cache.py): what a load believes, what a save writes, and the freshness
rule
for fetched tokens."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from keyring.backends import fail

from agent.errors import TokenInvalid
from agent.vault import migrate, store
from agent.vault.cache import IAT_LEEWAY_S, SealedCache, check_fresh
from agent.vault.marks import MemoryMarkStore
from agent.vault.seal import Seal, seal_key, seal_state
from tests.agent.test_store import FakeSealer, MemoryKeyring
from tests.agent.tokenkit import NOW_TS, claims


def _cache(tmp_path, marks=None):
    keys = store.MachineKeyStore(tmp_path / "data", backend=fail.Keyring())
    keys.load_or_create()
    return SealedCache(tmp_path / "data", keys, marks if marks is not None else MemoryMarkStore())


def test_a_saved_state_loads_sealed_and_writes_its_marks(tmp_path):
    marks = MemoryMarkStore()
    cache = _cache(tmp_path, marks)
    cache.save(
        {"token": "a.b.c", "high_water": NOW_TS, "token_iat": NOW_TS - 5, "provisional_trial_started": 7}
    )
    loaded = _cache(tmp_path, marks).load()
    assert loaded.sealed and not loaded.resync_needed
    assert (loaded.data["token"], loaded.data["high_water"]) == ("a.b.c", NOW_TS)
    assert (loaded.marks.high_water, loaded.marks.token_iat, loaded.marks.provisional_trial) == (
        NOW_TS,
        NOW_TS - 5,
        7,
    )


def test_without_a_machine_key_the_state_is_written_unsealed_and_no_marks(tmp_path):
    marks = MemoryMarkStore()
    cache = SealedCache(
        tmp_path / "data", store.MachineKeyStore(tmp_path / "data", backend=fail.Keyring()), marks
    )
    cache.save({"language": "el", "token": "a.b.c"})
    loaded = cache.load()
    assert loaded.data == {"language": "el"} and loaded.dropped == ("token",) and marks.text is None


def test_the_marks_win_over_a_lower_high_water_and_an_earlier_provisional_start_wins(tmp_path):
    marks = MemoryMarkStore()
    cache = _cache(tmp_path, marks)
    cache.save({"high_water": NOW_TS, "provisional_trial_started": NOW_TS - 100})
    seal = cache.seal()
    # Someone with the key re-seals a state that forgets: a lower mark, a later trial start.
    store.StateStore(tmp_path / "data").save(
        seal_state({"high_water": NOW_TS - 10**6, "provisional_trial_started": NOW_TS}, seal)
    )
    loaded = _cache(tmp_path, marks).load()
    assert loaded.data["high_water"] == NOW_TS
    assert loaded.data["provisional_trial_started"] == NOW_TS - 100


def test_a_10_state_moved_by_the_migration_is_sealed_with_its_key(tmp_path):
    ring, sealer = MemoryKeyring(), FakeSealer()
    user, machine = tmp_path / "user", tmp_path / "machine"
    key = Ed25519PrivateKey.generate()
    old = store.MachineKeyStore(user, backend=ring)
    ring.set_password(
        store.KEYRING_SERVICE,
        old.keyring_user,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    store.StateStore(user).save({"machine_id": "m_1", "token": "a.b.c", "last_sync": NOW_TS})
    migrate.from_user_dir(user, machine, keyring_backend=ring, sealer=sealer)
    keys = store.MachineKeyStore(machine, backend=MemoryKeyring(), sealer=sealer)
    loaded = SealedCache(machine, keys, MemoryMarkStore()).load()
    assert loaded.sealed and loaded.data["token"] == "a.b.c"  # still licensed offline after the upgrade
    assert Seal(seal_key(key)).verify({"x": 1}, Seal(seal_key(keys.load())).sign({"x": 1}))


def test_a_fetched_token_must_carry_the_request_nonce():
    check_fresh(claims(rn="n1"), "n1", None)
    for rn in ("n2", None, 5):
        with pytest.raises(TokenInvalid) as info:
            check_fresh(claims(rn=rn), "n1", None)
        assert info.value.reason == "replay"


def test_a_token_older_than_the_newest_seen_is_stale_beyond_the_leeway():
    check_fresh(claims(iat=NOW_TS - IAT_LEEWAY_S), None, NOW_TS)  # server clocks may differ that much
    with pytest.raises(TokenInvalid) as info:
        check_fresh(claims(iat=NOW_TS - IAT_LEEWAY_S - 1), None, NOW_TS)
    assert info.value.reason == "stale"
