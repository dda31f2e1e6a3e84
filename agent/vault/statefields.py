"""The shape of the agent's cached state: every field's type and range, checked on every load.

`clean(data, sealed)` never raises. It keeps each field that has its type and range and drops the rest,
naming each dropped field in the problems it returns; so valid JSON of the wrong type (`keyset_updates: 5`,
`high_water: 1e308`, a huge negative `last_sync`) costs that field, never the agent's start.

A state whose seal did not verify (`agent.vault.seal`) is trusted for nothing that licenses: its *privileged*
fields (the token, the sync and trial times, the clock's marks) are dropped too, and the agent re-syncs.
The identity fields (machine id, terminal name, language, fingerprint cache, signed key-set updates that
are re-verified anyway) are kept, so the re-sync can find this machine on the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

# Times beyond the year 9999 are not times (and would overflow datetime).
MAX_TS = 253402300799
MAX_TEXT = 512
MAX_TOKEN = 16384
MAX_LIST = 64
_MACHINE_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_HEX = re.compile(r"[0-9a-f]{1,128}")

# Fields that license something: believed only from a sealed state.
PRIVILEGED = frozenset(
    {
        "token",
        "last_sync",
        "provisional_trial_started",
        "high_water",
        "clock_rolled_back",
        "token_iat",
        "offline_license",
    }
)


def _time(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_TS


def _text(limit: int = MAX_TEXT) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and 0 < len(v) <= limit


def _machine_id(v: Any) -> bool:
    return isinstance(v, str) and _MACHINE_ID.fullmatch(v) is not None


def _hashes(v: Any) -> bool:
    return (
        isinstance(v, dict)
        and len(v) <= MAX_LIST
        and all(_text(64)(k) and isinstance(h, str) and _HEX.fullmatch(h) for k, h in v.items())
    )


def _updates(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= MAX_LIST and all(_text(MAX_TOKEN)(d) for d in v)


def _checkout(v: Any) -> bool:
    return isinstance(v, dict) and _text()(v.get("id")) and (v.get("email") is None or _text()(v["email"]))


def _key_anchor(v: Any) -> bool:
    return isinstance(v, dict) and all(_text()(v.get(k)) for k in ("mid", "name", "hash"))


FIELDS: dict[str, Callable[[Any], bool]] = {
    "token": _text(MAX_TOKEN),
    "machine_id": _machine_id,
    "last_sync": _time,
    "provisional_trial_started": _time,
    "high_water": _time,
    "token_iat": _time,
    "clock_rolled_back": lambda v: type(v) is bool,
    "terminal_name": _text(),
    "language": _text(16),
    "trial_email": _text(320),
    "fingerprint": _hashes,
    "keyset_updates": _updates,
    "checkout": _checkout,
    "key_anchor": _key_anchor,
}


def clean(data: Mapping[str, Any], sealed: bool) -> tuple[dict[str, Any], list[str]]:
    """(the fields of `data` that can be used, the names of those dropped). Never raises.

    Unknown fields are kept from a sealed state (the agent wrote them) and dropped from an unsealed one.
    """
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in data.items():
        if not isinstance(name, str):
            continue
        check = FIELDS.get(name)
        if not sealed and (name in PRIVILEGED or check is None):
            dropped.append(name)
            continue
        if check is not None and value is not None and not check(value):
            dropped.append(name)
            continue
        out[name] = value
    return out, sorted(dropped)
