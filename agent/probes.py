"""Fingerprint sources, one set per OS: each a `Probe` with a stable name and a raw `read()`.

Windows reads MachineGuid from the registry and the SMBIOS/board/BIOS/system-disk serials and the
primary NIC through CIM in one PowerShell call (`Get-CimInstance ... | ConvertTo-Json`; never `wmic`,
which is deprecated and was the old system's source of drift). Linux reads /etc/machine-id, DMI, the
root disk's serial and the primary physical NIC's MAC from /proc and /sys. macOS reads ioreg.

Windows-only pieces (the registry, PowerShell) sit behind small interfaces (`Registry`, a `Runner`) so
tests drive them with fakes on any OS. Raw values never leave `agent.fingerprint` unhashed.
"""

from __future__ import annotations

import json
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
# PowerShell alone can take over a second to start on a cold Windows machine.
WINDOWS_DEADLINE_S = 6.0

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
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              creationflags=flags, check=False)
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


_VIRTUAL_NIC_PREFIXES = ("lo", "docker", "veth", "br-", "virbr", "vmnet", "vboxnet", "tun", "tap", "wg",
                         "zt", "tailscale", "ifb", "dummy", "bond", "team")


def linux_machine_id(etc: Path = Path("/etc"), var: Path = Path("/var/lib/dbus")) -> str | None:
    """/etc/machine-id (or the D-Bus copy)."""
    return _read_text(etc / "machine-id") or _read_text(var / "machine-id")


def linux_root_disk_serial(proc: Path = Path("/proc"), sys_root: Path = Path("/sys"),
                           dev_root: Path = Path("/dev"), run_root: Path = Path("/run")) -> str | None:
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
            if devnum.startswith("0:") and " - " in line:
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
    found = dict(line[2:].split("=", 1) for line in udev.splitlines()
                 if line.startswith("E:") and "=" in line)
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


def linux_probes(etc: Path = Path("/etc"), sys_root: Path = Path("/sys"), proc: Path = Path("/proc"),
                 var: Path = Path("/var/lib/dbus"), run_root: Path = Path("/run")) -> list[Probe]:
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


class Registry(Protocol):
    """Reads one string value from HKEY_LOCAL_MACHINE (real: winreg; tests: a dict)."""

    def read_hklm(self, key: str, value: str) -> str | None:
        """The value, or None."""
        ...


class WinRegistry:
    """`Registry` over winreg, reading the 64-bit view even from a 32-bit process."""

    def read_hklm(self, key: str, value: str) -> str | None:
        """The string value at HKLM\\key\\value, or None."""
        import winreg  # noqa: PLC0415 - Windows only

        access = winreg.KEY_READ | winreg.KEY_WOW64_64KEY
        try:
            with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key, 0, access) as handle:
                data, _kind = winreg.QueryValueEx(handle, value)
        except OSError:
            return None
        return str(data) if data else None


# One PowerShell process for every CIM component: each start costs hundreds of milliseconds.
CIM_SCRIPT = r"""
$ErrorActionPreference = 'SilentlyContinue'
$p = Get-CimInstance -ClassName Win32_ComputerSystemProduct | Select-Object -First 1
$b = Get-CimInstance -ClassName Win32_BaseBoard | Select-Object -First 1
$s = Get-CimInstance -ClassName Win32_BIOS | Select-Object -First 1
$ld = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$($env:SystemDrive)'"
$disk = $ld | Get-CimAssociatedInstance -ResultClassName Win32_DiskPartition |
  Get-CimAssociatedInstance -ResultClassName Win32_DiskDrive | Select-Object -First 1
$nics = @(Get-CimInstance -ClassName Win32_NetworkAdapter -Filter "PhysicalAdapter=True" |
  Where-Object { $_.MACAddress } | ForEach-Object { @{ mac = $_.MACAddress; pnp = $_.PNPDeviceID } })
[pscustomobject]@{
  smbios_uuid = $p.UUID; baseboard_serial = $b.SerialNumber; bios_serial = $s.SerialNumber
  disk_serial = $disk.SerialNumber; nics = $nics
} | ConvertTo-Json -Compress -Depth 4
"""


def powershell_argv() -> list[str]:
    """The PowerShell command line: the full System32 path when known, so a hijacked PATH cannot swap it."""
    root = os.environ.get("SystemRoot")
    exe = (str(Path(root) / "System32/WindowsPowerShell/v1.0/powershell.exe") if root else "powershell.exe")
    return [exe, "-NoLogo", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command",
            CIM_SCRIPT]


def parse_cim_output(text: str | None) -> dict[str, Any]:
    """Parse the CIM script's JSON; `{}` for anything unusable."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def pick_windows_mac(nics: Any) -> str | None:
    """The primary physical NIC: PCI devices first (USB next), never software (`ROOT\\`) adapters."""
    if isinstance(nics, dict):
        nics = [nics]
    if not isinstance(nics, list):
        return None
    ranked = []
    for nic in nics:
        if not isinstance(nic, dict):
            continue
        mac, pnp = nic.get("mac"), str(nic.get("pnp") or "").upper()
        if not _is_usable_mac(mac) or pnp.startswith(("ROOT\\", "SWD\\")):
            continue
        ranked.append((0 if pnp.startswith("PCI\\") else 1, pnp, mac))
    return sorted(ranked)[0][2] if ranked else None


def windows_probes(registry: Registry | None = None, runner: Runner = run_command,
                   timeout: float = WINDOWS_DEADLINE_S - 0.5) -> list[Probe]:
    """machine_guid, smbios_uuid, baseboard_serial, bios_serial, disk_serial, mac.

    `registry` and `runner` are injectable so tests can drive the same code with fakes off Windows.
    """
    reg = registry or WinRegistry()
    cim = _Once(lambda: parse_cim_output(runner(powershell_argv(), timeout)))

    def field(name: str) -> Callable[[], str | None]:
        return lambda: (lambda v: str(v) if v is not None else None)(cim.get().get(name))

    return [
        FuncProbe("machine_guid", lambda: reg.read_hklm(r"SOFTWARE\Microsoft\Cryptography", "MachineGuid")),
        FuncProbe("smbios_uuid", field("smbios_uuid")),
        FuncProbe("baseboard_serial", field("baseboard_serial")),
        FuncProbe("bios_serial", field("bios_serial")),
        FuncProbe("disk_serial", field("disk_serial")),
        FuncProbe("mac", lambda: pick_windows_mac(cim.get().get("nics"))),
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
