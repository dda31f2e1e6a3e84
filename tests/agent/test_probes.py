"""Fingerprint sources per OS (pospal_protocol/probes.py): Linux on a faked /sys and /proc, Windows on
recorded
SMBIOS bytes and adapter records, macOS from ioreg output, and the real probes where they can run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pospal_protocol import fingerprint as fpm
from pospal_protocol import probes, smbios, winprobes
from pospal_protocol.winprobes import AdapterRecord

# ------------------------------------------------------------------------------------- Linux, faked /sys


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


@pytest.fixture
def fake_linux(tmp_path):
    """A Linux box: root on /dev/sda2 (partition of sda), DMI readable, two NICs plus virtual ones."""
    etc, sys_root, proc = tmp_path / "etc", tmp_path / "sys", tmp_path / "proc"
    write(etc / "machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    write(sys_root / "class/dmi/id/product_uuid", "4C4C4544-0042-3510-8052-B4C04F564433\n")
    write(sys_root / "class/dmi/id/board_serial", "To be filled by O.E.M.\n")
    write(
        proc / "self/mountinfo",
        "22 1 0:21 / /proc rw - proc proc rw\n27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n",
    )
    disk = sys_root / "devices/pci0000:00/ata1/block/sda"
    write(disk / "device/serial", "WD-WX11A12B3456\n")
    write(disk / "sda2/partition", "2\n")
    link(sys_root / "dev/block/8:2", disk / "sda2")
    net = sys_root / "class/net"
    nics = [  # name, MAC, has a device link; everything sorting before enp3s0 must be skipped
        ("lo", "00:00:00:00:00:00", False),
        ("br-9f8e", "00:bb:cc:dd:ee:01", True),  # bridge, by name
        ("bnep0", "00:1a:7d:da:71:13", False),  # virtual: no device
        ("docker0", "00:42:ac:11:00:01", True),  # docker, by name
        ("eth0", "02:fc:00:00:00:01", True),  # locally administered (sorts after enp3s0 anyway)
        ("enp0s1", "06:00:00:00:00:09", True),  # locally administered
        ("enp3s0", "3c:7c:3f:aa:bb:cc", True),  # the primary physical NIC
        ("veth1a2b", "00:11:22:33:44:66", True),
        ("wlp2s0", "d8:bb:c1:00:11:22", True),
    ]
    for name, mac, physical in nics:
        write(net / name / "address", mac + "\n")
        if physical:
            (net / name / "device").mkdir()
    return {"etc": etc, "sys_root": sys_root, "proc": proc, "var": tmp_path / "var"}


def test_linux_probes_read_every_source(fake_linux):
    result = fpm.collect(probes.linux_probes(**fake_linux))
    got = {c.name: c.ok for c in result.components}
    assert got == {
        "machine_id": True,
        "product_uuid": True,
        "board_serial": False,
        "disk_serial": True,
        "mac": True,
    }
    assert result.hashes()["disk_serial"] == fpm.hash_component("disk_serial", "WD-WX11A12B3456")
    # eth0 is locally administered (02:...), so the first physical NIC by name with a global MAC wins
    assert result.hashes()["mac"] == fpm.hash_component("mac", "3C:7C:3F:AA:BB:CC")


def test_linux_mac_skips_virtual_docker_veth_bridge_and_local(fake_linux):
    net = fake_linux["sys_root"] / "class/net"
    assert probes.linux_primary_mac(net) == "3c:7c:3f:aa:bb:cc"
    for name in ("enp3s0", "wlp2s0"):  # veth1a2b keeps a global MAC and must still be skipped
        (net / name / "address").write_text("06:00:00:00:00:01\n")
    assert probes.linux_primary_mac(net) is None


def test_linux_root_disk_follows_device_mapper_to_the_disk(tmp_path):
    sys_root, proc = tmp_path / "sys", tmp_path / "proc"
    write(proc / "self/mountinfo", "27 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n")
    nvme = sys_root / "devices/pci/nvme/nvme0/nvme0n1"
    write(nvme / "device/serial", "S4EWNX0N123456\n")
    write(nvme / "nvme0n1p3/partition", "3\n")
    dm = sys_root / "devices/virtual/block/dm-0"
    link(dm / "slaves/nvme0n1p3", nvme / "nvme0n1p3")
    link(sys_root / "dev/block/253:0", dm)
    assert probes.linux_root_disk_serial(proc, sys_root) == "S4EWNX0N123456"


def test_linux_sata_disk_serial_comes_from_udev(tmp_path):
    sys_root, proc, run = tmp_path / "sys", tmp_path / "proc", tmp_path / "run"
    write(proc / "self/mountinfo", "27 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    disk = sys_root / "devices/pci/ata1/host0/target0:0:0/0:0:0:0/block/sda"
    write(disk / "dev", "8:0\n")
    write(disk / "sda1/partition", "1\n")
    link(sys_root / "dev/block/8:1", disk / "sda1")
    write(
        run / "udev/data/b8:0",
        "S:disk/by-id/ata-Samsung_SSD\n"
        "E:ID_SERIAL=Samsung_SSD_860_S3Z1NB0K123456X\nE:ID_SERIAL_SHORT=S3Z1NB0K123456X\n",
    )
    assert probes.linux_root_disk_serial(proc, sys_root, run_root=run) == "S3Z1NB0K123456X"


def test_linux_root_on_overlay_has_no_disk(tmp_path):
    write(tmp_path / "proc/self/mountinfo", "500 400 0:52 / / rw - overlay overlay rw\n")
    assert probes.linux_root_disk_serial(tmp_path / "proc", tmp_path / "sys", tmp_path / "dev") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux machine")
def test_this_linux_machine_has_machine_id_and_disk_serial():
    result = fpm.collect(probes.linux_probes())
    ok = {c.name for c in result.components if c.ok}
    if os.path.exists("/etc/machine-id"):
        assert "machine_id" in ok
    assert len(ok) >= 1


# ------------------------------------------------------------------------------- Windows, through fakes


# ------------------------------------------------------------------------------ Windows, recorded bytes

GUID = "8f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"


def recorded_smbios() -> bytes:
    """A Dell-like table: type 1 with UUID and serial, type 2 with the board serial (DSP0134 layout)."""
    uuid_le = bytes.fromhex("44454c4c42001035 8052b4c04f564433".replace(" ", ""))
    system = smbios.build_structure(
        1, 0x100, bytes([1, 2, 0, 3]) + uuid_le + b"\x06", [b"Dell Inc.", b"OptiPlex 7090", b"7XYZ123"]
    )
    board = smbios.build_structure(
        2, 0x200, bytes([1, 2, 0, 3]), [b"Dell Inc.", b"0K240Y", b"/7XYZ123/CNFCW0012345/"]
    )
    return smbios.build_raw([system, board])


ADAPTERS = [
    AdapterRecord(winprobes.IF_TYPE_ETHERNET, bytes.fromhex("00155d010203"), "Hyper-V Virtual Ethernet"),
    AdapterRecord(winprobes.IF_TYPE_ETHERNET, bytes.fromhex("d8bbc1aabbcc"), "Intel(R) Ethernet I219-V"),
]


def sources(calls=None, **overrides) -> probes.WinSources:
    calls = {"smbios": 0} if calls is None else calls

    def read_smbios():
        calls["smbios"] += 1
        return recorded_smbios()

    values = {
        "smbios": read_smbios,
        "adapters": lambda: ADAPTERS,
        "disk_serial": lambda: "  S4EWNX0N123456 ",
        "machine_guid": lambda: GUID,
    }
    values.update(overrides)
    return probes.WinSources(**values)


def test_windows_probes_read_win32_sources_with_one_firmware_table_read():
    calls = {"smbios": 0}
    result = fpm.collect(probes.windows_probes(sources(calls)))
    assert [c.name for c in result.components] == [
        "machine_guid",
        "smbios_uuid",
        "baseboard_serial",
        "bios_serial",
        "disk_serial",
        "mac",
    ]
    assert all(c.ok for c in result.components)
    assert calls["smbios"] == 1, "one GetSystemFirmwareTable read serves three components"
    hashes = result.hashes()
    # The same normalised strings Windows' CIM gave, so licenses bound before keep matching.
    assert hashes["smbios_uuid"] == fpm.hash_component("smbios_uuid", "4C4C4544-0042-3510-8052-B4C04F564433")
    assert hashes["bios_serial"] == fpm.hash_component("bios_serial", "7XYZ123")
    assert hashes["baseboard_serial"] == fpm.hash_component("baseboard_serial", "/7XYZ123/CNFCW0012345/")
    assert hashes["mac"] == fpm.hash_component("mac", "D8:BB:C1:AA:BB:CC")
    assert hashes["disk_serial"] == fpm.hash_component("disk_serial", "S4EWNX0N123456")
    assert hashes["machine_guid"] == fpm.hash_component("machine_guid", GUID.upper())


def test_windows_probes_start_no_process(monkeypatch):
    import subprocess

    def no_process(*a, **k):
        raise AssertionError("a Windows probe started a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert fpm.collect(probes.windows_probes(sources())).working_count() == 6


def test_an_empty_smbios_table_leaves_the_other_sources():
    result = fpm.collect(probes.windows_probes(sources(smbios=lambda: b"")))
    assert {c.name for c in result.components if c.ok} == {"machine_guid", "disk_serial", "mac"}


def test_failing_windows_sources_are_skipped():
    def boom():
        raise OSError(5, "Access is denied")

    result = fpm.collect(probes.windows_probes(sources(smbios=boom, adapters=boom, disk_serial=boom)))
    assert {c.name for c in result.components if c.ok} == {"machine_guid"}
    assert result.problems()["smbios_uuid"] == "error"


@pytest.mark.windows
@pytest.mark.skipif(sys.platform != "win32", reason="real Windows registry and Win32 APIs")
def test_real_windows_probes():
    result = fpm.collect(probes.windows_probes(), deadline_s=5.0)
    assert {c.name: c.ok for c in result.components}["machine_guid"]
    assert result.working_count() >= 2  # tests/agent/test_winprobes.py says which ones, and when 3


# ---------------------------------------------------------------------------------------------- macOS


IOREG = """+-o MacBookPro18,3  <class IOPlatformExpertDevice, id 0x100000110>
    {
      "IOPlatformSerialNumber" = "C02XL0GHJGH5"
      "IOPlatformUUID" = "A1B2C3D4-E5F6-7890-ABCD-EF1234567890"
    }
"""


def test_macos_probes_parse_one_ioreg_call():
    calls = []
    result = fpm.collect(probes.macos_probes(runner=lambda argv, t: calls.append(argv) or IOREG))
    assert {c.name: c.ok for c in result.components} == {"platform_uuid": True, "serial": True}
    assert len(calls) == 1 and calls[0][0] == "ioreg"


@pytest.mark.skipif(sys.platform != "darwin", reason="real ioreg")
def test_real_macos_probes():
    assert fpm.collect(probes.macos_probes()).working_count() == 2


def test_default_probes_per_platform_have_the_contract_names():
    names = {p: [probe.name for probe in probes.default_probes(p)] for p in ("linux", "win32", "darwin")}
    assert names == {
        "linux": ["machine_id", "product_uuid", "board_serial", "disk_serial", "mac"],
        "win32": ["machine_guid", "smbios_uuid", "baseboard_serial", "bios_serial", "disk_serial", "mac"],
        "darwin": ["platform_uuid", "serial"],
    }
