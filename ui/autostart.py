"""Start at login: the HKCU Run key on Windows, an XDG autostart desktop file on Linux.

Both sit behind one small interface (``is_enabled`` / ``set_enabled``). The Windows side talks to the
registry through a ``Registry`` object, so the same code is tested with ``MemoryRegistry`` on any OS and
runs with ``WinregRegistry`` for real. The installer also sets the Run key; the toggle reads it back, so
both agree.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Protocol

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
VALUE_NAME = "POSPalLicenseAgent"
DESKTOP_NAME = "pospal-license-agent.desktop"


class Autostart(Protocol):
    """Whether the agent starts at login, and switching it."""

    def is_enabled(self) -> bool:
        """True when the agent is set to start at login."""

    def set_enabled(self, on: bool) -> None:
        """Turn start-at-login on or off (raises OSError when the OS refuses)."""


class Registry(Protocol):
    """The few HKEY_CURRENT_USER string-value operations the Run key needs."""

    def get(self, key: str, name: str) -> str | None:
        """The value, or None when it is absent."""

    def set(self, key: str, name: str, value: str) -> None:
        """Create or replace a REG_SZ value (creating the key if needed)."""

    def delete(self, key: str, name: str) -> None:
        """Delete the value; absent is fine."""


class WinregRegistry:
    """``Registry`` over the real HKEY_CURRENT_USER (Windows only)."""

    def __init__(self) -> None:
        import winreg  # only exists on Windows; importing here keeps the module importable elsewhere

        self._w = winreg

    def get(self, key: str, name: str) -> str | None:
        """Read a string value under HKCU."""
        w = self._w
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, key, 0, w.KEY_READ) as handle:
                value, _kind = w.QueryValueEx(handle, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, key: str, name: str, value: str) -> None:
        """Write a REG_SZ value under HKCU."""
        w = self._w
        with w.CreateKeyEx(w.HKEY_CURRENT_USER, key, 0, w.KEY_SET_VALUE) as handle:
            w.SetValueEx(handle, name, 0, w.REG_SZ, value)

    def delete(self, key: str, name: str) -> None:
        """Delete a value under HKCU; a missing value is not an error."""
        w = self._w
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, key, 0, w.KEY_SET_VALUE) as handle:
                w.DeleteValue(handle, name)
        except FileNotFoundError:
            return


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
    """Start at login through HKCU\\...\\Run\\POSPalLicenseAgent."""

    def __init__(self, registry: Registry | None = None, command: str | None = None) -> None:
        self.registry = registry if registry is not None else WinregRegistry()
        self.command = command or launch_command()

    def is_enabled(self) -> bool:
        """True when the Run value exists."""
        return bool(self.registry.get(RUN_KEY, VALUE_NAME))

    def set_enabled(self, on: bool) -> None:
        """Write or delete the Run value."""
        if on:
            self.registry.set(RUN_KEY, VALUE_NAME, self.command)
        else:
            self.registry.delete(RUN_KEY, VALUE_NAME)


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
