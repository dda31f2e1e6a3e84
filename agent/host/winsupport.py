"""The Windows support matrix: Windows 10 1809 (build 17763, LTSC 2019) and later, and Windows 11.

Qt 6, which draws the tray, needs 1809 or later. On an older Windows the agent still serves the POS
(the local API and the license need no Qt); it says so once, in the log and in a message box, and does
not start the tray.
"""

from __future__ import annotations

import logging
import sys
import threading

log = logging.getLogger(__name__)

MIN_BUILD = 17763  # Windows 10 1809 / LTSC 2019 / Server 2019

UNSUPPORTED_TEXT = (
    "This version of Windows (build {build}) is older than Windows 10 1809, the oldest the POSPal License "
    "Agent supports. The POS keeps working and the license is still checked, but the tray icon cannot be "
    "shown. Update Windows to 10 1809 or later, or Windows 11."
)


def unsupported_reason(version: tuple[int, int, int] | None) -> str | None:
    """The message for a Windows `(major, minor, build)` older than 1809; None if supported or not Windows."""
    if version is None:
        return None
    major, _minor, build = version
    if major > 10 or (major == 10 and build >= MIN_BUILD):
        return None
    return UNSUPPORTED_TEXT.format(build=build)


def check_and_tell(version: tuple[int, int, int] | None) -> bool:
    """Log (and on Windows show, without blocking) why this Windows is unsupported; True if supported."""
    reason = unsupported_reason(version)
    if reason is None:
        return True
    log.warning("%s", reason)
    if sys.platform == "win32":  # pragma: no cover - Windows only
        threading.Thread(target=_message_box, args=(reason,), name="pospal-unsupported", daemon=True).start()
    return False


def interactive_session() -> bool:
    """False in session 0 (a service, or a task run as SYSTEM at boot): no desktop, so no tray there."""
    if sys.platform != "win32":
        return True
    import ctypes  # pragma: no cover - Windows only

    session = ctypes.c_ulong(0)  # pragma: no cover
    k32 = ctypes.windll.kernel32  # pragma: no cover
    if not k32.ProcessIdToSessionId(k32.GetCurrentProcessId(), ctypes.byref(session)):  # pragma: no cover
        return True
    return session.value != 0  # pragma: no cover


def _message_box(text: str) -> None:  # pragma: no cover - Windows only
    if sys.platform != "win32":  # also tells the type checker: what follows is Windows code
        raise OSError("Windows only")
    import ctypes

    mb_iconwarning, mb_setforeground = 0x30, 0x10000
    ctypes.windll.user32.MessageBoxW(None, text, "POSPal License Agent", mb_iconwarning | mb_setforeground)
