"""Windows fingerprint sources through Win32 APIs (ctypes): no PowerShell, no WMI, never `wmic`.

- SMBIOS: `GetSystemFirmwareTable('RSMB')`, parsed by `pospal_protocol.smbios` (system UUID, system serial
  shown as the BIOS serial, baseboard serial). One call serves the three components.
- MACs: `GetAdaptersAddresses`, filtered by `pick_adapter_mac` (Ethernet/Wi-Fi only; no loopback,
  tunnel, virtual-switch, VPN or locally administered address).
- System disk serial: `IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS` on the system volume, then
  `IOCTL_STORAGE_QUERY_PROPERTY` on that physical drive, both opened with zero access rights (no admin).
- MachineGuid: the registry's 64-bit view (`KEY_WOW64_64KEY`), so a 32-bit process reads the same value.

Each call takes milliseconds; `pospal_protocol.fingerprint.collect` still runs each under the shared deadline.
The byte-level parts (`parse_storage_descriptor`, `pick_adapter_mac`, `pospal_protocol.smbios.parse`) are pure
and tested on every OS with recorded bytes; only the thin ctypes glue needs Windows.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

RSMB = int.from_bytes(b"RSMB", "big")
IF_TYPE_ETHERNET = 6
IF_TYPE_WIFI = 71
IF_TYPE_LOOPBACK = 24
IF_TYPE_TUNNEL = 131
IOCTL_STORAGE_QUERY_PROPERTY = 0x002D1400
IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS = 0x00560000
MACHINE_GUID_KEY = r"SOFTWARE\Microsoft\Cryptography"

# Software adapters that report an Ethernet type. Their MACs are made up (often per boot or per install).
_VIRTUAL_MARKERS = (
    "virtual",
    "hyper-v",
    "vmware",
    "virtualbox",
    "vbox",
    "tap-",
    "tap ",
    "vpn",
    "wan miniport",
    "loopback",
    "tunnel",
    "wireguard",
    "tailscale",
    "zerotier",
    "npcap",
    "bluetooth",
    "kernel debug",
    "teredo",
    "isatap",
    "pseudo",
    "docker",
    "wsl",
)


@dataclass(frozen=True)
class AdapterRecord:
    """What `GetAdaptersAddresses` says about one adapter, reduced to what the filter needs."""

    if_type: int
    mac: bytes
    description: str = ""
    friendly_name: str = ""


def format_mac(mac: bytes) -> str:
    """`AA:BB:CC:DD:EE:FF` (the form Windows' CIM used, so bindings made before keep their hash)."""
    return ":".join(f"{b:02X}" for b in mac)


def is_physical(record: AdapterRecord) -> bool:
    """Ethernet or Wi-Fi, a 6-byte universally administered unicast MAC, and no virtual marker."""
    if record.if_type not in (IF_TYPE_ETHERNET, IF_TYPE_WIFI) or len(record.mac) != 6:
        return False
    if record.mac[0] & 0x03 or record.mac == b"\x00" * 6:
        return False
    text = f"{record.description} {record.friendly_name}".lower()
    return not any(marker in text for marker in _VIRTUAL_MARKERS)


def pick_adapter_mac(records: Iterable[AdapterRecord]) -> str | None:
    """The primary physical adapter's MAC: wired before wireless, then the lowest MAC (stable order)."""
    ranked = sorted((0 if r.if_type == IF_TYPE_ETHERNET else 1, r.mac) for r in records if is_physical(r))
    return format_mac(ranked[0][1]) if ranked else None


def parse_storage_descriptor(buf: bytes) -> str | None:
    """The serial number in a STORAGE_DEVICE_DESCRIPTOR, or None.

    Layout: Version, Size (DWORDs), DeviceType, DeviceTypeModifier, RemovableMedia, CommandQueueing
    (bytes), then VendorId/ProductId/ProductRevision/SerialNumber offsets (DWORDs at 12, 16, 20, 24).
    An offset of 0 (or past the buffer) means the device gave none.
    """
    if len(buf) < 28:
        return None
    size = min(struct.unpack_from("<I", buf, 4)[0] or len(buf), len(buf))
    offset = struct.unpack_from("<I", buf, 24)[0]
    if offset == 0 or offset >= size:
        return None
    raw = buf[offset:size].split(b"\x00", 1)[0]
    return raw.decode("ascii", errors="replace").strip() or None


def parse_disk_extents(buf: bytes) -> int | None:
    """The disk number of the first extent in a VOLUME_DISK_EXTENTS buffer, or None."""
    # DWORD NumberOfDiskExtents, 4 bytes padding, then DISK_EXTENT {DWORD DiskNumber, pad, 2 x LONGLONG}.
    if len(buf) < 12 or struct.unpack_from("<I", buf, 0)[0] < 1:
        return None
    return struct.unpack_from("<I", buf, 8)[0]


# ------------------------------------------------------------------------------------- Windows glue


def _kernel32():  # pragma: no cover - Windows only
    if sys.platform != "win32":  # also tells the type checker: what follows is Windows code
        raise OSError("Windows only")
    import ctypes
    from ctypes import wintypes

    k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    k32.GetSystemFirmwareTable.argtypes = [wintypes.DWORD, wintypes.DWORD, ctypes.c_void_p, wintypes.DWORD]
    k32.GetSystemFirmwareTable.restype = wintypes.UINT
    k32.CreateFileW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]
    k32.CreateFileW.restype = wintypes.HANDLE
    k32.DeviceIoControl.argtypes = [
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
        ctypes.c_void_p,
    ]
    k32.DeviceIoControl.restype = wintypes.BOOL
    k32.CloseHandle.argtypes = [wintypes.HANDLE]
    return k32


