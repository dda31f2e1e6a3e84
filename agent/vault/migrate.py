"""Moving a per-user install's identity into the per-machine data directory (first start of 1.1).

Earlier versions kept the state cache in the user's data dir (`%LOCALAPPDATA%` on Windows) and the
machine key in that user's keyring (Credential Manager). The first agent of this version to start, with
the machine directory still empty, moves them: the key first (into the DPAPI/0600 machine store, then
out of the keyring), then `state.json` (token, machine id, provisional trial, clock high-water mark).
The old state file is renamed `state.json.moved`, so nothing is moved twice and support can still see
it. When the machine directory already holds an identity (a license, a machine id or a provisional
trial), another user's data is left where it is (the machine has its one identity) and a log line says
so; a machine state with only clock marks is replaced.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.errors import KeyStoreError, StoreError
from agent.vault import store
from agent.vault.seal import SEAL_FIELD, Seal, seal_key, seal_state

log = logging.getLogger(__name__)

MOVED_SUFFIX = ".moved"


def from_user_dir(
    user_dir: Path, machine_dir: Path, *, keyring_backend: object | None = None, sealer: object | None = None
) -> list[str]:
    """Move the identity in `user_dir` into `machine_dir` if that is still empty; what was moved.

    Raises `StoreError`/`KeyStoreError` when a write fails (nothing is deleted from `user_dir` then).
    """
    user_dir, machine_dir = Path(user_dir), Path(machine_dir)
    if user_dir.resolve() == machine_dir.resolve():
        return []
    old_state = user_dir / store.STATE_FILE
    old_keys = store.MachineKeyStore(user_dir, backend=keyring_backend)
    if not old_state.exists():
        return []  # a key alone (no license state) is not worth a move: a new one is made when needed
    if has_identity(store.StateStore(machine_dir).load().data):
        log.info(
            "this PC already has its license data in %s; the per-user copy in %s is not used",
            machine_dir,
            user_dir,
        )
        return []
    moved: list[str] = []
    new_keys = store.MachineKeyStore(machine_dir, backend=keyring_backend, sealer=sealer)
    try:
        key = old_keys.read_legacy()
    except KeyStoreError as exc:
        log.warning(
            "the per-user machine key could not be read (%s); the PC will be activated again", exc.message
        )
        key = None
    if key is not None and new_keys.load() is None:
        new_keys.save(key)
        old_keys.delete()
        moved.append("machine key")
    loaded = store.StateStore(user_dir).load()
    if loaded.data:
        store.StateStore(machine_dir).save(_sealed(loaded.data, new_keys))
        try:
            old_state.replace(old_state.with_name(store.STATE_FILE + MOVED_SUFFIX))
        except OSError as exc:
            raise StoreError(f"Cannot mark {old_state} as moved: {exc}") from exc
        moved.append("license state")
    return moved


def _sealed(data: dict, keys: store.MachineKeyStore) -> dict:
    """1.0 wrote no seal: seal the moved state with the machine key it moves with (`agent.vault.seal`), so the
    license survives the upgrade offline. A state that has a seal keeps it (it proves itself or not)."""
    if SEAL_FIELD in data:
        return data
    try:
        key = keys.load()
    except KeyStoreError:
        return data
    return seal_state(data, Seal(seal_key(key))) if key is not None else data


IDENTITY_KEYS = ("machine_id", "token", "provisional_trial_started")


def has_identity(data: dict) -> bool:
    """Whether a state holds a license, a machine id or a provisional trial (else it is only clock marks)."""
    return any(data.get(k) for k in IDENTITY_KEYS)
