"""The install directory the launcher runs from: versions side by side and the pointers between them.

    <install>/pospal-launcher[.exe]          the small, stable launcher (never replaced by an update)
    <install>/versions/<version>/            one complete agent build each; its entry is ENTRY below
    <install>/current                        the version the launcher starts (a one-line pointer file)
    <install>/previous                       the version before the last swap (what a rollback goes to)
    <install>/pending                        a staged version waiting for an idle moment (the agent's)
    <install>/failed.json                    versions that failed their start check: never offered again
    <install>/launcher.json                  the launcher's last swap: version, outcome, gap, reason
    <install>/tuf/                           the update client's verified metadata and downloads

`python -m agent.selfupdate.install seed DIR ENTRY` makes the first version of an install from an agent
installed another way (the Linux service's venv, `packaging/linux/install.sh`): `versions/<this version>/`
holds only an entry that runs ENTRY, and `current` points at it unless a newer version already runs.
On Windows (where a version cannot be a shell script) a seed is a command instead: `versions/<v>/` holds
only `seeded-from`, a JSON list (the installed `pospal-agent.exe`, which the Windows service seeds from
itself at each start: `agent.host.winservice.run_core`), and `command(v)` is that list.

Pointers are files, not symlinks (a Windows service account may not create symlinks), each written with
a temporary file and `os.replace`, so a power cut leaves either the old or the new pointer. Standard
library only: the launcher imports this and must stay small and stable across agent versions.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENTRY = "pospal-agent.exe" if os.name == "nt" else "pospal-agent"
SEEDED = "seeded-from"  # in a version made by `seed`: the entry it runs (a JSON command list on Windows)
_VERSION = re.compile(r"^\d{1,6}(\.\d{1,6}){0,3}$")


def version_key(version: str) -> tuple[int, ...]:
    """Sort key of a dotted version; raises ValueError for anything else."""
    if not _VERSION.match(version):
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(p) for p in version.split("."))


def platform_name() -> str:
    """This OS as the update repository names it: linux, windows or darwin."""
    if os.name == "nt":
        return "windows"
    return "darwin" if sys.platform == "darwin" else "linux"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` through a temporary file, fsync and `os.replace` (readers see old or new, whole)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Install:
    """One install directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.tuf_dir = self.root / "tuf"

    def entry(self, version: str) -> Path:
        """The executable of `version` (a command seed's: the program its command runs)."""
        return Path(self.command(version)[0])

    def command(self, version: str) -> list[str]:
        """How to start `version`: its entry, or the command a command seed names."""
        seeded = self._seeded_command(version)
        if seeded is not None and not (self.versions / version / ENTRY).exists():
            return seeded
        return [str(self.versions / version / ENTRY)]

    def installed(self) -> list[str]:
        """Versions with an entry on disk, oldest first."""
        if not self.versions.is_dir():
            return []
        found = []
        for d in self.versions.iterdir():
            try:
                version_key(d.name)
            except ValueError:
                continue  # a staging directory or something the operator left
            if (d / ENTRY).exists() or self._seeded_command(d.name) is not None:
                found.append(d.name)
        return sorted(found, key=version_key)

    def _read(self, name: str) -> str | None:
        try:
            text = (self.root / name).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        try:
            version_key(text)
        except ValueError:
            return None
        return text

    def _write(self, name: str, version: str | None) -> None:
        path = self.root / name
        if version is None:
            path.unlink(missing_ok=True)
            return
        version_key(version)
        atomic_write(path, f"{version}\n".encode())

    def current(self) -> str | None:
        """The pointed-at version, else the newest installed one (a fresh install has no pointer yet)."""
        pointed = self._read("current")
        if pointed is not None and self.entry(pointed).exists():
            return pointed
        installed = self.installed()
        return installed[-1] if installed else None

    def previous(self) -> str | None:
        """The version before the last swap, when it is still installed."""
        version = self._read("previous")
        return version if version is not None and self.entry(version).exists() else None

    def pending(self) -> str | None:
        """The staged version waiting to be swapped in, if it is installed and has not failed."""
        version = self._read("pending")
        if version is None or not self.entry(version).exists() or version in self.failed():
            return None
        return version

    def set_current(self, version: str, previous: str | None) -> None:
        """Point `current` at `version` (and `previous` at the one it replaces)."""
        self._write("previous", previous)
        self._write("current", version)

    def set_pending(self, version: str | None) -> None:
        """Ask the launcher to swap to `version` at the agent's next idle exit (None: nothing pending)."""
        self._write("pending", version)

    def failed(self) -> dict[str, str]:
        """Versions that failed their start check, with the reason."""
        return {str(k): str(v) for k, v in self._json("failed.json").items()}

    def mark_failed(self, version: str, reason: str) -> None:
        """Remember that `version` failed to start (it is never staged or swapped to again)."""
        failed = self.failed()
        failed[version] = reason
        atomic_write(self.root / "failed.json", json.dumps(failed, indent=2).encode())

    def prune(self, keep: set[str | None]) -> list[str]:
        """Delete installed versions not in `keep` (and leftover staging dirs); returns what went."""
        import shutil

        gone = []
        for d in self.versions.iterdir() if self.versions.is_dir() else ():
            if d.name in keep or not d.is_dir():
                continue
            if d.name.startswith(".staging-") or d.name in self.installed():
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
        return gone

    def last_swap(self) -> dict[str, Any]:
        """What the launcher recorded about its last swap ({} when none)."""
        return self._json("launcher.json")

    def record_swap(self, report: dict[str, Any]) -> None:
        """Record the outcome of a swap for the agent (and its next refresh) to read."""
        atomic_write(self.root / "launcher.json", json.dumps(report, indent=2).encode())

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def seed(self, version: str, entry: Path | Sequence[str], *, script: bool | None = None) -> bool:
        """Make `versions/<version>/` run `entry` and point `current` at it unless a newer version is
        current; True when it is current now. POSIX (`script`, the default there): an entry script that
        execs `entry`. Windows: a command seed, `entry` being the program or a full command list.

        Other seeded versions running the same `entry` go: that entry now runs this version's code, so
        they would answer with the wrong version (and a rollback to them would fail its start check).
        """
        version_key(version)
        script = os.name != "nt" if script is None else script
        command = [str(entry)] if isinstance(entry, (str, Path)) else [str(word) for word in entry]
        if not command:
            raise ValueError("seed needs a command")
        self.versions.mkdir(parents=True, exist_ok=True)
        here = self.versions / version
        here.mkdir(exist_ok=True)
        if script:
            if len(command) != 1:
                raise ValueError("an entry script execs one program")
            text = f'#!/bin/sh\nexec {shlex.quote(command[0])} "$@"\n'
            atomic_write(here / ENTRY, text.encode())
            os.chmod(here / ENTRY, 0o755)  # noqa: S103 - whoever runs the launcher runs it; it holds no secret
            atomic_write(here / SEEDED, f"{command[0]}\n".encode())
        else:
            (here / ENTRY).unlink(missing_ok=True)
            atomic_write(here / SEEDED, json.dumps(command).encode())
        import shutil

        for other in self.installed():
            if other != version and self._seeded_from(other) == self._seeded_from(version):
                shutil.rmtree(self.versions / other, ignore_errors=True)
        current = self._read("current")
        if (
            current is not None
            and self.entry(current).exists()
            and version_key(current) > version_key(version)
        ):
            return False
        self.set_current(version, previous=None)
        return True

    def _seeded_from(self, version: str) -> str | None:
        try:
            return (self.versions / version / SEEDED).read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def _seeded_command(self, version: str) -> list[str] | None:
        """The command list of a command seed, None for anything else (an entry script's seeded-from
        is a plain path, not JSON)."""
        text = self._seeded_from(version)
        if not text or not text.startswith("["):
            return None
        try:
            command = json.loads(text)
        except ValueError:
            return None
        if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
            return None
        return command


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m agent.selfupdate.install seed DIR ENTRY`: this agent's version as the first version of
    DIR."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] != "seed":
        print("usage: python -m agent.selfupdate.install seed INSTALL_DIR AGENT_ENTRY", file=sys.stderr)
        return 2
    from pospal_protocol import __version__

    install, entry = Install(Path(args[1])), Path(args[2]).absolute()
    if not os.access(entry, os.X_OK):
        print(f"agent.selfupdate.install: {entry} is not an executable agent entry", file=sys.stderr)
        return 1
    made_current = install.seed(__version__, entry)
    print(
        f"{__version__} {'is current' if made_current else f'installed; {install.current()} stays current'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
