"""The local API's listening socket, held by the launcher and lent to each agent version it starts.

The launcher binds 127.0.0.1:7421 once and keeps it open for its whole life; every agent version it
starts serves on that same socket. While one version stops and the next starts, nothing is listening in
Python, but the kernel still completes connections into the socket's backlog, so a POS that connects
during the swap waits a moment instead of being refused.

- POSIX: the descriptor is inherited (`pass_fds`) and named in `POSPAL_LISTEN_FD`.
- Windows: `socket.share(pid)` after the child starts, written as one base64 line to its stdin;
  `POSPAL_LISTEN_SOCKET=stdin` tells the child to read it (`socket.fromshare`).

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
        proc.stdin.write(base64.b64encode(share(proc.pid)) + b"\n")
        proc.stdin.close()
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
