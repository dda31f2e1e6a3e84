"""Stopping the process groups that test fixtures start, on POSIX and on Windows alike.

POSIX fixtures start servers and agents in a new session and signal the whole group (`os.killpg`), so a
child they spawned goes too. Windows has no process groups in that sense and no `os.killpg` or SIGKILL:
there the fixture's process gets TerminateProcess (`Popen.terminate`/`kill`), which is what an
"end task" does, and the agent's atomic writes make that safe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def new_group_kwargs() -> dict:
    """Popen keyword arguments that start the child in its own process group."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def signal_group(process: subprocess.Popen, *, kill: bool = False) -> None:
    """SIGTERM (or with `kill`, SIGKILL) the group `process` leads; on Windows, terminate it."""
    if sys.platform == "win32":
        process.kill() if kill else process.terminate()
        return
    os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
