"""Fingerprint sources, one set per OS: each a `Probe` with a stable name and a raw `read()`.

Windows reads everything through Win32 calls (`pospal_protocol.winprobes`: the registry's 64-bit view, the
SMBIOS firmware table, GetAdaptersAddresses, the storage IOCTL); no PowerShell, WMI or `wmic` (deprecated,
and the old system's source of drift). Linux reads /etc/machine-id, DMI, the root disk's serial and the
primary physical NIC's MAC from /proc and /sys. macOS reads ioreg.

The Windows reads sit behind `WinSources` so tests drive the same code with recorded bytes on any OS.
Raw values never leave `pospal_protocol.fingerprint` unhashed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_DEADLINE_S = 2.0
# Every Windows read is one system call of a few milliseconds; a slow one is retried in the background
# (pospal_protocol.fingerprint.Reprobe) rather than delaying the start.
WINDOWS_DEADLINE_S = 0.3

Runner = Callable[[Sequence[str], float], "str | None"]


class Probe(Protocol):
    """One fingerprint source: a stable component name and a read of its raw value (None if absent)."""

    name: str

    def read(self) -> str | None:
        """Return the raw value, or None when the source is missing. May raise; may hang."""
        ...


def default_probes(platform: str | None = None) -> list[Probe]:
    """The probes for this (or the given) platform."""
    platform = platform or sys.platform
    if platform == "win32":
        return windows_probes()
    if platform == "darwin":
        return macos_probes()
    return linux_probes()


# -------------------------------------------------------------------------------------------- helpers


@dataclass
class FuncProbe:
    """A probe from a name and a zero-argument function."""

    name: str
    func: Callable[[], str | None]

    def read(self) -> str | None:
        """Call the function."""
        return self.func()


class _Once:
    """Run an expensive query (one PowerShell or ioreg call) once, shared by several probes."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self._func = func
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None

    def get(self) -> Any:
        with self._lock:
            if not self._done:
                try:
                    self._value = self._func()
                finally:
                    self._done = True
            return self._value


