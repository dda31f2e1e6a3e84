"""Pin the Windows harness's wheels to the versions the Linux tests use.

Reads `pip freeze` of the Linux venv on stdin and prints a requirements list for
`pip install --target ... --platform win_amd64 --no-deps`: the same pins, less what has no place or no
wheel on Windows, plus the Windows-only dependencies that pip would skip (pip evaluates environment
markers for the Linux host, so `pywin32-ctypes; sys_platform == "win32"` never comes by itself).

    .venv/bin/pip freeze --exclude-editable | python packaging/windows/wheels.py > requirements.txt
"""

import re
import sys

# Linux-only, or only the Linux tests and tools use them (plots, linters, the Stripe emulator, the
# PostgreSQL driver's binary build); none is imported by the agent, the tray or the Windows tests.
SKIP = {
    "uvloop", "jeepney", "secretstorage", "ruff",
    "matplotlib", "numpy", "contourpy", "fonttools", "kiwisolver", "pillow", "cycler", "pyparsing",
    "psycopg-binary", "localstripe", "schemathesis", "harfile", "hypothesis-graphql", "graphql-core",
    "jsonschema-rs", "pyrate-limiter", "werkzeug", "aiosmtpd", "atpublic",
}

# What Windows needs on top: keyring's Credential Manager backend and PyInstaller's PE tools
# (pywin32-ctypes, pefile), pytest's colours, and the time-zone data tzlocal reads on Windows.
WINDOWS_ONLY = {
    "pywin32-ctypes": "0.2.3",
    "pefile": "2024.8.26",
    "colorama": "0.4.6",
}


def normalise(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def windows_requirements(freeze_lines: list[str]) -> list[str]:
    """The pinned `name==version` lines for the Windows harness, sorted by name."""
    pins: dict[str, str] = {}
    for line in freeze_lines:
        line = line.strip()
        if not line or line.startswith(("#", "-e")) or "==" not in line:
            continue
        name, version = line.split("==", 1)
        if normalise(name) not in SKIP:
            pins[normalise(name)] = version
    for name, version in WINDOWS_ONLY.items():
        pins.setdefault(name, version)
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


if __name__ == "__main__":
    print("\n".join(windows_requirements(sys.stdin.read().splitlines())))
