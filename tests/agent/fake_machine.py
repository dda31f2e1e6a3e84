"""A pretend computer for agent processes in tests: fixed fingerprint sources named after a machine.

Two agents on this one test host must look like two PCs (a proxy to "another machine"), and the POS
client must know which one it runs on. `sitecustomize_dir()` writes a `sitecustomize.py` that, in any
Python process started with that directory first on PYTHONPATH and `POSPAL_TEST_FAKE_MACHINE=<name>`,
replaces the fingerprint probes with fixed values derived from `<name>`; `hashes(name)` gives the same
machine's hashes for the client's `fingerprinter`.
"""

from __future__ import annotations

from pathlib import Path

ENV = "POSPAL_TEST_FAKE_MACHINE"
NAMES = ("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")


def _value(machine: str, name: str) -> str:
    return f"{machine}-{name}"


def probes(machine: str) -> list:
    """Fixed probes for `machine`."""
    from pospal_protocol.probes import FuncProbe

    return [FuncProbe(name, lambda name=name: _value(machine, name)) for name in NAMES]


def hashes(machine: str) -> dict[str, str]:
    """The fingerprint hashes an agent on `machine` binds (what the POS on that machine probes)."""
    from pospal_protocol.fingerprint import hash_component, normalize

    return {name: hash_component(name, normalize(_value(machine, name)) or "") for name in NAMES}


def install(machine: str) -> None:
    """Make this process's fingerprint that of `machine`."""
    import pospal_protocol.fingerprint as fingerprint

    fingerprint.default_probes = lambda platform=None: probes(machine)
    fingerprint.clear_cache()


_SITECUSTOMIZE = f'''
import os
if os.environ.get("{ENV}"):
    from tests.agent import fake_machine
    fake_machine.install(os.environ["{ENV}"])
'''


def sitecustomize_dir(path: Path) -> Path:
    """Write the sitecustomize.py into `path` (put it first on PYTHONPATH); returns `path`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return path
