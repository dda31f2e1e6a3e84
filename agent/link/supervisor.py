"""Keeps the tray alive in its own process, so no Qt failure can take the license service down.

Qt reports its fatal errors (a missing ICU or platform plugin, a GPU driver, Wine's missing WinRT) by
aborting the process. The tray therefore runs as a child (`pospal-agent run --tray-only`), talking to
the agent over its caller-checked channel like any other tray (`agent.link.channelcontrol`).
`ChildSupervisor` starts it and, when it dies, starts it again after a growing delay; after
`max_failures` quick deaths in a row it gives up (logged) and the agent goes on serving the POS
headless. A child that exits 0 was quit by the user: that is reported through `quit`, never restarted.

The child's output goes to `tray.log` in the data directory when it can be written, so Qt's last words
before an abort are kept for support.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESTART_DELAYS_S = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0)
MAX_FAILURES = 6
# A child that ran this long before dying was healthy: its death starts the count again.
HEALTHY_S = 120.0
# The tray child's exit code when no UI is installed or PySide6 cannot be imported: not worth a restart.
EXIT_NO_UI = 78


def tray_command() -> list[str]:
    """How to start the tray alone: the frozen executable, or this Python running the agent CLI."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "run", "--tray-only"]
    return [sys.executable, "-m", "agent.cli", "run", "--tray-only"]


def describe_exit(code: int) -> str:
    """A readable reason for a child's exit code (a POSIX signal, a Windows NTSTATUS, or a plain code)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    known = {
        3: "abort() (exit code 3)",
        0xC0000409: "fail-fast / abort (0xC0000409)",
        0xC0000005: "access violation (0xC0000005)",
        0xC0000135: "a DLL was not found (0xC0000135)",
        0xC0000139: "an entry point was not found in a DLL (0xC0000139)",
    }
    return known.get(code, f"exit code {code}")


class ChildSupervisor:
    """Runs `argv` as a child process and restarts it with backoff when it dies (see module docstring)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "tray",
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        delays: Sequence[float] = RESTART_DELAYS_S,
        max_failures: int = MAX_FAILURES,
        healthy_s: float = HEALTHY_S,
        monotonic: Callable[[], float] = time.monotonic,
        popen: Callable[..., Any] = subprocess.Popen,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.env = env
        self.log_path = log_path
        self.delays = tuple(delays)
        self.max_failures = max_failures
        self.healthy_s = healthy_s
        self._monotonic = monotonic
        self._popen = popen
        self._stop = threading.Event()
        self.quit = threading.Event()  # the child exited 0: the user quit it
        self.gave_up = threading.Event()
        self.starts = 0
        self.exits: list[int] = []
        self._proc: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the supervisor watches (or waits to restart) the child."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self) -> int | None:
        """The current child's process id, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> ChildSupervisor:
        """Start the child and watch it (no-op while already watching); returns self."""
        if not self.running:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name=f"pospal-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and end the child: terminate, then kill what does not exit within `timeout`."""
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def _spawn(self) -> Any:
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            try:
                out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            except OSError:
                out = subprocess.DEVNULL
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        try:
            return self._popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                creationflags=flags,
                close_fds=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def _watch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = self._monotonic()
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    self._proc = self._spawn()
                self.starts += 1
                log.info("%s started (pid %s)", self.name, self._proc.pid)
                code = self._wait()
            except OSError as exc:
                log.error("cannot start the %s: %s", self.name, exc)
                code = None
            if self._stop.is_set():
                return
            if code == 0:
                log.info("%s quit", self.name)
                self.quit.set()
                return
            if code == EXIT_NO_UI:
                log.warning("%s unavailable here (no UI installed); the agent runs headless", self.name)
                self.gave_up.set()
                return
            if code is not None:
                self.exits.append(code)
            failures = 1 if self._monotonic() - started >= self.healthy_s else failures + 1
            reason = describe_exit(code) if code is not None else "could not start"
            if failures >= self.max_failures:
                log.error(
                    "%s died %d times in a row (last: %s); giving up: the agent keeps serving the "
                    "POS without it (see tray.log)",
                    self.name,
                    failures,
                    reason,
                )
                self.gave_up.set()
                return
            delay = self.delays[min(failures - 1, len(self.delays) - 1)]
            log.warning("%s died (%s); restarting in %.0f s", self.name, reason, delay)
            if self._stop.wait(delay):
                return

    def _wait(self) -> int | None:
        # Polls so that stop() is noticed even when the child ignores terminate().
        proc = self._proc
        while True:
            try:
                return proc.wait(0.5)
            except subprocess.TimeoutExpired:
                if self._stop.is_set():
                    return None


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for the child, plus `extra`."""
    env = dict(os.environ)
    env.update(extra or {})
    return env
