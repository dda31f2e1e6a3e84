"""The SMBIOS table parser (pospal_protocol/smbios.py) on tables built byte by byte per DMTF DSP0134."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pospal_protocol import smbios

UUID_BYTES = bytes.fromhex("4445 4c4c 4200 1035 8052 b4c04f564433".replace(" ", ""))
UUID_TEXT = "4C4C4544-0042-3510-8052-B4C04F564433"  # the first three fields little-endian (SMBIOS >= 2.6)


def bios(vendor=b"Dell Inc.", version=b"1.21.0") -> bytes:
    # type 0: vendor (str 1), version (str 2), start segment, release date (str 3), ROM size
    return smbios.build_structure(
        0, 0x0000, bytes([1, 2]) + b"\x00\xf0" + bytes([3]) + b"\xff", [vendor, version, b"06/14/2024"]
    )


def system(serial=b"7XYZ123", uuid_bytes=UUID_BYTES) -> bytes:
    # type 1: manufacturer, product, version (none), serial (str 3 at 0x07), UUID at 0x08, wake-up type
    strings = [b"Dell Inc.", b"OptiPlex 7090"] + ([serial] if serial else [])
    fields = bytes([1, 2, 0, 3 if serial else 0]) + uuid_bytes + b"\x06"
    return smbios.build_structure(1, 0x0100, fields, strings)


def board(serial=b"/7XYZ123/CNFCW0012345/") -> bytes:
    # type 2: manufacturer, product, version, serial (str 3 at 0x07)
    return smbios.build_structure(2, 0x0200, bytes([1, 2, 0, 3]), [b"Dell Inc.", b"0K240Y", serial])


def test_reads_uuid_system_serial_and_board_serial():
    info = smbios.parse(smbios.build_raw([bios(), system(), board()]))
    assert info.version == (3, 4)
    assert (info.system_uuid, info.system_serial, info.baseboard_serial) == (
        UUID_TEXT,
        "7XYZ123",
        "/7XYZ123/CNFCW0012345/",
    )
    assert (info.bios_vendor, info.bios_version) == ("Dell Inc.", "1.21.0")


def test_before_smbios_2_6_the_uuid_is_in_network_order():
    info = smbios.parse(smbios.build_raw([system()], version=(2, 4)))
    assert info.system_uuid == "4445 4C4C-4200-1035-8052-B4C04F564433".replace(" ", "")


@pytest.mark.parametrize("raw", [b"\x00" * 16, b"\xff" * 16])
def test_an_unset_uuid_is_unknown(raw):
    assert smbios.parse(smbios.build_raw([system(uuid_bytes=raw)])).system_uuid is None


def test_a_string_index_of_zero_means_no_string():
    info = smbios.parse(smbios.build_raw([system(serial=None)]))
    assert info.system_serial is None and info.system_uuid == UUID_TEXT


@pytest.mark.parametrize("raw", [b"", b"\x00" * 8, smbios.build_raw([])])
def test_an_empty_table_gives_nothing_and_does_not_raise(raw):
    info = smbios.parse(raw)
    assert (info.system_uuid, info.system_serial, info.baseboard_serial) == (None, None, None)


def test_a_truncated_table_keeps_what_came_before_the_damage():
    raw = smbios.build_raw([system(), board()])
    cut = raw[: len(raw) - len(board()) - 6 + 5]  # a few bytes into the board structure
    cut = cut[:4] + struct.pack("<I", len(cut) - 8) + cut[8:]
    info = smbios.parse(cut)
    assert info.system_uuid == UUID_TEXT and info.baseboard_serial is None


def test_non_ascii_strings_decode_the_same_whatever_the_code_page():
    # A Greek vendor string in UTF-8 and a Latin-1 byte: decoded as UTF-8 with replacement, never via
    # the console or ANSI code page, so the value (and its hash) is the same on every Windows.
    info = smbios.parse(smbios.build_raw([system(serial="ΣΕΙΡΑ-7".encode()), board(serial=b"SN\xe9-1")]))
    assert info.system_serial == "ΣΕΙΡΑ-7"
    assert info.baseboard_serial == "SN\ufffd-1"


def test_a_structure_claiming_a_length_past_the_end_stops_the_walk():
    bad = struct.pack("<BBH", 2, 200, 0x0200) + b"\x00\x00"
    info = smbios.parse(smbios.build_raw([system(), bad]))
    assert info.system_uuid == UUID_TEXT and info.baseboard_serial is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_raises(raw):
    # Whatever the firmware hands back, the answer is an SmbiosInfo (fields it could not read are None).
    assert isinstance(smbios.parse(raw), smbios.SmbiosInfo)
    assert isinstance(smbios.parse(smbios.RAW_HEADER.pack(0, 3, 0, 0, len(raw)) + raw), smbios.SmbiosInfo)
