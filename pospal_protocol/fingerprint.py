"""Hardware fingerprint: probing under one deadline, HMAC hashing, and the strict-majority match.

A `Probe` has a stable `name` (docs/ARCHITECTURE.md) and `read() -> str | None`. Probes run in
parallel under one hard deadline; one that fails, returns junk or hangs is simply not available, never
fatal. Values are normalised and HMAC-SHA256'd with the product salt before they leave this module; raw
values are never stored, logged or printed. `current()` caches a complete result for the life of the
process.

A probe that failed is unknown, never different: `match` judges only components read on both sides and
keeps the license when too few were read; `Reprobe` probes again in the background with backoff.

The sources themselves, per OS, are `pospal_protocol.probes`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pospal_protocol.probes import DEFAULT_DEADLINE_S, WINDOWS_DEADLINE_S, Probe, default_probes

log = logging.getLogger(__name__)

# Not a secret (it ships in every agent): it makes the hashes specific to this product, so a hash seen
# here is useless for correlating the machine anywhere else. Changing it unbinds every license.
PRODUCT_SALT = b"POSPal License Agent/fingerprint/v1"

# Placeholder values firmware vendors leave in SMBIOS fields; they identify nothing.
_JUNK = {
    "",
    "0",
    "NONE",
    "NULL",
    "N/A",
    "NA",
    "DEFAULT STRING",
    "TO BE FILLED BY O.E.M.",
    "NOT SPECIFIED",
    "NOT APPLICABLE",
    "SYSTEM SERIAL NUMBER",
    "SYSTEM PRODUCT NAME",
    "BASE BOARD SERIAL NUMBER",
    "CHASSIS SERIAL NUMBER",
    "0123456789",
    "123456789",
    "XXXXXXXXXX",
    "INVALID",
    "UNKNOWN",
    "OEM",
    "00000000-0000-0000-0000-000000000000",
    "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "03000200-0400-0500-0006-000700080009",
}


@dataclass(frozen=True)
class Component:
    """One component's outcome: its name, whether the source worked, and the hash (never the raw value)."""

    name: str
    ok: bool
    hash: str | None
    problem: str | None = None  # why it is unavailable: "timeout", "error" or "absent" (none or junk)

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

    def problems(self) -> dict[str, str]:
        """`{name: "timeout" | "error" | "absent"}` for every source that did not work."""
        return {c.name: c.problem or "absent" for c in self.components if not c.ok}


# A verdict of "different machine" needs at least this many components read on both sides (or every
# bound one, for a token that bound fewer: macOS has two). Two readable sources that both changed could
# be a replaced disk and NIC on a PC whose other reads timed out; three independent ones are not.
MIN_COMPARED = 3


@dataclass(frozen=True)
class MatchResult:
    """The bound-versus-current comparison.

    `compared` counts components read on both sides, `differ` those of them whose hash changed.
    `decided` is False when too few were read to judge (the license is kept); `ok` is False only for a
    decided strict majority of differences (`machine_changed`).
    """

    matched: int
    total: int
    ok: bool
    compared: int = 0
    differ: int = 0
    decided: bool = True


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
    """A probe that failed is unknown, never different.

    Only components read on both sides count. The machine changed when a strict majority of them differ
    and at least `min(MIN_COMPARED, len(bound))` were compared; with fewer the verdict is undecided and
    the license stays (the agent probes again in the background; a POS uses `proves_same_machine`).
    """
    both = [name for name in bound if current.get(name)]
    matched = sum(1 for name in both if current[name] == bound[name])
    differ = len(both) - matched
    required = min(MIN_COMPARED, len(bound))
    decided = required > 0 and len(both) >= required
    return MatchResult(
        matched=matched,
        total=len(bound),
        ok=not (decided and 2 * differ > len(both)),
        compared=len(both),
        differ=differ,
        decided=decided,
    )


