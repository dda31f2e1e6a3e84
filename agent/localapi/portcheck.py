"""Why the agent could not take its port, said in words a support person can act on.

Three causes are told apart: another POSPal agent already answers `/v1/health` there (normal with
several Windows sessions: this session's tray attaches to it); Windows reserves the port
(WSAEACCES 10013: Hyper-V, WinNAT, WSL or Docker "excluded port ranges"); or another program holds it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WSAEACCES = 10013
WSAEADDRINUSE = 10048

AGENT = "agent"
EXCLUDED = "excluded"
OTHER = "other"


@dataclass(frozen=True)
class BindFailure:
    """`kind` is AGENT, EXCLUDED or OTHER; `message` is the log line; `version` is the other agent's."""

    kind: str
    message: str
    version: str | None = None


def _agent_health(port: int) -> dict[str, Any] | None:
    from pospal_client.client import health

    from agent.errors import Error

    try:
        answer = health(port, timeout=1.0)
    except Error:
        return None
    return answer if isinstance(answer, dict) and answer.get("ok") is True else None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def explain(
    port: int,
    exc: OSError,
    probe: Callable[[int], dict[str, Any] | None] = _agent_health,
    listening: Callable[[int], bool] = _listening,
) -> BindFailure:
    """Why binding 127.0.0.1:`port` failed with `exc`."""
    answer = probe(port)
    if answer is not None:
        version = str(answer.get("version") or "?")
        return BindFailure(
            AGENT,
            f"another POSPal agent ({version}) already serves 127.0.0.1:{port}; "
            "this session's tray attaches to it",
            version,
        )
    winerror = getattr(exc, "winerror", None)
    # A socket bound with SO_EXCLUSIVEADDRUSE also makes a second bind fail with WSAEACCES; only a port
    # nobody listens on is a reserved one.
    if (winerror == WSAEACCES or (winerror is None and exc.errno == errno.EACCES)) and not listening(port):
        return BindFailure(
            EXCLUDED,
            f"port {port} is reserved by Windows (WSAEACCES 10013: an excluded "
            "port range of Hyper-V, WinNAT, WSL or Docker; see `netsh interface "
            "ipv4 show excludedportrange protocol=tcp`) or needs privileges; "
            "set POSPAL_AGENT_PORT to a free port outside those ranges",
        )
    detail = exc.strerror or str(exc)
    return BindFailure(
        OTHER,
        f"another program holds port {port} ({detail}) and it is not a POSPal "
        "agent; stop it or set POSPAL_AGENT_PORT (and the POS) to another port",
    )
