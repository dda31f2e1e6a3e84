"""Win32 fingerprint reads (pospal_protocol/winprobes.py): the adapter filter and the storage/volume IOCTL
parsers
on recorded records and bytes (every OS), and the real calls under Windows (Wine in CI)."""

from __future__ import annotations

import struct
import sys
import time

import pytest

from pospal_protocol import fingerprint as fpm
from pospal_protocol import probes, winprobes
from pospal_protocol.winprobes import AdapterRecord

ETH, WIFI = winprobes.IF_TYPE_ETHERNET, winprobes.IF_TYPE_WIFI

# What GetAdaptersAddresses lists on a typical till with Hyper-V, a VPN and Bluetooth installed.
ADAPTERS = [
    AdapterRecord(winprobes.IF_TYPE_LOOPBACK, b"", "Software Loopback Interface 1", "Loopback"),
    AdapterRecord(ETH, bytes.fromhex("00155d010203"), "Hyper-V Virtual Ethernet Adapter", "vEthernet (WSL)"),
    AdapterRecord(ETH, bytes.fromhex("00ff1a2b3c4d"), "TAP-Windows Adapter V9", "OpenVPN"),
    AdapterRecord(winprobes.IF_TYPE_TUNNEL, bytes.fromhex("000000000000"), "Teredo Tunneling", "Teredo"),
    AdapterRecord(ETH, bytes.fromhex("0a0027000005"), "Realtek USB GbE", "Eth 3"),  # locally administered
    AdapterRecord(ETH, bytes.fromhex("e4b97a001122"), "Bluetooth Device (Personal Area Network)", "BT"),
    AdapterRecord(WIFI, bytes.fromhex("a0a4c5112233"), "Intel(R) Wi-Fi 6 AX201 160MHz", "Wi-Fi"),
    AdapterRecord(ETH, bytes.fromhex("d8bbc1aabbcc"), "Intel(R) Ethernet Connection (14) I219-V", "Ethernet"),
    AdapterRecord(ETH, bytes.fromhex("f8e43b112233"), "Realtek USB GbE Family Controller", "Ethernet 2"),
]


def test_the_wired_physical_adapter_wins_over_virtual_tunnel_vpn_and_wireless():
    assert winprobes.pick_adapter_mac(ADAPTERS) == "D8:BB:C1:AA:BB:CC"


def test_wireless_is_used_when_there_is_no_wired_adapter():
    assert winprobes.pick_adapter_mac([a for a in ADAPTERS if a.if_type != ETH]) == "A0:A4:C5:11:22:33"


def test_the_choice_does_not_depend_on_the_order_windows_lists_adapters_in():
    assert winprobes.pick_adapter_mac(reversed(ADAPTERS)) == winprobes.pick_adapter_mac(ADAPTERS)


@pytest.mark.parametrize(
    "record",
    [
        AdapterRecord(ETH, bytes.fromhex("020000000001"), "Ethernet"),  # locally administered
        AdapterRecord(ETH, bytes.fromhex("010000000001"), "Ethernet"),  # multicast
        AdapterRecord(ETH, bytes(6), "Ethernet"),
        AdapterRecord(ETH, bytes.fromhex("001122334455667788"), "Ethernet"),  # not 6 bytes
        AdapterRecord(winprobes.IF_TYPE_TUNNEL, bytes.fromhex("001122334455"), "Tunnel"),
        AdapterRecord(ETH, bytes.fromhex("000c29112233"), "VMware Virtual Ethernet Adapter for VMnet8"),
        AdapterRecord(ETH, bytes.fromhex("0a0027112233"), "VirtualBox Host-Only Ethernet Adapter"),
        AdapterRecord(ETH, bytes.fromhex("001122334455"), "WireGuard Tunnel", "wg0"),
    ],
)
def test_not_a_physical_adapter(record):
    assert not winprobes.is_physical(record)
    assert winprobes.pick_adapter_mac([record]) is None


def descriptor(serial: bytes | None, vendor: bytes = b"", product: bytes = b"Samsung SSD 980") -> bytes:
    """A STORAGE_DEVICE_DESCRIPTOR as IOCTL_STORAGE_QUERY_PROPERTY returns it (strings after the header)."""
    fixed = 40  # Version..RawPropertiesLength, then RawDeviceProperties[1] padded
    strings, offsets = b"", []
    for text in (vendor, product, b"1B2QGXA7", serial):
        if text is None:
            offsets.append(0)
            continue
        offsets.append(fixed + len(strings))
        strings += text + b"\x00"
    size = fixed + len(strings)
    head = struct.pack("<IIBBBBIIIIII", 1, size, 0, 0, 0, 1, *offsets, 17, 0)
    return head.ljust(fixed, b"\x00") + strings


def test_the_disk_serial_comes_from_the_storage_descriptor():
    assert winprobes.parse_storage_descriptor(descriptor(b"  S4EWNX0N123456 ")) == "S4EWNX0N123456"


@pytest.mark.parametrize("buf", [descriptor(None), descriptor(b""), b"", b"\x00" * 27, descriptor(b"X")[:20]])
def test_a_descriptor_without_a_serial_is_unknown(buf):
    assert winprobes.parse_storage_descriptor(buf) is None


def test_a_serial_offset_past_the_buffer_is_unknown():
    buf = bytearray(descriptor(b"S4EW"))
    struct.pack_into("<I", buf, 24, 5000)
    assert winprobes.parse_storage_descriptor(bytes(buf)) is None


def test_the_system_volume_extent_names_its_disk():
    extents = struct.pack("<II", 1, 0) + struct.pack("<IIqq", 2, 0, 1048576, 512 * 10**9)
    assert winprobes.parse_disk_extents(extents) == 2
    assert winprobes.parse_disk_extents(struct.pack("<II", 0, 0)) is None
    assert winprobes.parse_disk_extents(b"") is None


# ------------------------------------------------------------------------------ the real calls (Windows)


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="Win32 APIs")
def test_real_windows_probes_read_at_least_three_components_quickly():
    fpm.collect(probes.windows_probes(), deadline_s=5.0)  # warm: DLL loads are not the probes' cost
    started = time.perf_counter()
    result = fpm.collect(probes.windows_probes(), deadline_s=5.0)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(
        f"windows probes: {result.working_count()} of 6 in {elapsed_ms:.0f} ms; missing: {result.problems()}"
    )
    ok = {c.name for c in result.components if c.ok}
    # Under Wine: MachineGuid, the SMBIOS UUID, and the MAC when the host has a universally
    # administered NIC (a container's 02:... address is rightly skipped).
    assert {"machine_guid", "smbios_uuid"} <= ok
    physical = any(winprobes.is_physical(a) for a in winprobes.read_adapters())
    assert ("mac" in ok) == physical
    assert result.working_count() >= (3 if physical else 2)


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="Win32 APIs")
def test_real_smbios_table_parses():
    from pospal_protocol import smbios

    raw = winprobes.read_smbios()
    assert raw, "GetSystemFirmwareTable('RSMB') returned nothing"
    info = smbios.parse(raw)
    assert info.structures, "no SMBIOS structure parsed"
