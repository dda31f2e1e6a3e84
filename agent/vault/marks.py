"""Tamper marks kept outside the data directory, so wiping or editing `state.json` gains nothing.

A mark document holds what must survive the data directory: the clock's high-water mark and rollback
latch, the issue time of the newest token seen, and when this PC's one provisional offline trial started.
It is sealed with the state's key (`agent.vault.seal`); a document that does not verify is ignored, except
that the mere sight of a provisional trial in it means the provisional trial was used (never a new 3 days).
So does the sight of a token's issue time: a PC that has held a server token (a trial, a purchase) never
starts a provisional trial, even after its data directory, machine key included, was wiped (issue 27).

Where the document lives is a `MarkStore`, chosen by the build flavour (`agent.flavour`):

- release, Windows: `RegistryMarkStore`, the `marks` value under `Software\\POSPal\\POSPal License Agent`
  in HKLM (when this user may write there) and HKCU;
- release, elsewhere: `FileMarkStore` at `~/.local/state/pospal/marks.json` (0600), with the home taken
  from the account database, not from `$HOME`;
- development (source tree, tests): a `FileMarkStore` next to the data directory, so test agents never
  share marks; `MemoryMarkStore` is the fake for unit tests.

On load the agent takes the larger of the state's and the marks' high-water mark and newest token time
(`Marks.merge`); on save it writes its current values to both.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent import flavour
from agent.errors import StoreError
from agent.vault.seal import Seal
from agent.vault.store import atomic_write, ensure_dir

MARKS_FORMAT = 1
# Times beyond the year 9999 are not times (and would overflow datetime).
MAX_TS = 253402300799
REGISTRY_PATH = r"Software\POSPal\POSPal License Agent"
REGISTRY_VALUE = "marks"


class MarkStore(Protocol):
    """Where mark documents live: every copy found, and a write to every place that takes one."""

    def read(self) -> list[str]:
        """Every stored copy of the document (none when nothing was ever written). Never raises."""
        ...

    def write(self, text: str) -> None:
        """Store `text` in every place this store uses; raises `StoreError` when none took it."""
        ...


@dataclass(frozen=True)
class Marks:
    """The marks' values (Unix seconds); `provisional_seen` says this PC may not start a provisional trial:
    one was recorded, or a server token was held (`token_iat`), even if its document did not verify."""

    high_water: int | None = None
    token_iat: int | None = None
    provisional_trial: int | None = None
    rolled_back: bool = False
    provisional_seen: bool = False

    def merge(self, other: Marks) -> Marks:
        """Both sets combined the cautious way: later times, earlier trial start, any rollback."""
        return Marks(
            high_water=later(self.high_water, other.high_water),
            token_iat=later(self.token_iat, other.token_iat),
            provisional_trial=earlier(self.provisional_trial, other.provisional_trial),
            rolled_back=self.rolled_back or other.rolled_back,
            provisional_seen=self.provisional_seen
            or other.provisional_seen
            or any(m.provisional_trial is not None or m.token_iat is not None for m in (self, other)),
        )

    def document(self, seal: Seal) -> str:
        """The sealed JSON document of these marks."""
        body = {
            "format": MARKS_FORMAT,
            "high_water": self.high_water,
            "token_iat": self.token_iat,
            "provisional_trial": self.provisional_trial,
            "rolled_back": self.rolled_back,
        }
        return json.dumps({**body, "mac": seal.sign(body)}, sort_keys=True, separators=(",", ":"))


def later(a: int | None, b: int | None) -> int | None:
    """The later of two optional times."""
    return b if a is None else a if b is None else max(a, b)


def earlier(a: int | None, b: int | None) -> int | None:
    """The earlier of two optional times."""
    return b if a is None else a if b is None else min(a, b)


def _time(value: Any) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_TS else None


def parse(text: str, seal: Seal | None) -> Marks:
    """The marks in one document; an unverifiable or malformed one gives empty marks, with
    `provisional_seen` set when it mentions a provisional trial or a token at all (or is not even JSON)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return Marks(provisional_seen=True)
    if not isinstance(doc, dict):
        return Marks(provisional_seen=True)
    body = {k: v for k, v in doc.items() if k != "mac"}
    # A provisional trial, or a server token, ever recorded here: this PC's provisional trial is spent.
    seen = doc.get("provisional_trial") is not None or doc.get("token_iat") is not None
    if seal is None or doc.get("format") != MARKS_FORMAT or not seal.verify(body, doc.get("mac")):
        return Marks(provisional_seen=seen)
    return Marks(
        high_water=_time(doc.get("high_water")),
        token_iat=_time(doc.get("token_iat")),
        provisional_trial=_time(doc.get("provisional_trial")),
        rolled_back=doc.get("rolled_back") is True,
        provisional_seen=seen,
    )