def proves_same_machine(bound: Mapping[str, str], current: Mapping[str, str]) -> bool:
    """Whether a token bound to `bound` proves a sale on the PC whose hashes are `current`.

    Stricter than `match`, for whoever takes the token as proof rather than keeps a license running
    (a POS checking an answer, a license file's import): a verdict that was never decided is not a
    yes. It holds only when at least `min(MIN_COMPARED, len(bound))` components were read on both sides
    and no strict majority of them differ. A relayed answer from a PC of another OS (no component names
    in common) or a token binding nothing fails here.
    """
    result = match(bound, current)
    return result.decided and result.ok


def collect(
    probes: Iterable[Probe], *, deadline_s: float = DEFAULT_DEADLINE_S, salt: bytes = PRODUCT_SALT
) -> Fingerprint:
    """Run every probe in parallel; whatever has not answered by `deadline_s` counts as unavailable.

    Each probe gets its own daemon thread rather than a ThreadPoolExecutor: the executor joins its
    workers at interpreter exit, so a read stuck in the kernel would also hang the agent's shutdown.
    """
    probes = list(probes)
    results: dict[int, tuple[str | None, str | None]] = {}
    done = threading.Condition()

    def run(i: int, probe: Probe) -> None:
        try:
            value = normalize(probe.read())
            outcome = (value, None if value is not None else "absent")
        except Exception:  # noqa: BLE001 - any failing source is skipped, by design
            outcome = (None, "error")
        with done:
            results[i] = outcome
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
        value, problem = snapshot.get(i, (None, "timeout"))
        comps.append(
            Component(
                probe.name,
                value is not None,
                hash_component(probe.name, value, salt) if value is not None else None,
                problem,
            )
        )
    return Fingerprint(tuple(comps))


def needs_reprobe(fp: Fingerprint, bound: Mapping[str, str] | None = None) -> bool:
    """Whether to probe again: a source timed out or failed, or too few were read to judge the binding."""
    if any(c.problem in ("timeout", "error") for c in fp.components):
        return True
    return bool(bound) and not match(bound or {}, fp.hashes()).decided


# Backoff between background re-probes while the fingerprint is incomplete: bounded, then give up until
# the next start (the license is kept meanwhile; Diagnostics shows which sources are missing).
REPROBE_DELAYS_S = (30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Reprobe:
    """Runs `attempt()` after each delay in `delays` until it returns True (done) or the delays run out."""

    def __init__(self, attempt: Callable[[], bool], delays: Sequence[float] | None = None) -> None:
        self._attempt = attempt
        self._delays = None if delays is None else tuple(delays)  # None: REPROBE_DELAYS_S at start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.attempts = 0

    @property
    def running(self) -> bool:
        """True while re-probes are scheduled."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the schedule unless it already runs."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pospal-reprobe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the schedule (at agent exit)."""
        self._stop.set()

    def _run(self) -> None:
        for delay in self._delays if self._delays is not None else REPROBE_DELAYS_S:
            if self._stop.wait(delay):
                return
            self.attempts += 1
            try:
                if self._attempt():
                    return
            except Exception:  # a failing attempt is one more try used, never the agent's end
                log.exception("fingerprint re-probe failed")


_cache: Fingerprint | None = None
_cache_lock = threading.Lock()


def current(*, refresh: bool = False) -> Fingerprint:
    """This machine's fingerprint. A complete one is probed once per process; an incomplete one (a NIC
    not up yet at boot, a slow firmware read) is probed again at the next call."""
    global _cache
    with _cache_lock:
        if _cache is None or refresh or _cache.working_count() < len(_cache.components):
            deadline = WINDOWS_DEADLINE_S if sys.platform == "win32" else DEFAULT_DEADLINE_S
            _cache = collect(default_probes(), deadline_s=deadline)
        return _cache


def clear_cache() -> None:
    """Forget the cached fingerprint (tests and benchmarks measure a cold probe this way)."""
    global _cache
    with _cache_lock:
        _cache = None
