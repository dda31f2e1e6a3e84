"""Durable cache, machine key and API token files (agent/vault/store.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keyring.backends.fail
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import KeyStoreError
from agent.vault import store
from agent.vault.store import LoadStatus, MachineKeyStore, StateStore

ROOT = Path(__file__).resolve().parents[2]
POSIX = os.name == "posix"


def test_first_run_is_missing_then_round_trips(tmp_path):
    cache = StateStore(tmp_path / "data")
    assert cache.load().status is LoadStatus.MISSING and not cache.load().resync_needed
    cache.save({"token": "abc", "last_sync": "2026-06-01T12:00:00Z"})
    loaded = cache.load()
    assert loaded.status is LoadStatus.OK and loaded.data["token"] == "abc"
    if POSIX:
        assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600


def test_previous_version_is_kept_as_bak(tmp_path):
    cache = StateStore(tmp_path)
    cache.save({"v": 1})
    cache.save({"v": 2})
    assert json.loads(cache.backup.read_text())["data"] == {"v": 1}
    assert not list(tmp_path.glob("*.tmp"))


CORRUPTIONS = {
    "zero bytes": b"",
    "garbage": os.urandom(512),
    "truncated": None,  # filled in from a real save below
    "json but not an object": b"[1, 2, 3]",
    "object of another format": b'{"format": 99, "data": {}}',
    "data not an object": b'{"format": 1, "data": "x"}',
    "invalid utf-8": b'{"format": 1, "data": {"a": "\xff\xfe"}}',
    "deeply nested": b"[" * 100000,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_cache_means_resync_not_crash(tmp_path, kind):
    cache = StateStore(tmp_path)
    cache.save({"token": "x" * 200})
    content = CORRUPTIONS[kind]
    if content is None:
        content = cache.path.read_bytes()[: len(cache.path.read_bytes()) // 2]
    cache.path.write_bytes(content)
    cache.backup.unlink(missing_ok=True)
    loaded = cache.load()
    assert loaded.status is LoadStatus.RESYNC_NEEDED and loaded.resync_needed and loaded.data == {}
    cache.save({"token": "fresh"})  # and the agent can write a good one again
    assert cache.load().data == {"token": "fresh"}


def test_corrupt_cache_recovers_previous_version_from_bak(tmp_path):
    cache = StateStore(tmp_path)
    cache.save({"v": "old"})
    cache.save({"v": "new"})
    cache.path.write_bytes(b"")
    loaded = cache.load()
    assert loaded.status is LoadStatus.RECOVERED and loaded.resync_needed and loaded.data == {"v": "old"}


def test_crash_between_the_two_renames_loads_the_old_value(tmp_path):
    cache = StateStore(tmp_path)
    cache.save({"v": "old"})
    os.replace(cache.path, cache.backup)  # exactly where a crash could leave it
    assert cache.load().data == {"v": "old"}


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from agent.vault.store import StateStore
    cache = StateStore(Path(sys.argv[1]))
    new = {"v": "new", "gen": int(sys.argv[2]), "pad": "n" * 65536}
    print("ready", flush=True)
    while True:
        cache.save(new)
""")


