"""The agent as the launcher runs it: the local API on the launcher's socket, and the update cycle.

`pospal-agent run` calls `run(settings)` when a launcher lent it a listening socket
(`agent.selfupdate.handoff`). It serves exactly as `run --headless` does (same `AgentService`, same
`LocalApi`, same data dir and marks), plus the background updater (`agent.selfupdate.updater`). When a version
is staged and the swap policy allows (the POS idle for a while, or the night window) and no request is being
answered, it stops serving and exits with `EXIT_SWAP`, so the launcher starts the staged version on the same
socket.

`TrackedApi` is `LocalApi` that counts the requests it is answering and remembers when the last one
came, which is what "the POS is idle" and "no request in flight" mean here.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.config import AgentSettings
from agent.control import InProcessControl
from agent.link import channel
from agent.localapi.api import LocalApi
from agent.localapi.httpd import ApiError
from agent.selfupdate import handoff
from agent.selfupdate.install import Install
from agent.selfupdate.launcher import EXIT_SWAP
from agent.vault import store
from pospal_protocol import __version__

log = logging.getLogger(__name__)

FAILED_HEADER = "X-POSPal-Update-Failed"


class TrackedApi(LocalApi):
    """`LocalApi` that knows when it last got a request and how many it is still answering."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._count_lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self.last_request = time.monotonic()
        for key, route in list(self.routes.items()):
            if route.blocking:
                self.routes[key] = replace(route, handler=self._counted(route.handler))

    def _counted(self, handler: Any) -> Any:
        def run(body: dict[str, Any]) -> Any:
            with self._count_lock:
                if self._closed:
                    # The agent is handing over to a new version: nothing new starts that it could cut off.
                    raise ApiError(
                        503, "updating", "The agent is updating; ask again in a moment.", {"retry_after": 1}
                    )
                self._in_flight += 1
            try:
                return handler(body)
            finally:
                with self._count_lock:
                    self._in_flight -= 1
                    self.last_request = time.monotonic()

        return run

    def _is_blocking(self, req: Any) -> bool:
        # Called by the wire for every complete request, on the loop thread: the moment it arrived.
        self.last_request = time.monotonic()
        return super()._is_blocking(req)

    def close_gate(self, wait_s: float = 30.0) -> bool:
        """Start no more worker requests (they get 503 `updating`) and wait for those running to finish;
        True when none is left within `wait_s`. The loop's own answers (`GET /v1/license`, `/v1/health`)
        go on until the agent stops."""
        with self._count_lock:
            self._closed = True
        end = time.monotonic() + wait_s
        while self.in_flight() and time.monotonic() < end:
            time.sleep(0.01)
        return self.in_flight() == 0

    def in_flight(self) -> int:
        """Requests a worker is still answering (the loop answers the rest before it reads the next)."""
        with self._count_lock:
            return self._in_flight

    def idle_s(self) -> float:
        """Seconds since the last request arrived or was answered."""
        return max(0.0, time.monotonic() - self.last_request)

    def adopt(self, sock: socket.socket) -> None:
        """Serve on `sock` (the launcher's) instead of the socket made at construction; before `start()`."""
        httpd = self._httpd
        httpd.socket.close()
        sock.setblocking(False)
        httpd.socket = sock
        httpd.server_address = sock.getsockname()[:2]
        self.port = int(httpd.server_address[1])
        self.valid_hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})


HAND_OVER_S = 1.0  # how long a swap waits for requests already on accepted connections


def run(settings: AgentSettings) -> int:
    """Serve on the launcher's socket until SIGTERM (exit 0) or a swap is due (exit `EXIT_SWAP`)."""
    from agent.core.service import AgentService
    from agent.selfupdate.updater import Updater
    from agent.selfupdate.updatestate import UpdateDesk

    sock = handoff.take()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    install = Install(Path(_install_dir()))
    service = AgentService(settings, probe_in_background=True)
    updater = Updater.for_install(install, service)
    api = TrackedApi(
        # The tray's "Check for updates" and update status go through the same updater.
        InProcessControl(service, updates=UpdateDesk(updater)),
        api_token=store.ensure_api_token(settings.data_dir),
        port=0,
        allowed_origins=settings.allowed_origins,
        prover=service.proof_material,
    )
    api.adopt(sock)
    swapping = False
    tray_channel = None
    try:
        api.start()
        # The tray's caller-checked channel, hosted exactly as `run --headless` hosts it.
        tray_channel = channel.host(settings, api.routes, __version__)
        _report_rollback(install, service)
        service.start()
        updater.start()
        log.info(
            "agent %s serving on the launcher's 127.0.0.1:%d, install %s", __version__, api.port, install.root
        )
        while not stop.wait(0.05):
            if updater.swap_due(api.idle_s()) and api.in_flight() == 0:
                if not api.close_gate():
                    log.warning("a request is still running after 30 s; swapping anyway")
                # New connections now wait in the launcher's backlog for the next version; the ones
                # already accepted get their answers first (closing one with a request unread resets it).
                if not api.hand_over(HAND_OVER_S):
                    log.warning("connections still open after %.1f s; closing them", HAND_OVER_S)
                swapping = True
                log.info("swapping to the staged agent %s", install.pending())
                break
        return EXIT_SWAP if swapping else 0
    finally:
        updater.stop()
        if tray_channel is not None:
            tray_channel.stop()
        api.stop()
        service.stop()


def _report_rollback(install: Install, service: Any) -> None:
    """Tell the server, with each refresh, which update the launcher last rolled back (server/fleet.py)."""
    report = install.last_swap()
    if report.get("outcome") != "rolled_back":
        return
    text = f"{report.get('to')}: {report.get('reason')}".encode("ascii", "replace").decode()[:200]
    session = getattr(service.transport, "session", None)  # HttpTransport; test fakes have none
    if session is not None:
        session.headers[FAILED_HEADER] = "".join(c for c in text if c.isprintable())


def _install_dir() -> str:
    import os

    return os.environ.get("POSPAL_INSTALL_DIR", "")
