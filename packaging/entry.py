"""Frozen entry point of the POSPalLicenseAgent bundle: ``pospal-agent`` with ``run`` as the default.

A double-click, the Start menu shortcut and the login Run key start the executable with no
arguments (or only ``--headless``); both mean ``pospal-agent run``. Any other first argument is a
normal ``pospal-agent`` subcommand (``status``, ``trial``, ...), so one executable serves both.
"""

import multiprocessing
import os
import sys


def _argv(args: list[str]) -> list[str]:
    """Insert the default ``run`` subcommand when none was given."""
    if not args or args[0].startswith("-") and args[0] not in {"-h", "--help", "--version"}:
        return ["run", *args]
    return args


def _ensure_std_streams() -> None:
    """Give a windowed (no console) process real stdout/stderr, which some libraries write to blindly."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process


if __name__ == "__main__":
    multiprocessing.freeze_support()
    _ensure_std_streams()
    sys.argv[1:] = _argv(sys.argv[1:])
    from agent.cli import main, register_tray

    def _tray():  # imported here so PyInstaller bundles ui/, and only when a tray is really wanted
        from ui.app import run_tray

        return run_tray

    register_tray(_tray)
    sys.exit(main())