def run_command(argv: Sequence[str], timeout: float) -> str | None:
    """Run a command without a console window; its stdout, or None on failure or timeout."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, creationflags=flags, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _is_usable_mac(mac: str | None) -> bool:
    """A universally administered unicast MAC (random, virtual and VPN MACs are locally administered)."""
    if not mac or not re.fullmatch(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}", mac.strip()):
        return False
    first = int(mac.strip()[:2], 16)
    return not (first & 0x02 or first & 0x01) and mac.strip().replace("-", ":") != "00:00:00:00:00:00"


# ---------------------------------------------------------------------------------------------- Linux


_VIRTUAL_NIC_PREFIXES = (
    "lo",
    "docker",
    "veth",
    "br-",
    "virbr",
    "vmnet",
    "vboxnet",
    "tun",
    "tap",
    "wg",
    "zt",
    "tailscale",
    "ifb",
    "dummy",
    "bond",
    "team",
)


def linux_machine_id(etc: Path = Path("/etc"), var: Path = Path("/var/lib/dbus")) -> str | None:
    """/etc/machine-id (or the D-Bus copy)."""
    return _read_text(etc / "machine-id") or _read_text(var / "machine-id")


def linux_root_disk_serial(
    proc: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
    run_root: Path = Path("/run"),
) -> str | None:
    """Serial of the disk holding `/`: mountinfo -> major:minor -> whole disk -> its serial.

    Partitions go up to their disk; device-mapper (LVM, LUKS) follows `slaves/` down to a real disk.
    SATA disks have no serial in sysfs, so udev's database (`ID_SERIAL_SHORT`) is the last resort.
    """
    devnum = None
    for line in (_read_text(proc / "self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/":
            devnum = fields[2]
            # Filesystems like btrfs report an anonymous 0:N; the mount source names the real device.
            if devnum.startswith("0:") and " - " in line and sys.platform != "win32":
                source = line.split(" - ", 1)[1].split()[1]
                try:
                    rdev = os.stat(dev_root / source[5:] if source.startswith("/dev/") else source)
                    devnum = f"{os.major(rdev.st_rdev)}:{os.minor(rdev.st_rdev)}"
                except OSError:
                    devnum = None
    if not devnum:
        return None
    try:
        node = (sys_root / "dev/block" / devnum).resolve(strict=True)
    except OSError:
        return None
    for _ in range(8):
        if (node / "partition").exists():
            node = node.parent
            continue
        slaves = sorted((node / "slaves").glob("*")) if (node / "slaves").is_dir() else []
        if slaves:
            node = slaves[0].resolve()
            continue
        break
    for candidate in (node / "serial", node / "device/serial", node / "device/wwid"):
        value = _read_text(candidate)
        if value:
            return value
    udev = _read_text(run_root / "udev/data" / f"b{_read_text(node / 'dev')}") or ""
    found = dict(
        line[2:].split("=", 1) for line in udev.splitlines() if line.startswith("E:") and "=" in line
    )
    return found.get("ID_SERIAL_SHORT") or found.get("ID_SERIAL")


def linux_primary_mac(net: Path = Path("/sys/class/net")) -> str | None:
    """MAC of the first physical NIC (by name) with a universally administered address."""
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        return None
    for name in names:
        if name.startswith(_VIRTUAL_NIC_PREFIXES) or not (net / name / "device").exists():
            continue
        mac = _read_text(net / name / "address")
        if _is_usable_mac(mac):
            return mac
    return None


def linux_probes(
    etc: Path = Path("/etc"),
    sys_root: Path = Path("/sys"),
    proc: Path = Path("/proc"),
    var: Path = Path("/var/lib/dbus"),
    run_root: Path = Path("/run"),
) -> list[Probe]:
    """machine_id, product_uuid, board_serial, disk_serial, mac (roots injectable for tests)."""
    dmi = sys_root / "class/dmi/id"
    return [
        FuncProbe("machine_id", lambda: linux_machine_id(etc, var)),
        FuncProbe("product_uuid", lambda: _read_text(dmi / "product_uuid")),
        FuncProbe("board_serial", lambda: _read_text(dmi / "board_serial")),
        FuncProbe("disk_serial", lambda: linux_root_disk_serial(proc, sys_root, run_root=run_root)),
        FuncProbe("mac", lambda: linux_primary_mac(sys_root / "class/net")),
    ]


# -------------------------------------------------------------------------------------------- Windows


@dataclass(frozen=True)
class WinSources:
    """The raw Windows reads (`pospal_protocol.winprobes`), injectable: tests feed them recorded bytes."""

    smbios: Callable[[], bytes | None]
    adapters: Callable[[], Sequence[Any]]
    disk_serial: Callable[[], str | None]
    machine_guid: Callable[[], str | None]

    @classmethod
    def win32(cls) -> WinSources:
        """The real Win32 calls (ctypes and winreg)."""
        from pospal_protocol import winprobes  # noqa: PLC0415 - its ctypes glue only runs on Windows

        return cls(
            winprobes.read_smbios,
            winprobes.read_adapters,
            winprobes.read_system_disk_serial,
            winprobes.read_machine_guid,
        )


def windows_probes(sources: WinSources | None = None) -> list[Probe]:
    """machine_guid, smbios_uuid, baseboard_serial, bios_serial, disk_serial, mac.

    One `GetSystemFirmwareTable` read serves the three SMBIOS components. Nothing here starts a process,
    so no execution policy, Constrained Language Mode or console code page can change a value.
    """
    from pospal_protocol import smbios, winprobes  # noqa: PLC0415 - pure parsers; cheap

    src = sources or WinSources.win32()
    table = _Once(lambda: smbios.parse(src.smbios() or b""))
    return [
        FuncProbe("machine_guid", src.machine_guid),
        FuncProbe("smbios_uuid", lambda: table.get().system_uuid),
        FuncProbe("baseboard_serial", lambda: table.get().baseboard_serial),
        FuncProbe("bios_serial", lambda: table.get().system_serial),
        FuncProbe("disk_serial", src.disk_serial),
        FuncProbe("mac", lambda: winprobes.pick_adapter_mac(src.adapters())),
    ]


# ---------------------------------------------------------------------------------------------- macOS

IOREG_ARGV = ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]


def parse_ioreg(text: str | None) -> dict[str, str]:
    """`{"IOPlatformUUID": ..., "IOPlatformSerialNumber": ...}` from ioreg's output."""
    return dict(re.findall(r'"(IOPlatformUUID|IOPlatformSerialNumber)"\s*=\s*"([^"]*)"', text or ""))


def macos_probes(runner: Runner = run_command, timeout: float = DEFAULT_DEADLINE_S - 0.2) -> list[Probe]:
    """platform_uuid, serial: both from one ioreg call."""
    io = _Once(lambda: parse_ioreg(runner(IOREG_ARGV, timeout)))
    return [
        FuncProbe("platform_uuid", lambda: io.get().get("IOPlatformUUID")),
        FuncProbe("serial", lambda: io.get().get("IOPlatformSerialNumber")),
    ]
