"""Which signing keys the POS trusts: its roots, plus the key-set updates they signed, kept on disk.

Roots are, in order of precedence:

- `trusted_keys=` given to `AgentClient` (a JWKS document or a `TrustedKeys`): exactly those keys;
- otherwise the keys the agent ships (`agent/keys/trusted.json`, inside the wheel as
  `pospal_client/keys/trusted.json`), plus, in a development tree only, the JWKS file named by
  `POSPAL_TRUSTED_KEYS`: the same development-only path the agent reads (the demo's
  `demo-data/trusted-keys.json`), ignored by a release build (`pospal_protocol.flavour`: frozen, or
  `pospal_client._build` saying `RELEASE = True`).

After a key rotation, the agent's challenged answer carries the key-set document it verified
(`keyset_updates`). `TrustStore.learn` applies it with the kernel's rule (`TrustedKeys.apply_chain`): a
new key is trusted only through a document signed by the offline key-set authority the roots name
(`keyset_authority`), never by a token key, and the kids it revokes leave. What it learned is written to
`path` (atomically) as that signed document, never as bare keys, so every load re-verifies it from the
roots and an edited file cannot add a key.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pospal_protocol import flavour
from pospal_protocol.errors import ConfigError, KeyInvalid
from pospal_protocol.trust import TrustedKeys

TRUST_FILE_NAME = "key-updates.json"
# Where the agent's keys sit when they are not inside this package: beside it in the agent's own bundle
# (PyInstaller puts agent/keys next to pospal_client), or in a source checkout.
_HERE = Path(__file__).resolve()
_AGENT_KEYS = [p / "agent" / "keys" / "trusted.json" for p in (_HERE.parents[1], _HERE.parents[3])]


def is_release() -> bool:
    """True when the POS runs as a release build (frozen, or `pospal_client._build.RELEASE`)."""
    return flavour.is_release("pospal_client._build")


def bundled_jwks() -> dict[str, Any]:
    """The agent's shipped JWKS: the wheel's copy, else agent/keys/trusted.json (agent bundle, checkout)."""
    packaged = resources.files("pospal_client").joinpath("keys/trusted.json")
    if packaged.is_file():
        return json.loads(packaged.read_text(encoding="utf-8"))
    path = next((p for p in _AGENT_KEYS if p.is_file()), _AGENT_KEYS[-1])
    return json.loads(path.read_text(encoding="utf-8"))


def default_roots(environ: Mapping[str, str] | None = None) -> TrustedKeys:
    """The bundled keys, plus POSPAL_TRUSTED_KEYS in a development tree (see the module docstring).

    Raises `ConfigError` naming POSPAL_TRUSTED_KEYS when that file cannot be read as a JWKS.
    """
    env = os.environ if environ is None else environ
    roots = TrustedKeys.from_jwks(bundled_jwks())
    extra = (env.get("POSPAL_TRUSTED_KEYS") or "").strip()
    if extra and not is_release():
        try:
            roots.add_jwks(json.loads(Path(extra).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyInvalid) as exc:
            raise ConfigError(f"POSPAL_TRUSTED_KEYS: cannot load a JWKS from {extra}: {exc}") from exc
    return roots


def default_trust_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where a POS keeps learned key-set updates unless it chooses: the user's local data directory."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if sys.platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return base / "POSPal" / "client" / TRUST_FILE_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "POSPal" / "client" / TRUST_FILE_NAME
    base = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    return base / "pospal-client" / TRUST_FILE_NAME


class TrustStore:
    """The POS's trusted keys: roots plus the updates learned (and persisted at `path`, when given)."""

    def __init__(self, roots: TrustedKeys, path: Path | None) -> None:
        self.keys = roots
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            self.keys.apply_chain(_read_updates(path))

    def learn(self, updates: Iterable[object]) -> list[str]:
        """Apply a key-set update chain (kernel rule); persist and return the kids that were new."""
        with self._lock:
            new = self.keys.apply_chain(updates)
            if new and self.path is not None:
                _write_atomic(self.path, {"keyset_updates": list(self.keys.accepted_updates)})
            return new


def _read_updates(path: Path) -> list[object]:
    """The persisted documents; a missing or unreadable file is an empty chain (they re-verify anyway)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    docs = data.get("keyset_updates") if isinstance(data, dict) else None
    return list(docs) if isinstance(docs, list) else []


def _write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to `path` via a temporary file in the same directory, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sys.platform != "win32":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