def read_smbios() -> bytes | None:  # pragma: no cover - Windows only
    """The raw `RSMB` firmware table, or None."""
    import ctypes

    k32 = _kernel32()
    size = k32.GetSystemFirmwareTable(RSMB, 0, None, 0)
    if not size:
        return None
    buf = ctypes.create_string_buffer(size)
    got = k32.GetSystemFirmwareTable(RSMB, 0, buf, size)
    return buf.raw[:got] if 0 < got <= size else None


def _ioctl(k32, path: str, code: int, inp: bytes, out_size: int) -> bytes | None:  # pragma: no cover
    import ctypes
    from ctypes import wintypes

    share = 0x1 | 0x2  # FILE_SHARE_READ | FILE_SHARE_WRITE
    handle = k32.CreateFileW(path, 0, share, None, 3, 0, None)  # OPEN_EXISTING, zero access: no admin
    if handle in (None, ctypes.c_void_p(-1).value):
        return None
    try:
        out = ctypes.create_string_buffer(out_size)
        got = wintypes.DWORD(0)
        inbuf = ctypes.create_string_buffer(inp, len(inp)) if inp else None
        ok = k32.DeviceIoControl(handle, code, inbuf, len(inp), out, out_size, ctypes.byref(got), None)
        return out.raw[: got.value] if ok else None
    finally:
        k32.CloseHandle(handle)


def read_system_disk_serial() -> str | None:  # pragma: no cover - Windows only
    """The serial of the physical disk holding the system drive (PhysicalDrive0 if extents fail)."""
    k32 = _kernel32()
    drive = (os.environ.get("SystemDrive") or "C:").rstrip("\\")
    extents = _ioctl(k32, rf"\\.\{drive}", IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, b"", 64)
    number = parse_disk_extents(extents or b"")
    query = struct.pack("<II4s", 0, 0, b"")  # StorageDeviceProperty, PropertyStandardQuery
    desc = _ioctl(k32, rf"\\.\PhysicalDrive{number or 0}", IOCTL_STORAGE_QUERY_PROPERTY, query, 4096)
    return parse_storage_descriptor(desc or b"")


def read_adapters() -> list[AdapterRecord]:  # pragma: no cover - Windows only
    """Every adapter `GetAdaptersAddresses` lists (no address lists: only names, type and MAC)."""
    if sys.platform != "win32":  # also tells the type checker: what follows is Windows code
        raise OSError("Windows only")
    import ctypes
    from ctypes import wintypes

    class Adapter(ctypes.Structure):
        pass

    # IP_ADAPTER_ADDRESSES_LH up to IfType: the fields after it are not read.
    Adapter._fields_ = [
        ("Length", wintypes.ULONG),
        ("IfIndex", wintypes.DWORD),
        ("Next", ctypes.POINTER(Adapter)),
        ("AdapterName", ctypes.c_char_p),
        ("FirstUnicastAddress", ctypes.c_void_p),
        ("FirstAnycastAddress", ctypes.c_void_p),
        ("FirstMulticastAddress", ctypes.c_void_p),
        ("FirstDnsServerAddress", ctypes.c_void_p),
        ("DnsSuffix", ctypes.c_wchar_p),
        ("Description", ctypes.c_wchar_p),
        ("FriendlyName", ctypes.c_wchar_p),
        ("PhysicalAddress", ctypes.c_ubyte * 8),
        ("PhysicalAddressLength", wintypes.ULONG),
        ("Flags", wintypes.ULONG),
        ("Mtu", wintypes.ULONG),
        ("IfType", wintypes.DWORD),
    ]
    iphlpapi = ctypes.WinDLL("iphlpapi")
    iphlpapi.GetAdaptersAddresses.argtypes = [
        wintypes.ULONG,
        wintypes.ULONG,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(wintypes.ULONG),
    ]
    iphlpapi.GetAdaptersAddresses.restype = wintypes.ULONG
    # GAA_FLAG_SKIP_UNICAST | ANYCAST | MULTICAST | DNS_SERVER: only the adapter rows are wanted.
    flags = 0x1 | 0x2 | 0x4 | 0x8
    size = wintypes.ULONG(16 * 1024)
    for _ in range(4):
        buf = ctypes.create_string_buffer(size.value)
        rc = iphlpapi.GetAdaptersAddresses(0, flags, None, buf, ctypes.byref(size))
        if rc == 111:  # ERROR_BUFFER_OVERFLOW: size now holds what is needed
            continue
        if rc != 0:
            return []
        records = []
        node = ctypes.cast(buf, ctypes.POINTER(Adapter))
        while node:
            a = node.contents
            mac = bytes(a.PhysicalAddress[: min(a.PhysicalAddressLength, 8)])
            records.append(AdapterRecord(int(a.IfType), mac, a.Description or "", a.FriendlyName or ""))
            node = a.Next
        return records
    return []


def read_machine_guid() -> str | None:  # pragma: no cover - Windows only
    """HKLM\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid from the 64-bit view."""
    if sys.platform != "win32":  # also tells the type checker: what follows is Windows code
        raise OSError("Windows only")
    import winreg

    access = winreg.KEY_READ | winreg.KEY_WOW64_64KEY
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, MACHINE_GUID_KEY, 0, access) as handle:
            data, _kind = winreg.QueryValueEx(handle, "MachineGuid")
    except OSError:
        return None
    return str(data) if data else None


def windows_version() -> tuple[int, int, int] | None:
    """(major, minor, build) of the running Windows, or None elsewhere."""
    if sys.platform != "win32":
        return None
    v = sys.getwindowsversion()
    return (v.major, v.minor, v.build)
