"""Durable local files: the state cache, the machine key and the local API token.

**Cache (`state.json`).** Every save writes a temp file in the same directory, fsyncs it, renames the
current file to `state.json.bak`, `os.replace`s the temp file into place and fsyncs the directory. A
power cut therefore leaves either the old or the new complete file (or, between the two renames, only
the `.bak`, which `load` falls back to). The `.bak` is kept because losing the cache entirely would also
lose the machine id, the provisional trial start and key-set updates; recovering the previous version
keeps the terminal selling while the next sync refreshes everything. A corrupt, truncated, empty or
garbage file never raises: `load` reports `RESYNC_NEEDED` (or `RECOVERED` from the `.bak`).

**Machine key.** One per PC: the machine's Ed25519 private key, sealed with DPAPI machine scope on
Windows (`machine-key.dpapi`), else a 0600 PEM file `machine-key.pem`, in the per-machine data directory.
A key an earlier version kept in the user's keyring is moved here on first use.

**API token.** `api-token` (0600) holds the bearer token for the local API's POST endpoints.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import KeyStoreError, StoreError

# cryptography is imported inside the key functions: most users of this module only touch the cache.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

STATE_FILE = "state.json"
MACHINE_KEY_FILE = "machine-key.pem"
SEALED_KEY_FILE = "machine-key.dpapi"
API_TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret
KEYRING_SERVICE = "POSPal License Agent"
CACHE_FORMAT = 1


def ensure_dir(path: Path) -> Path:
    """Create the data directory (0700 on POSIX) if needed; returns it. Raises `StoreError`."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreError(f"Cannot create the data directory {path}: {exc}") from exc
    return path


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable. Windows cannot open a directory; NTFS journals renames anyway.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Windows refuses to replace a file that another handle holds open without FILE_SHARE_DELETE (Python's
# open() is one; the tray and the POS read these files): a sharing violation, PermissionError. Readers
# hold them for milliseconds, so retry for up to about a second before giving up.
_REPLACE_TRIES = 20
_REPLACE_PAUSE_S = 0.05


def _replace(src: Path, dst: Path) -> None:
    """os.replace, retried on Windows while a reader holds `dst` open."""
    for attempt in range(_REPLACE_TRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if os.name != "nt" or attempt == _REPLACE_TRIES - 1:
                raise
            time.sleep(_REPLACE_PAUSE_S)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, backup: Path | None = None) -> None:
    """Write `data` to `path` atomically and durably (temp file, fsync, replace, fsync dir).

    With `backup`, the previous file is moved there first. The file is created with `mode`.
    Raises `StoreError`.
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if backup is not None and path.exists():
            _replace(path, backup)
        _replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StoreError(f"Cannot write {path}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ cache


class LoadStatus(enum.Enum):
    """Outcome of reading the cache."""

    OK = "ok"
    MISSING = "missing"  # first run: no cache yet
    RECOVERED = "recovered"  # state.json was unusable; the previous version (.bak) was loaded
    RESYNC_NEEDED = "resync_needed"  # nothing usable: start empty and sync


@dataclass(frozen=True)
class Loaded:
    """What `StateStore.load` found: `data` (empty unless OK/RECOVERED) and its `status`."""

    status: LoadStatus
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def resync_needed(self) -> bool:
        """True when the cache was damaged and a sync should refresh it."""
        return self.status in (LoadStatus.RECOVERED, LoadStatus.RESYNC_NEEDED)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        return None
    data = doc.get("data")
    return data if isinstance(data, dict) else None


class StateStore:
    """The JSON state cache in the data directory (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / STATE_FILE
        self.backup = self.data_dir / (STATE_FILE + ".bak")

    def load(self) -> Loaded:
        """Read the cache; never raises."""
        main = self._read(self.path)
        if main is not None:
            data = _parse(main)
            if data is not None:
                return Loaded(LoadStatus.OK, data)
        bak = self._read(self.backup)
        data = _parse(bak) if bak is not None else None
        if data is not None:
            return Loaded(LoadStatus.RECOVERED, data)
        if main is None and bak is None:
            return Loaded(LoadStatus.MISSING)
        return Loaded(LoadStatus.RESYNC_NEEDED)

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def save(self, data: dict[str, Any]) -> None:
        """Replace the cache with `data` (JSON-serialisable) atomically; raises `StoreError`."""
        ensure_dir(self.data_dir)
        payload = json.dumps(
            {"format": CACHE_FORMAT, "data": data}, sort_keys=True, separators=(",", ":")
        ).encode("utf-8")
        atomic_write(self.path, payload, backup=self.backup)
        self._sweep_temp_files()

    def clear(self) -> None:
        """Delete the cache and its backup (after a deactivation)."""
        for path in (self.path, self.backup):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"Cannot delete {path}: {exc}") from exc

    def _sweep_temp_files(self) -> None:
        # Temp files from writes a crash interrupted; ours of this save is already renamed away.
        for stale in self.data_dir.glob(f".{STATE_FILE}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass


# ------------------------------------------------------------------------------------------ machine key


def _usable_keyring(backend: Any) -> bool:
    from keyring.backends import fail

    return (
        backend is not None and not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 1) > 0
    )


def default_sealer() -> Any:
    """DPAPI machine scope on Windows; None elsewhere (the key is then a 0600 file)."""
    if sys.platform != "win32":
        return None
    from agent.vault.dpapi import MachineSealer

    return MachineSealer()


class MachineKeyStore:
    """The machine's Ed25519 private key, one per PC, shared by every user of it.

    On Windows it is sealed with DPAPI machine scope in `machine-key.dpapi` (any account on this PC
    opens it, no other PC does); elsewhere it is a 0600 PEM file `machine-key.pem`. Earlier versions
    kept it in the user's OS keyring (Windows Credential Manager): a key found there is moved into the
    machine store and removed from the keyring. The keyring entry's user name includes a hash of the
    data directory it belonged to.
    """

    def __init__(self, data_dir: Path, backend: Any | None = None, sealer: Any | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.file = self.data_dir / MACHINE_KEY_FILE
        self.sealed_file = self.data_dir / SEALED_KEY_FILE
        self._backend = backend
        self.sealer = sealer if sealer is not None else default_sealer()
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]
        self.keyring_user = f"machine-key:{digest}"

    @property
    def backend(self) -> Any:
        """The legacy keyring backend (looked up only when needed)."""
        if self._backend is None:
            import keyring

            self._backend = keyring.get_keyring()
        return self._backend

    @property
    def keyring_usable(self) -> bool:
        """Whether the legacy keyring backend can be used at all."""
        return _usable_keyring(self.backend)

    @property
    def where(self) -> str:
        """Where a saved key goes: "dpapi-machine" or "file"."""
        return self.sealer.name if self.sealer is not None else "file"

    def load(self) -> Ed25519PrivateKey | None:
        """The stored key, or None when there is none. Raises `KeyStoreError` if one exists but is broken."""
        pem = self._read_machine_store()
        if pem is None:
            pem = self._keyring_get()
            if pem is not None:
                key = _parse_pem(pem)
                self._store(pem)  # moved out of the user's keyring into the per-machine store
                self._keyring_delete()
                return key
            return None
        return _parse_pem(pem)

    def read_legacy(self) -> Ed25519PrivateKey | None:
        """A key as earlier versions stored it (keyring entry, else PEM file), without moving it."""
        pem = self._keyring_get()
        if pem is None:
            try:
                pem = self.file.read_text(encoding="ascii")
            except FileNotFoundError:
                return None
            except (OSError, UnicodeDecodeError) as exc:
                raise KeyStoreError(f"Cannot read the machine key: {exc}") from exc
        return _parse_pem(pem)

    def save(self, key: Ed25519PrivateKey) -> str:
        """Store `key`; returns where ("dpapi-machine" or "file"). Raises `KeyStoreError`."""
        from cryptography.hazmat.primitives import serialization

        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        return self._store(pem)

    def load_or_create(self) -> Ed25519PrivateKey:
        """The stored key, or a new one (stored) when there is none."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = self.load()
        if key is None:
            key = Ed25519PrivateKey.generate()
            self.save(key)
        return key

    def delete(self) -> None:
        """Forget the key everywhere (after a deactivation)."""
        self._keyring_delete()
        for path in (self.sealed_file, self.file):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise KeyStoreError(f"Cannot delete the machine key file: {exc}") from exc

    def _read_machine_store(self) -> str | None:
        if self.sealer is not None:
            try:
                blob = self.sealed_file.read_bytes()
            except FileNotFoundError:
                blob = None
            except OSError as exc:
                raise KeyStoreError(f"Cannot read the machine key: {exc}") from exc
            if blob is not None:
                try:
                    return self.sealer.unseal(blob).decode("ascii")
                except UnicodeDecodeError as exc:
                    raise KeyStoreError("The stored machine key is damaged.") from exc
        try:
            return self.file.read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyStoreError(f"Cannot read the machine key: {exc}") from exc

    def _store(self, pem: str) -> str:
        try:
            ensure_dir(self.data_dir)
            if self.sealer is not None:
                atomic_write(self.sealed_file, self.sealer.seal(pem.encode("ascii")), mode=0o600)
                try:
                    self.file.unlink()  # a plain copy left by an earlier version or another OS
                except OSError:
                    pass
                return self.sealer.name
            atomic_write(self.file, pem.encode("ascii"), mode=0o600)
            os.chmod(self.file, 0o600)
        except (StoreError, OSError) as exc:
            raise KeyStoreError(f"Cannot store the machine key: {exc}") from exc
        return "file"

    def _keyring_get(self) -> str | None:
        try:
            if not self.keyring_usable:
                return None
            return self.backend.get_password(KEYRING_SERVICE, self.keyring_user)
        except Exception:  # noqa: BLE001 - a broken keyring holds nothing we can use, whatever it raises
            return None

    def _keyring_delete(self) -> None:
        try:
            if self.keyring_usable:
                self.backend.delete_password(KEYRING_SERVICE, self.keyring_user)
        except Exception:  # noqa: BLE001, S110 - keyring backends raise many types; nothing to delete is fine
            pass


def _parse_pem(pem: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise KeyStoreError("The stored machine key is damaged.") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyStoreError("The stored machine key is not an Ed25519 key.")
    return key


# -------------------------------------------------------------------------------------------- API token


def read_api_token(data_dir: Path) -> str | None:
    """The local API bearer token, or None when there is none yet."""
    try:
        token = (Path(data_dir) / API_TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token if len(token) >= 32 else None


def ensure_api_token(data_dir: Path) -> str:
    """The local API bearer token, created (0600, random from `secrets`) when missing or unusable."""
    token = read_api_token(data_dir)
    if token is None:
        ensure_dir(Path(data_dir))
        token = secrets.token_urlsafe(32)
        atomic_write(Path(data_dir) / API_TOKEN_FILE, token.encode("ascii"), mode=0o600)
    return token
