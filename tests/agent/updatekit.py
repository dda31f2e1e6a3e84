"""Builds for the update tests: agent versions made from this source tree, and broken ones.

A version directory holds a copy of `agent/` and `protocol/` with `protocol.__version__` set to the
version, and the entry `pospal-agent`, a shell script that runs `python -m agent.cli` on that copy: a real
agent of that version, as a release build would be, without PyInstaller.
"""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "_build.py")


def make_version(dest: Path, version: str) -> Path:
    """A working agent build of `version` in `dest` (created)."""
    dest.mkdir(parents=True)
    for pkg in ("agent", "protocol"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=_IGNORE)
    init = dest / "protocol" / "__init__.py"
    text = re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text())
    init.write_text(text)
    _entry(dest, f'PYTHONPATH="$here" exec "{sys.executable}" -m agent.cli "$@"')
    return dest


def make_broken(dest: Path, how: str = "silent") -> Path:
    """A build that starts but never answers (`silent`) or exits at once (`crash`)."""
    dest.mkdir(parents=True)
    _entry(dest, "exec sleep 600" if how == "silent" else "echo 'v3: cannot start' >&2; exit 3")
    return dest


def _entry(dest: Path, line: str) -> None:
    entry = dest / "pospal-agent"
    entry.write_text(f'#!/bin/sh\nhere="$(cd "$(dirname "$0")" && pwd)"; cd "$here"\n{line}\n')
    entry.chmod(0o755)


def zip_dir(src: Path, out: Path) -> Path:
    """The release zip of a version directory (what the publisher signs)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(src).as_posix())
    return out
