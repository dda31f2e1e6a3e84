"""Sealing local state: a MAC under a key that is not in the sealed file.

The key is derived from the machine's Ed25519 private key (`seal_key`), which lives in the OS credential
store or its 0600 fallback (`agent.vault.store.MachineKeyStore`), never in `state.json` or in the marks. So a
text editor cannot change a sealed value without the seal showing it; a sealed copy can only be put back
whole, which the marks outside the data directory (`agent.vault.marks`) catch.

`Seal.sign(data)` is HMAC-SHA256 over the canonical JSON of `data` (sorted keys, compact, ASCII), the same
bytes whether the dict was just built or read back from the file. `seal_state` / `unseal_state` put that
MAC into the state dict itself under `SEAL_FIELD`, so the file format stays `agent.vault.store`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SEAL_FIELD = "seal"
_CONTEXT = b"pospal-agent local state seal v1"


def seal_key(private_key: Ed25519PrivateKey) -> bytes:
    """The 32-byte sealing key of this machine key (HMAC of a fixed context under the raw private key)."""
    return hmac.new(private_key.private_bytes_raw(), _CONTEXT, hashlib.sha256).digest()


def canonical(data: Mapping[str, Any]) -> bytes:
    """The bytes a seal covers: `data` as sorted, compact, ASCII JSON."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


class Seal:
    """A MAC key and the two things done with it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a seal key has at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Seal(<hidden>)"

    def sign(self, data: Mapping[str, Any]) -> str:
        """The hex MAC of `data`."""
        return hmac.new(self._key, canonical(data), hashlib.sha256).hexdigest()

    def verify(self, data: Mapping[str, Any], mac: Any) -> bool:
        """Whether `mac` is `data`'s MAC (constant time; anything but a str is False)."""
        if not isinstance(mac, str):
            return False
        try:
            expected = self.sign(data)
        except (TypeError, ValueError):  # not JSON-serialisable, or too deep: not what we wrote
            return False
        # Bytes: compare_digest refuses str with non-ASCII characters (an edited file may hold any).
        return hmac.compare_digest(expected.encode("ascii"), mac.encode("utf-8", "replace"))


def seal_state(data: Mapping[str, Any], seal: Seal | None) -> dict[str, Any]:
    """`data` plus its seal (unsealed when there is no key yet, e.g. before the machine key exists)."""
    out = {k: v for k, v in data.items() if k != SEAL_FIELD}
    if seal is not None:
        out[SEAL_FIELD] = seal.sign(out)
    return out


def unseal_state(data: Mapping[str, Any], seal: Seal | None) -> tuple[dict[str, Any], bool]:
    """(`data` without its seal, whether the seal verified under `seal`)."""
    body = {k: v for k, v in data.items() if k != SEAL_FIELD}
    return body, seal is not None and seal.verify(body, data.get(SEAL_FIELD))