@pytest.mark.skipif(not POSIX, reason="SIGKILL is POSIX")
def test_sigkill_during_rewrite_leaves_old_or_new(tmp_path):
    """A writer killed at a random moment, 50 times: the cache always loads as the old or the new value."""
    rng = random.Random(20260601)
    cache = StateStore(tmp_path)
    outcomes = {"old": 0, "new": 0}
    for gen in range(50):
        old = {"v": "old", "gen": gen, "pad": "o" * 65536}
        cache.save(old)
        new = {"v": "new", "gen": gen, "pad": "n" * 65536}
        # -S: no site-packages; the cache writer needs only the stdlib, and 50 starts stay cheap.
        child = subprocess.Popen(
            [sys.executable, "-S", "-c", CHILD, str(tmp_path), str(gen), str(ROOT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0, 0.02))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        loaded = cache.load()
        assert loaded.status in (LoadStatus.OK, LoadStatus.RECOVERED)
        assert loaded.data in (old, new), f"generation {gen}: {str(loaded.data)[:80]}"
        outcomes[loaded.data["v"]] += 1
    print(f"kill test outcomes: {outcomes}")
    assert outcomes["new"] > 0  # the kills really landed while the child was rewriting


# ---------------------------------------------------------------------------------------- machine key


class MemoryKeyring:
    """A working in-memory keyring, standing in for Windows Credential Manager / macOS Keychain.

    Deliberately not a keyring.backend.KeyringBackend subclass: keyring auto-registers subclasses, and
    this fake would then become the process-wide default keyring.
    """

    priority = 1

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        self.items.pop((service, username), None)


class DroppingKeyring(MemoryKeyring):
    """Accepts writes and forgets them, like a half-configured Secret Service."""

    def set_password(self, service, username, password):
        pass


class FakeSealer:
    """Stands in for DPAPI machine scope: opens only blobs it sealed (one "machine")."""

    name = "dpapi-machine"

    def __init__(self) -> None:
        self.secret = os.urandom(16)

    def seal(self, data):
        return self.secret + bytes(b ^ 0x5A for b in data)

    def unseal(self, blob):
        if not blob.startswith(self.secret):
            raise KeyStoreError("DPAPI could not open the machine key (error 13).")
        return bytes(b ^ 0x5A for b in blob[len(self.secret) :])


def test_the_machine_key_never_goes_to_the_users_keyring(tmp_path):
    ring = MemoryKeyring()
    keys = MachineKeyStore(tmp_path, backend=ring, sealer=FakeSealer())
    key = keys.load_or_create()
    assert not ring.items, "a per-user keyring would give each Windows user its own identity"
    assert keys.sealed_file.exists() and b"PRIVATE KEY" not in keys.sealed_file.read_bytes()
    assert not keys.file.exists()
    assert keys.load().public_key() == key.public_key()
    keys.delete()
    assert keys.load() is None and not keys.sealed_file.exists()


def test_every_user_of_the_pc_opens_the_same_sealed_key_and_another_pc_does_not(tmp_path):
    machine = FakeSealer()
    first_user = MachineKeyStore(tmp_path, backend=MemoryKeyring(), sealer=machine)
    key = first_user.load_or_create()
    second_user = MachineKeyStore(tmp_path, backend=MemoryKeyring(), sealer=machine)
    assert second_user.load_or_create().public_key() == key.public_key()
    with pytest.raises(KeyStoreError):  # the data copied to another PC: an error, never a silent new identity
        MachineKeyStore(tmp_path, backend=MemoryKeyring(), sealer=FakeSealer()).load_or_create()


def test_a_key_an_earlier_version_kept_in_the_keyring_moves_to_the_machine_store(tmp_path):
    ring = MemoryKeyring()
    old = MachineKeyStore(tmp_path, backend=ring, sealer=FakeSealer())
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    ring.set_password("POSPal License Agent", old.keyring_user, pem)
    assert old.load().public_key() == key.public_key()
    assert not ring.items and old.sealed_file.exists()
    assert old.load().public_key() == key.public_key()


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="DPAPI is Windows-only")
def test_real_dpapi_machine_scope_round_trip(tmp_path):
    from agent.vault.dpapi import MachineSealer

    keys = MachineKeyStore(tmp_path, backend=keyring.backends.fail.Keyring())
    assert isinstance(keys.sealer, MachineSealer)
    key = keys.load_or_create()
    assert b"PRIVATE KEY" not in keys.sealed_file.read_bytes()
    assert (
        MachineKeyStore(tmp_path, backend=keyring.backends.fail.Keyring()).load().public_key()
        == key.public_key()
    )


@pytest.mark.parametrize("backend", ["default", "fail", "dropping"])
@pytest.mark.skipif(sys.platform == "win32", reason="Windows seals the key with DPAPI instead")
def test_without_dpapi_the_machine_key_is_a_0600_file(tmp_path, backend):
    # "default" is whatever keyring finds here; none of them is used for a new key.
    ring = {"default": None, "fail": keyring.backends.fail.Keyring(), "dropping": DroppingKeyring()}[backend]
    keys = MachineKeyStore(tmp_path / "data", backend=ring)
    key = keys.load_or_create()
    assert keys.file.exists() and b"PRIVATE KEY" in keys.file.read_bytes()
    if POSIX:
        assert stat.S_IMODE(os.stat(keys.file).st_mode) == 0o600
    again = MachineKeyStore(tmp_path / "data", backend=ring).load()
    assert again.public_key() == key.public_key()  # same key after a restart
    keys.delete()
    assert keys.load() is None


def test_damaged_key_file_is_an_error_not_a_new_identity(tmp_path):
    keys = MachineKeyStore(tmp_path, backend=DroppingKeyring())
    keys.save(Ed25519PrivateKey.generate())
    keys.file.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyStoreError):
        keys.load_or_create()


def test_machine_keys_are_per_data_dir(tmp_path):
    ring = MemoryKeyring()
    a = MachineKeyStore(tmp_path / "a", backend=ring, sealer=FakeSealer()).load_or_create()
    b = MachineKeyStore(tmp_path / "b", backend=ring, sealer=FakeSealer()).load_or_create()
    assert a.public_key() != b.public_key() and not ring.items


# ------------------------------------------------------------------------------------------ API token


def test_api_token_is_created_once_with_mode_0600(tmp_path):
    token = store.ensure_api_token(tmp_path)
    assert len(token) >= 32 and store.ensure_api_token(tmp_path) == token
    assert store.read_api_token(tmp_path) == token
    if POSIX:
        assert stat.S_IMODE(os.stat(tmp_path / "api-token").st_mode) == 0o600


def test_unusable_api_token_is_replaced(tmp_path):
    (tmp_path / "api-token").write_text("short")
    assert store.read_api_token(tmp_path) is None
    assert len(store.ensure_api_token(tmp_path)) >= 32
