"""The agent's trust anchors: the public keys it ships with, plus the newest key-set document the offline
key-set authority it ships signed.

The kernel (`pospal_protocol.trust`) knows how to check keys; this module decides which keys the agent starts
from. The shipped set is `agent/keys/trusted.json`: the token keys and `keyset_authority`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from agent import flavour
from pospal_protocol.errors import ConfigError, KeyInvalid
from pospal_protocol.trust import TrustedKeys


def bundled_jwks() -> dict[str, Any]:
    """The JWKS shipped in agent/keys/trusted.json."""
    text = resources.files("agent").joinpath("keys/trusted.json").read_text(encoding="utf-8")
    return json.loads(text)


def load_trusted_keys(extra_jwks: Path | None = None, updates: Iterable[str] = ()) -> TrustedKeys:
    """Trusted keys = (bundled JWKS ∪ `extra_jwks` (POSPAL_TRUSTED_KEYS) ∪ the newest re-verified key-set
    document of `updates`) minus the kids it revokes.

    An unreadable or malformed `extra_jwks` raises `ConfigError` naming POSPAL_TRUSTED_KEYS. A persisted
    document that no longer verifies (for example the cache was tampered with) is dropped.

    A release build (`agent.flavour`) never adds `extra_jwks`: its anchors are the bundled keys only.
    """
    trusted = TrustedKeys.from_jwks(bundled_jwks())
    if extra_jwks is not None and not flavour.is_release():
        try:
            trusted.add_jwks(json.loads(Path(extra_jwks).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyInvalid) as exc:
            raise ConfigError(f"POSPAL_TRUSTED_KEYS: cannot load a JWKS from {extra_jwks}: {exc}") from exc
    trusted.apply_chain(updates)
    return trusted
