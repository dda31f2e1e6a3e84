"""A pure parser for the SMBIOS structure table Windows returns from `GetSystemFirmwareTable('RSMB')`.

Only what the fingerprint needs (DMTF DSP0134): type 1 (System Information) gives the system UUID and
the system serial number, which is what Windows shows as the BIOS serial (`Win32_BIOS.SerialNumber`);
type 2 (Baseboard) gives the board serial; type 0 (BIOS) gives vendor and version for diagnostics.

Layout of the buffer: an 8-byte `RawSMBIOSData` header (calling method, major, minor, DMI revision,
DWORD length) and then the table. Each structure is a 4-byte header (type, formatted length, handle),
the formatted area, then its string set: NUL-terminated strings ended by one more NUL (two NULs when
there are none). String fields hold a 1-based index into that set; 0 means "no string".

Strings are decoded as UTF-8 with replacement, never with the console or ANSI code page, so the same
firmware gives the same value on a Greek Windows as on an English one. Anything malformed ends the walk:
what was parsed before it is kept, the rest is unknown.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

RAW_HEADER = struct.Struct("<BBBBI")
END_OF_TABLE = 127


@dataclass(frozen=True)
class Structure:
    """One SMBIOS structure: its type, formatted area (header included) and strings."""

    type: int
    handle: int
    formatted: bytes
    strings: tuple[str, ...]

    def string(self, offset: int) -> str | None:
        """The string whose index is the byte at `offset` of the formatted area, or None."""
        if offset >= len(self.formatted):
            return None
        index = self.formatted[offset]
        if index == 0 or index > len(self.strings):
            return None
        return self.strings[index - 1].strip() or None


@dataclass(frozen=True)
class SmbiosInfo:
    """The fields the fingerprint and diagnostics use; None where the firmware gives nothing."""

    version: tuple[int, int] = (0, 0)
    system_uuid: str | None = None
    system_serial: str | None = None
    baseboard_serial: str | None = None
    bios_vendor: str | None = None
    bios_version: str | None = None
    structures: tuple[Structure, ...] = field(default=(), repr=False)


def split_raw(raw: bytes) -> tuple[tuple[int, int], bytes]:
    """`((major, minor), table)` from a RawSMBIOSData buffer; an empty table when it is too short."""
    if len(raw) < RAW_HEADER.size:
        return (0, 0), b""
    _method, major, minor, _rev, length = RAW_HEADER.unpack_from(raw)
    return (major, minor), raw[RAW_HEADER.size : RAW_HEADER.size + length]


def iter_structures(table: bytes) -> list[Structure]:
    """Every well-formed structure in `table`, in order, up to the end-of-table marker or damage."""
    out: list[Structure] = []
    pos = 0
    while pos + 4 <= len(table):
        kind, length, handle = struct.unpack_from("<BBH", table, pos)
        if length < 4 or pos + length > len(table):
            break
        formatted = table[pos : pos + length]
        end = table.find(b"\x00\x00", pos + length)
        if end < 0:
            break
        raw_strings = table[pos + length : end]
        strings = tuple(s.decode("utf-8", errors="replace") for s in raw_strings.split(b"\x00") if s)
        out.append(Structure(kind, handle, formatted, strings))
        if kind == END_OF_TABLE:
            break
        pos = end + 2
    return out


def format_uuid(raw: bytes, version: tuple[int, int]) -> str | None:
    """The 16 UUID bytes as Windows shows them, or None when the firmware says "not set"/"not present".

    Since SMBIOS 2.6 the first three fields are little-endian (as Windows and dmidecode read them);
    earlier versions store the bytes in network order.
    """
    if len(raw) != 16 or raw in (b"\x00" * 16, b"\xff" * 16):
        return None
    value = uuid.UUID(bytes_le=raw) if version >= (2, 6) else uuid.UUID(bytes=raw)
    return str(value).upper()


def parse(raw: bytes) -> SmbiosInfo:
    """Parse a `GetSystemFirmwareTable('RSMB')` buffer; never raises, unknown fields stay None."""
    version, table = split_raw(raw)
    structures = iter_structures(table)
    info: dict[str, str | None] = {}
    for s in structures:
        if s.type == 0 and "bios_vendor" not in info:
            info["bios_vendor"] = s.string(0x04)
            info["bios_version"] = s.string(0x05)
        elif s.type == 1 and "system_serial" not in info:
            info["system_serial"] = s.string(0x07)
            info["system_uuid"] = format_uuid(s.formatted[0x08:0x18], version)
        elif s.type == 2 and "baseboard_serial" not in info:
            info["baseboard_serial"] = s.string(0x07)
    return SmbiosInfo(version=version, structures=tuple(structures), **info)


def build_structure(kind: int, handle: int, fields: bytes, strings: list[bytes]) -> bytes:
    """One structure's bytes (header, formatted `fields`, string set): for tests and recorded tables."""
    body = struct.pack("<BBH", kind, 4 + len(fields), handle) + fields
    if not strings:
        return body + b"\x00\x00"
    return body + b"".join(s + b"\x00" for s in strings) + b"\x00"


def build_raw(structures: list[bytes], version: tuple[int, int] = (3, 4)) -> bytes:
    """A RawSMBIOSData buffer around `structures` (an end-of-table marker is appended)."""
    table = b"".join(structures) + build_structure(END_OF_TABLE, 0xFEFF, b"", [])
    return RAW_HEADER.pack(0, version[0], version[1], 0, len(table)) + table