def read_marks(store: MarkStore, seal: Seal | None) -> Marks:
    """Every copy in `store`, parsed and merged (empty marks when there is none)."""
    marks = Marks()
    for text in store.read():
        marks = marks.merge(parse(text, seal))
    return marks


# ------------------------------------------------------------------------------------------ the stores


class MemoryMarkStore:
    """The fake: one copy in memory (`text`); `fail = True` makes writes fail like a locked registry."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.fail = False

    def read(self) -> list[str]:
        """The copy, if any."""
        return [] if self.text is None else [self.text]

    def write(self, text: str) -> None:
        """Keep `text` (or raise `StoreError` when `fail` is set)."""
        if self.fail:
            raise StoreError("the mark store refused the write")
        self.text = text


class FileMarkStore:
    """One 0600 file, written atomically (its directory 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[str]:
        """The file's text, if it exists and is readable."""
        try:
            return [self.path.read_text(encoding="utf-8")]
        except (OSError, UnicodeDecodeError):
            return []

    def write(self, text: str) -> None:
        """Replace the file atomically; raises `StoreError`."""
        ensure_dir(self.path.parent)
        atomic_write(self.path, text.encode("utf-8"), mode=0o600)


class RegistryMarkStore:
    """The `marks` value under `REGISTRY_PATH` in HKLM and HKCU (Windows). `winreg` is injectable so the
    conformance test can run it against a fake registry anywhere."""

    def __init__(self, winreg: Any = None) -> None:
        if winreg is None:
            import winreg as real  # noqa: PLC0415 (Windows only)

            winreg = real
        self.winreg = winreg
        self.hives = (winreg.HKEY_LOCAL_MACHINE, winreg.HKEY_CURRENT_USER)

    def read(self) -> list[str]:
        """The value from each hive that has one."""
        out = []
        for hive in self.hives:
            try:
                with self.winreg.OpenKey(hive, REGISTRY_PATH, 0, self.winreg.KEY_READ) as key:
                    value, kind = self.winreg.QueryValueEx(key, REGISTRY_VALUE)
            except OSError:
                continue
            if kind == self.winreg.REG_SZ and isinstance(value, str):
                out.append(value)
        return out

    def write(self, text: str) -> None:
        """Set the value in every hive this user may write (HKLM needs the installer's permission)."""
        written = 0
        for hive in self.hives:
            try:
                with self.winreg.CreateKeyEx(hive, REGISTRY_PATH, 0, self.winreg.KEY_SET_VALUE) as key:
                    self.winreg.SetValueEx(key, REGISTRY_VALUE, 0, self.winreg.REG_SZ, text)
                written += 1
            except OSError:
                continue
        if not written:
            raise StoreError("cannot write the tamper marks to the registry")


def _home() -> Path:
    """The account's home from the account database (a changed $HOME must not move the marks)."""
    if sys.platform == "win32":  # no account database: the profile directory
        return Path.home()
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return Path.home()


def default_store(data_dir: Path) -> MarkStore:
    """The mark store for this build (see the module docstring)."""
    if flavour.is_release():
        if sys.platform == "win32":
            return RegistryMarkStore()
        return FileMarkStore(_home() / ".local" / "state" / "pospal" / "marks.json")
    data_dir = Path(data_dir)
    return FileMarkStore(data_dir.parent / f"{data_dir.name}.marks.json")
