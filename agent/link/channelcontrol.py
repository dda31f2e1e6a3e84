"""`ChannelControl`: the tray's `AgentControl` over the service's caller-checked channel
(`agent.link.channel`).

Every call is one frame on a connection opened by `open_stream` (the Unix socket or the Windows pipe,
each proven to be the service's before anything is sent). The first connection says hello and gets the
credential the service binds to this account and session; the service forgets it when it restarts, and
the control then says hello again, once, by itself.

The same methods as `agent.localapi.remote.HttpControl` (it reuses them: only the transport differs).
`subscribe` polls the status every `poll_s`; while the service cannot be reached it pushes one status that
says so (`license_error` with reason `service_stopped`, or `service_not_genuine` when something else holds the
channel), in the catalogue's words (`agent.messages`), and the next answer after a restart replaces it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import errors
from agent.link.channel import Stream, encode, read_frame
from agent.localapi.remote import HttpControl

if TYPE_CHECKING:
    from agent.config import AgentSettings
    from agent.core.state import LicenseStatus

log = logging.getLogger(__name__)

Opener = Callable[[float], Stream]
# Connections kept open between calls (the poller's, plus one for an action).
_IDLE_KEPT = 2


def open_stream(settings: AgentSettings) -> Opener:
    """How to reach this PC's service: the named pipe on Windows, else the runtime directory's socket."""
    import sys

    if sys.platform == "win32":
        from agent.link import winpipe

        return lambda timeout: winpipe.connect(timeout=timeout)
    from agent.link import unixchannel

    runtime = settings.runtime_dir or unixchannel.DEFAULT_RUNTIME_DIR
    return lambda timeout: unixchannel.connect(runtime, timeout=timeout)


def stopped_status(reason: str, lang: str = "en") -> LicenseStatus:
    """What the tray shows while it cannot reach the genuine service (`reason`: service_stopped or
    service_not_genuine), in `lang` and with every translation."""
    from agent import messages
    from agent.core.state import LicenseStatus

    def line(lg: str) -> str:
        parts = (messages.text(f"channel.{reason}", lg), messages.text(f"channel.{reason}.fix", lg))
        return " ".join(p for p in parts if p)

    return LicenseStatus(
        license_state="license_error",
        licensed=False,
        reason=reason,
        message=line(lang),
        translations=tuple((lg, line(lg)) for lg in messages.LANGUAGES),
    )


class ChannelControl(HttpControl):
    """AgentControl over the channel (see the module docstring)."""

    def __init__(
        self, opener: Opener, *, poll_s: float = 1.0, timeout: float = 5.0, lang: str = "en"
    ) -> None:
        # HttpControl's state for subscribe/poll; its HTTP client is not used.
        self._opener = opener
        self._timeout = timeout
        self._poll_s = poll_s
        self._lang = lang
        self._subscribers = []
        self._lock = threading.Lock()
        self._poller = None
        self._stop = threading.Event()
        self._idle: list[Any] = []
        self._credential: str | None = None
        self.reachable: bool | None = None

    # -- the transport -----------------------------------------------------------------------------------

    def _exchange(self, stream: Any, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        sock = getattr(stream, "sock", None)
        if sock is not None:
            sock.settimeout(timeout)
        stream.send_all(encode(request))
        answer = read_frame(stream)
        if answer is None:
            raise ConnectionResetError("the service closed the channel")
        return answer

    def _take(self) -> tuple[Any, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._opener(self._timeout), False

    def _give_back(self, stream: Any) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_KEPT and not self._stop.is_set():
                self._idle.append(stream)
                return
        _close(stream)

    def _hello(self, stream: Any) -> str:
        answer = self._exchange(stream, {"method": "POST", "path": "hello", "body": {}}, self._timeout)
        credential = (answer.get("body") or {}).get("credential")
        if answer.get("status") != 200 or not isinstance(credential, str):
            raise errors.LocalApiError("The service refused this window's hello.", code="hello_refused")
        self._credential = credential
        return credential

    def _send(self, method: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request; a stale kept connection (the service restarted) is replaced once, and a forgotten
        credential renewed once."""
        for attempt in range(3):
            stream, reused = self._take()
            try:
                credential = self._credential or self._hello(stream)
                request = {"method": method, "path": path, "body": body, "credential": credential}
                answer = self._exchange(stream, request, timeout)
            except errors.Error:
                _close(stream)
                raise
            except (OSError, ValueError) as exc:
                _close(stream)
                if reused and attempt < 2:
                    continue
                raise errors.AgentUnavailable(f"The POSPal License service does not answer ({exc}).") from exc
            self._give_back(stream)
            code = (answer.get("body") or {}).get("error")
            if answer.get("status") == 401 and code == "credential_unknown" and attempt < 2:
                self._credential = None
                continue
            return answer
        raise errors.AgentUnavailable()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        from agent.localapi.remote import _LOCAL_CODES

        answer = self._send(method, path, body or {}, timeout or self._timeout)
        status = int(answer.get("status") or 0)
        data = answer.get("body")
        data = data if isinstance(data, dict) else {}
        if 200 <= status < 300:
            return data
        code = str(data.get("error") or "local_api_error")
        message = str(data.get("message") or code)
        extra = {k: v for k, v in data.items() if k not in ("error", "message")}
        if code == "offline":
            raise errors.Offline(message)
        if code in _LOCAL_CODES or code in _CHANNEL_CODES:
            raise errors.LocalApiError(message, status=status, code=code, extra=extra)
        raise errors.ServerRefused(code, message, extra)

    # -- status while the service is away ------------------------------------------------------------------

    def _poll(self) -> None:
        last: LicenseStatus | None = None
        while not self._stop.is_set():
            current: LicenseStatus | None
            try:
                current = self.status()
                if self.reachable is False:
                    log.info("the license service answers again")
                self.reachable = True
            except errors.NotGenuineService as exc:
                self._note_unreachable(exc)
                current = stopped_status("service_not_genuine", self._lang)
            except (errors.AgentUnavailable, errors.LocalApiError) as exc:
                self._note_unreachable(exc)
                current = stopped_status("service_stopped", self._lang)
            except errors.Error:
                current = None
            if current is not None and current != last:
                last = current
                with self._lock:
                    subscribers = list(self._subscribers)
                for callback in subscribers:
                    try:
                        callback(current)
                    except Exception:  # a broken subscriber must not stop the others
                        log.exception("status subscriber failed")
            self._stop.wait(self._poll_s)

    def _note_unreachable(self, exc: errors.Error) -> None:
        if self.reachable is not False:
            log.warning("the license service cannot be reached: %s", exc.message)
        self.reachable = False

    def close(self) -> None:
        """Stop polling and close the kept connections."""
        self._stop.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for stream in idle:
            _close(stream)


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


# The channel's own refusals (never the server's): raised as LocalApiError.
_CHANNEL_CODES = frozenset(
    {"credential_required", "credential_unknown", "wrong_caller", "not_found", "payload_too_large"}
)
