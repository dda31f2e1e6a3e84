"""The local API's listening socket, held by the launcher and lent to each agent version it starts.

The launcher binds 127.0.0.1:7421 once and keeps it open for its whole life; every agent version it
starts serves on that same socket. While one version stops and the next starts, nothing is listening in
Python, but the kernel still completes connections into the socket's backlog, so a POS that connects
during the swap waits a moment instead of being refused.

- POSIX: the descriptor is inherited (`pass_fds`) and named in `POSPAL_LISTEN_FD`.
- Windows: `socket.share(pid)` after the child starts, written as one base64 line to its stdin;
  `POSPAL_LISTEN_SOCKET=stdin` tells the child to read it (`socket.fromshare`). The child is put in a job
  object that kills it when the launcher's handle to the job closes: a launcher that dies (the service's
  process killed) takes its agent with it, so no orphan keeps the shared port from the next start. On
  Linux the unit's cgroup does the same (systemd stops what is left when the main process exits).

Standard library only (the launcher imports it).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from typing import Any

FD_VAR = "POSPAL_LISTEN_FD"
SHARE_VAR = "POSPAL_LISTEN_SOCKET"
BACKLOG = 128


def listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    """Bind and listen on `host:port` the way the agent does (exclusive on Windows)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def spawn(command: list[str], sock: socket.socket, env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    """Start `command` with `sock` lent to it (see the module docstring)."""
    env = dict(env)
    if os.name == "nt":
        env[SHARE_VAR] = "stdin"
        proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, **kwargs)
        assert proc.stdin is not None
        share = getattr(sock, "share")  # noqa: B009 (Windows only: mypy on Linux has no such method)
        try:
            _job().assign(proc)
            proc.stdin.write(base64.b64encode(share(proc.pid)) + b"\n")
            proc.stdin.close()
        except BaseException:
            proc.kill()
            raise
        return proc
    env[FD_VAR] = str(sock.fileno())
    return subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),), **kwargs)


def inherited() -> bool:
    """Whether this process was given a listening socket by a launcher."""
    return bool(os.environ.get(FD_VAR) or os.environ.get(SHARE_VAR))


def take() -> socket.socket:
    """The listening socket lent by the launcher (call once, early)."""
    if os.environ.get(SHARE_VAR) == "stdin":
        line = sys.stdin.buffer.readline()
        fromshare = getattr(socket, "fromshare")  # noqa: B009 (Windows only)
        return fromshare(base64.b64decode(line.strip()))
    fd = int(os.environ[FD_VAR])
    return socket.socket(fileno=fd)


class _KillOnCloseJob:  # pragma: no cover - Windows only (tests/windows/test_launcher_windows.py)
    """A Windows job object with JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE: its processes end when the last handle
    to it closes, which happens when this process ends, however it ends."""

    _KILL_ON_JOB_CLOSE = 0x2000
    _EXTENDED_LIMIT_INFORMATION = 9

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        class Basic(ctypes.Structure):
            _fields_ = [
                ("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", wintypes.DWORD),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", wintypes.DWORD),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", wintypes.DWORD),
                ("SchedulingClass", wintypes.DWORD),
            ]

        class Extended(ctypes.Structure):
            _fields_ = [
                ("BasicLimitInformation", Basic),
                ("IoInfo", ctypes.c_uint64 * 6),
                ("ProcessMemoryLimit", ctypes.c_size_t),
                ("JobMemoryLimit", ctypes.c_size_t),
                ("PeakProcessMemoryUsed", ctypes.c_size_t),
                ("PeakJobMemoryUsed", ctypes.c_size_t),
            ]

        windll = getattr(ctypes, "WinDLL")  # noqa: B009 (Windows only: mypy on Linux has no WinDLL)
        self._k32 = k32 = windll("kernel32", use_last_error=True)
        k32.CreateJobObjectW.restype = wintypes.HANDLE
        k32.CreateJobObjectW.argtypes = (ctypes.c_void_p, wintypes.LPCWSTR)
        k32.SetInformationJobObject.argtypes = (
            wintypes.HANDLE,
            ctypes.c_int,
            ctypes.c_void_p,
            wintypes.DWORD,
        )
        k32.AssignProcessToJobObject.argtypes = (wintypes.HANDLE, wintypes.HANDLE)
        self._error = lambda what: OSError(getattr(ctypes, "get_last_error")(), f"{what} failed")  # noqa: B009
        self.handle = k32.CreateJobObjectW(None, None)
        if not self.handle:
            raise self._error("CreateJobObject")
        info = Extended()
        info.BasicLimitInformation.LimitFlags = self._KILL_ON_JOB_CLOSE
        if not k32.SetInformationJobObject(
            self.handle, self._EXTENDED_LIMIT_INFORMATION, ctypes.byref(info), ctypes.sizeof(info)
        ):
            raise self._error("SetInformationJobObject")

    def assign(self, proc: subprocess.Popen) -> None:
        """Put `proc` in the job (it then ends with this process)."""
        if not self._k32.AssignProcessToJobObject(self.handle, int(getattr(proc, "_handle"))):  # noqa: B009
            raise self._error("AssignProcessToJobObject")


_the_job: _KillOnCloseJob | None = None


def _job() -> _KillOnCloseJob:  # pragma: no cover - Windows only
    """This process's one kill-on-close job (its handle is never closed: it closes when the process ends)."""
    global _the_job
    if _the_job is None:
        _the_job = _KillOnCloseJob()
    return _the_job
