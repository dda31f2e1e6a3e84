"""DPAPI with machine scope (Windows): seal the machine key so only this Windows installation opens it.

`CryptProtectData(..., CRYPTPROTECT_LOCAL_MACHINE | CRYPTPROTECT_UI_FORBIDDEN)` ties the blob to the
machine's DPAPI secret, not to a user's password: every Windows user (and SYSTEM) on this PC can unseal
it, so all of them share one identity and one seat, and an admin resetting a user's password changes
nothing. Copied to another PC the blob does not open. Product-specific entropy keeps other programs'
casual `CryptUnprotectData` calls from opening it by accident.

`MachineSealer` is the real one (ctypes, crypt32); tests elsewhere use a fake with the same two methods.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from agent.errors import KeyStoreError

CRYPTPROTECT_UI_FORBIDDEN = 0x1
CRYPTPROTECT_LOCAL_MACHINE = 0x4
ENTROPY = b"POSPal License Agent/machine key/v1"


class Sealer(Protocol):
    """Seals bytes so that only this machine can open them."""

    name: str

    def seal(self, data: bytes) -> bytes:
        """The sealed blob; raises `KeyStoreError`."""
        ...

    def unseal(self, blob: bytes) -> bytes:
        """The original bytes; raises `KeyStoreError` (another machine's blob, or damaged)."""
        ...


class MachineSealer:  # pragma: no cover - Windows only; run by the Windows (Wine) test harness
    """DPAPI, machine scope, through ctypes."""

    name = "dpapi-machine"
    # Set in __init__, on Windows only (ctypes objects).
    _ctypes: Any
    _Blob: Any
    _crypt32: Any
    _kernel32: Any

    def __init__(self) -> None:
        if sys.platform != "win32":  # also tells the type checker: what follows is Windows code
            raise OSError("Windows only")
        import ctypes
        from ctypes import wintypes

        class Blob(ctypes.Structure):
            _fields_ = [("cbData", wintypes.DWORD), ("pbData", ctypes.POINTER(ctypes.c_char))]

        self._ctypes = ctypes
        self._Blob = Blob
        self._crypt32 = ctypes.WinDLL("crypt32", use_last_error=True)
        self._kernel32 = ctypes.WinDLL("kernel32")
        for fn in (self._crypt32.CryptProtectData, self._crypt32.CryptUnprotectData):
            fn.argtypes = [
                ctypes.POINTER(Blob),
                ctypes.c_void_p,
                ctypes.POINTER(Blob),
                ctypes.c_void_p,
                ctypes.c_void_p,
                wintypes.DWORD,
                ctypes.POINTER(Blob),
            ]
            fn.restype = wintypes.BOOL
        self._kernel32.LocalFree.argtypes = [ctypes.c_void_p]

    def _blob(self, data: bytes):
        buf = self._ctypes.create_string_buffer(data, len(data))
        return self._Blob(len(data), self._ctypes.cast(buf, self._ctypes.POINTER(self._ctypes.c_char))), buf

    def _call(self, fn, data: bytes, what: str) -> bytes:
        ctypes = self._ctypes
        inp, _keep = self._blob(data)
        ent, _keep2 = self._blob(ENTROPY)
        out = self._Blob()
        flags = CRYPTPROTECT_UI_FORBIDDEN | CRYPTPROTECT_LOCAL_MACHINE
        if not fn(ctypes.byref(inp), None, ctypes.byref(ent), None, None, flags, ctypes.byref(out)):
            raise KeyStoreError(f"DPAPI could not {what} the machine key (error {ctypes.get_last_error()}).")
        try:
            return ctypes.string_at(out.pbData, out.cbData)
        finally:
            self._kernel32.LocalFree(out.pbData)

    def seal(self, data: bytes) -> bytes:
        """`CryptProtectData` with machine scope."""
        return self._call(self._crypt32.CryptProtectData, data, "seal")

    def unseal(self, blob: bytes) -> bytes:
        """`CryptUnprotectData`."""
        return self._call(self._crypt32.CryptUnprotectData, blob, "open")
