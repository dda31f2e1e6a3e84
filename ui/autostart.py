"""Start at login: the Run keys on Windows, an XDG autostart desktop file on Linux.

Both sit behind one small interface (``is_enabled`` / ``set_enabled`` / ``all_users``). The Windows side
talks to the registry through ``Registry`` objects, so the same code is tested with ``MemoryRegistry`` on
any OS and runs with ``WinregRegistry`` for real.

The installer writes the all-users Run value (HKLM); the toggle writes only the per-user one (HKCU). The
toggle shows the effective state, on when either is set, and never writes HKLM: that needs an
administrator, so turning off an all-users entry raises ``AllUsersEntry`` for the window to explain.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
VALUE_NAME = "POSPalLicenseAgent"
DESKTOP_NAME = "pospal-license-agent.desktop"


class AllUsersEntry(PermissionError):
    """Start at login is set for all users of the PC (by the installer); only an administrator can undo it."""


class Autostart(Protocol):
    """Whether the agent starts at login, and switching it."""

    def is_enabled(self) -> bool:
        """True when the agent starts at login for this user, whatever set it."""

    @property
    def all_users(self) -> bool:
        """True when an all-users entry (which this user cannot remove) starts the agent."""

    def set_enabled(self, on: bool) -> None:
        """Turn start-at-login on or off (raises OSError when the OS refuses, AllUsersEntry when it can't)."""


class Registry(Protocol):
    """The few string-value operations the Run key needs, in one hive (HKCU, or HKLM read-only)."""

    def get(self, key: str, name: str) -> str | None:
        """The value, or None when it is absent."""

    def set(self, key: str, name: str, value: str) -> None:
        """Create or replace a REG_SZ value (creating the key if needed)."""

    def delete(self, key: str, name: str) -> None:
        """Delete the value; absent is fine."""


class WinregRegistry:
    """``Registry`` over the real HKEY_CURRENT_USER, or HKEY_LOCAL_MACHINE read-only (Windows only)."""

    def __init__(self, machine: bool = False) -> None:
        # Only Windows has winreg: imported here, so the module imports everywhere, and typed loosely, so
        # the type check passes on every OS.
        winreg: Any = importlib.import_module("winreg")

        self._w = winreg
        self._machine = machine
        self._hive = winreg.HKEY_LOCAL_MACHINE if machine else winreg.HKEY_CURRENT_USER
        # HKLM\Software is split into 64- and 32-bit views; the installer may have written either one.
        self._views = (winreg.KEY_WOW64_64KEY, winreg.KEY_WOW64_32KEY) if machine else (0,)

    def get(self, key: str, name: str) -> str | None:
        """Read a string value (in any registry view, for HKLM)."""
        w = self._w
        for view in self._views:
            try:
                with w.OpenKey(self._hive, key, 0, w.KEY_READ | view) as handle:
                    value, _kind = w.QueryValueEx(handle, name)
            except FileNotFoundError:
                continue
            return str(value)
        return None

    def set(self, key: str, name: str, value: str) -> None:
        """Write a REG_SZ value under HKCU (never HKLM: the tray does not run as administrator)."""
        self._user_only()
        w = self._w
        with w.CreateKeyEx(self._hive, key, 0, w.KEY_SET_VALUE) as handle:
            w.SetValueEx(handle, name, 0, w.REG_SZ, value)

    def delete(self, key: str, name: str) -> None:
        """Delete a value under HKCU; a missing value is not an error."""
        self._user_only()
        w = self._w
        try:
            with w.OpenKey(self._hive, key, 0, w.KEY_SET_VALUE) as handle:
                w.DeleteValue(handle, name)
        except FileNotFoundError:
            return

    def _user_only(self) -> None:
        if self._machine:
            raise PermissionError("the all-users registry is read-only here")


class MemoryRegistry:
    """``Registry`` in a dict: the fake for tests, with the same semantics as ``WinregRegistry``."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get(self, key: str, name: str) -> str | None:
        """Read a value."""
        return self.values.get((key.lower(), name))

    def set(self, key: str, name: str, value: str) -> None:
        """Write a value."""
        self.values[(key.lower(), name)] = value

    def delete(self, key: str, name: str) -> None:
        """Delete a value if present."""
        self.values.pop((key.lower(), name), None)


def launch_command() -> str:
    """The command line that starts the tray: the frozen executable, or this Python running the agent."""
    if getattr(sys, "frozen", False):
        return f'"{sys.executable}"'
    return f'"{sys.executable}" -m agent.cli run'


class WindowsRunKey:
    """Start at login through ...\\Run\\POSPalLicenseAgent: HKCU (the toggle's) or HKLM (the installer's).

    ``machine`` reads the all-users (HKLM) value; it is never written. With a ``registry`` given and no
    ``machine``, there is no all-users entry to consider (tests of the per-user value alone).
    """

    def __init__(
        self, registry: Registry | None = None, command: str | None = None, machine: Registry | None = None
    ) -> None:
        real = registry is None
        self.registry = registry if registry is not None else WinregRegistry()
        self.machine = machine if machine is not None or not real else WinregRegistry(machine=True)
        self.command = command or launch_command()

    @property
    def user_enabled(self) -> bool:
        """True when this user's (HKCU) Run value exists."""
        return bool(self.registry.get(RUN_KEY, VALUE_NAME))

    @property
    def all_users(self) -> bool:
        """True when the installer's all-users (HKLM) Run value exists."""
        if self.machine is None:
            return False
        try:
            return bool(self.machine.get(RUN_KEY, VALUE_NAME))
        except OSError:  # unreadable HKLM (locked-down PC): only the per-user value can count
            return False

    def is_enabled(self) -> bool:
        """The effective state: True when either Run value exists."""
        return self.user_enabled or self.all_users

    def set_enabled(self, on: bool) -> None:
        """Write or delete the per-user value; raise AllUsersEntry when an all-users one still starts it."""
        if on:
            # With the installer's all-users entry the agent starts already; a second entry would only
            # launch a second copy at login for the single-instance guard to turn away.
            if not self.all_users:
                self.registry.set(RUN_KEY, VALUE_NAME, self.command)
            return
        self.registry.delete(RUN_KEY, VALUE_NAME)
        if self.all_users:
            raise AllUsersEntry("start at login is set for all users by the installer")


class XdgAutostart:
    """Start at login through ``$XDG_CONFIG_HOME/autostart/pospal-license-agent.desktop``."""

    def __init__(self, config_home: Path | None = None, command: str | None = None) -> None:
        base = config_home or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        self.path = Path(base) / "autostart" / DESKTOP_NAME
        self.command = command or launch_command().replace('"', "")

    def desktop_entry(self) -> str:
        """The desktop file's text."""
        return (
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Name=POSPal License Agent\n"
            "Comment=Keeps this POS terminal licensed\n"
            f"Exec={self.command}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n"
        )

    @property
    def all_users(self) -> bool:
        """Always False: the desktop file is this user's own (system-wide entries are not ours)."""
        return False

    def is_enabled(self) -> bool:
        """True when the desktop file exists and is not marked hidden."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return False
        return "Hidden=true" not in text

    def set_enabled(self, on: bool) -> None:
        """Write the desktop file atomically, or remove it."""
        if not on:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pospal-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.desktop_entry())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def for_this_platform() -> Autostart | None:
    """The start-at-login switch for this OS, or None where there is none (macOS: not supported yet)."""
    if sys.platform == "win32":
        return WindowsRunKey()
    if sys.platform.startswith("linux"):
        return XdgAutostart()
    return None
