"""The one rule for text a person typed (terminal and restaurant names): what is refused, how it is shown.

A name travels from a stranger's form or a till's request file into the database, e-mails, HTML pages and
the operator's terminal. Characters that are not text but instructions to whatever displays them are
refused on the way in, and escaped on the way out for anything stored before the rule:

- control characters, C0, DEL and C1 (U+009B is a terminal's CSI: it can recolour, move or erase what the
  operator reads; NUL cannot even be stored by PostgreSQL),
- format characters (category Cf: the bidi overrides U+202A-U+202E and isolates U+2066-U+2069 reorder
  what is shown, zero-width ones hide text), except the joiners U+200C/U+200D that some scripts and
  emoji need,
- line and paragraph separators, and lone surrogates.

`problem(value)` says what is wrong (None when clean); `escape(value)` writes each refused character as
`\\uXXXX`, so the output shows what was stored without obeying it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

_REFUSED_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_ALLOWED_FORMAT = frozenset(("\u200c", "\u200d"))


def refused(char: str) -> bool:
    """True for a character that is an instruction to a display rather than text (see the module doc)."""
    return char not in _ALLOWED_FORMAT and unicodedata.category(char) in _REFUSED_CATEGORIES


def problem(value: str) -> str | None:
    """Why `value` is not acceptable text (naming the first refused character), or None when it is."""
    for char in value:
        if refused(char):
            return f"contains the control character U+{ord(char):04X}; use letters, digits and punctuation"
    return None


def check(value: str) -> str:
    """Return `value` unchanged, or raise ValueError saying what is wrong (a pydantic validator)."""
    why = problem(value)
    if why is not None:
        raise ValueError(why)
    return value


def escape(value: str) -> str:
    """`value` with every refused character written as `\\uXXXX` (safe for a terminal or a log line)."""
    if problem(value) is None:
        return value
    return "".join(f"\\u{ord(c):04x}" if refused(c) else c for c in value)


def escape_all(data: Any) -> Any:
    """`escape` applied to every string in nested dicts, lists and tuples (keys too); others unchanged."""
    if isinstance(data, str):
        return escape(data)
    if isinstance(data, Mapping):
        return {escape_all(k): escape_all(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [escape_all(v) for v in data]
    return data
