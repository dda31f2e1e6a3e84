"""Hardware fingerprint: probing under one deadline, HMAC hashing, and the strict-majority match.

A `Probe` has a stable `name` (docs/ARCHITECTURE.md) and `read() -> str | None`. Probes run in
parallel under one hard deadline; one that fails, returns junk or hangs is simply not available, never
fatal. Values are normalised and HMAC-SHA256'd with the product salt before they leave this module; raw
values are never stored, logged or printed. `current()` caches the result for the life of the process.

The sources themselves, per OS, are `agent.probes`.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.probes import DEFAULT_DEADLINE_S, WINDOWS_DEADLINE_S, Probe, default_probes

# Not a secret (it ships in every agent): it makes the hashes specific to this product, so a hash seen
# here is useless for correlating the machine anywhere else. Changing it unbinds every license.
PRODUCT_SALT = b"POSPal License Agent/fingerprint/v1"

# Placeholder values firmware vendors leave in SMBIOS fields; they identify nothing.
_JUNK = {
    "", "0", "NONE", "NULL", "N/A", "NA", "DEFAULT STRING", "TO BE FILLED BY O.E.M.", "NOT SPECIFIED",
    "NOT APPLICABLE", "SYSTEM SERIAL NUMBER", "SYSTEM PRODUCT NAME", "BASE BOARD SERIAL NUMBER",
    "CHASSIS SERIAL NUMBER", "0123456789", "123456789", "XXXXXXXXXX", "INVALID", "UNKNOWN", "OEM",
    "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "03000200-0400-0500-0006-000700080009",
}

@dataclass(frozen=True)
class Component:
    """One component's outcome: its name, whether the source worked, and the hash (never the raw value)."""

    name: str
    ok: bool
    hash: str | None

    def to_dict(self) -> dict[str, Any]:
        """`{"name", "ok", "hash"}` as shown by the CLI and the diagnostics page."""
        return {"name": self.name, "ok": self.ok, "hash": self.hash}


@dataclass(frozen=True)
class Fingerprint:
    """All probed components, in probe order."""

    components: tuple[Component, ...]

    def hashes(self) -> dict[str, str]:
        """`{name: hash}` of the working components: what is sent to the server and bound in tokens."""
        return {c.name: c.hash for c in self.components if c.ok and c.hash}

    def working_count(self) -> int:
        """How many sources worked."""
        return sum(1 for c in self.components if c.ok)


@dataclass(frozen=True)
class MatchResult:
    """How many of the components bound in a token match now; `ok` is the strict-majority verdict."""

    matched: int
    total: int
    ok: bool


def normalize(value: str | None) -> str | None:
    """Canonical form of a raw value (trimmed, single-spaced, upper-case), or None for junk/empty."""
    if value is None:
        return None
    text = " ".join(value.replace("\x00", " ").split()).upper()
    return None if text in _JUNK else text


def hash_component(name: str, normalized: str, salt: bytes = PRODUCT_SALT) -> str:
    """`HMAC-SHA256(salt, f"{name}:{normalized}")` as hex."""
    return hmac.new(salt, f"{name}:{normalized}".encode(), hashlib.sha256).hexdigest()


def match(bound: Mapping[str, str], current: Mapping[str, str]) -> MatchResult:
    """Strict majority over the components bound in the token: `matched > len(bound) / 2`."""
    total = len(bound)
    matched = sum(1 for name, h in bound.items() if current.get(name) == h)
    return MatchResult(matched=matched, total=total, ok=total > 0 and 2 * matched > total)


def collect(
    probes: Iterable[Probe], *, deadline_s: float = DEFAULT_DEADLINE_S, salt: bytes = PRODUCT_SALT
) -> Fingerprint:
    """Run every probe in parallel; whatever has not answered by `deadline_s` counts as unavailable.

    Each probe gets its own daemon thread rather than a ThreadPoolExecutor: the executor joins its
    workers at interpreter exit, so a read stuck in the kernel would also hang the agent's shutdown.
    """
    probes = list(probes)
    results: dict[int, str | None] = {}
    done = threading.Condition()

    def run(i: int, probe: Probe) -> None:
        try:
            value = normalize(probe.read())
        except Exception:  # noqa: BLE001 - any failing source is skipped, by design
            value = None
        with done:
            results[i] = value
            done.notify_all()

    for i, probe in enumerate(probes):
        threading.Thread(target=run, args=(i, probe), name=f"fp-{probe.name}", daemon=True).start()
    end = time.monotonic() + deadline_s
    with done:
        while len(results) < len(probes):
            left = end - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        snapshot = dict(results)
    comps = []
    for i, probe in enumerate(probes):
        value = snapshot.get(i)
        comps.append(Component(probe.name, value is not None, hash_component(probe.name, value, salt)
                               if value is not None else None))
    return Fingerprint(tuple(comps))


_cache: Fingerprint | None = None
_cache_lock = threading.Lock()


def current(*, refresh: bool = False) -> Fingerprint:
    """This machine's fingerprint, probed once per process (or again with `refresh`)."""
    global _cache
    with _cache_lock:
        if _cache is None or refresh:
            deadline = WINDOWS_DEADLINE_S if sys.platform == "win32" else DEFAULT_DEADLINE_S
            _cache = collect(default_probes(), deadline_s=deadline)
        return _cache


def clear_cache() -> None:
    """Forget the cached fingerprint (tests and benchmarks measure a cold probe this way)."""
    global _cache
    with _cache_lock:
        _cache = None
