"""A small Python client for the agent's local API, for POS apps written in Python (stdlib only).

    from agent.client import AgentClient
    status = AgentClient().license()        # {"license_state": ..., "licensed": true, ...}
    if not status["licensed"]: ...

Each thread keeps its own keep-alive connection, so a POS app can poll cheaply from several threads. Every
call has a timeout; when no agent answers it raises `AgentUnavailable`, and an error answer raises
`LocalApiError` with the API's `code`, so a POS app can decide for itself what "no answer" means.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from typing import Any

from agent.errors import AgentUnavailable, LocalApiError

DEFAULT_PORT = 7421
DEFAULT_TIMEOUT_S = 2.0
# Connections the server may have dropped while idle: these mean "reconnect once", not "agent down".
_STALE = (
    http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest
)


def default_port() -> int:
    """The agent's port: POSPAL_AGENT_PORT or 7421."""
    try:
        return int(os.environ.get("POSPAL_AGENT_PORT", DEFAULT_PORT))
    except ValueError:
        return DEFAULT_PORT


class AgentClient:
    """Client of one agent's local API at `127.0.0.1:port`; `token` is needed for POST calls only."""

    def __init__(
        self,
        port: int | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port if port is not None else default_port()
        self.host = host
        self.token = token
        self.timeout = timeout
        self._local = threading.local()

    # -- the POS app's calls ---------------------------------------------------------------------------

    def license(self) -> dict[str, Any]:
        """`GET /v1/license`: the current license status (answered from the agent's memory)."""
        return self.request("GET", "/v1/license")

    def health(self) -> dict[str, Any]:
        """`GET /v1/health`: `{"ok": true, "version": ...}`."""
        return self.request("GET", "/v1/health")

    def is_licensed(self) -> bool:
        """Whether the POS may take orders now; False when no agent answers."""
        try:
            return bool(self.license().get("licensed"))
        except LocalApiError:
            return False

    def sync(self, token: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """`POST /v1/sync`: sync with the cloud now and return the new status (needs the api-token)."""
        return self.request("POST", "/v1/sync", {}, token=token, timeout=timeout)

    # -- plumbing --------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON answer; raises `LocalApiError`/`AgentUnavailable`."""
        headers = {"Host": f"{self.host}:{self.port}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        bearer = token or self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        wait = self.timeout if timeout is None else timeout
        # A reused keep-alive connection may have been closed by the agent while idle; then the request
        # never reached it and is safe to resend once. On a fresh connection only a GET is resent.
        for attempt in (1, 2):
            conn = self._connection(wait)
            reused = conn.sock is not None
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
                if resp.will_close:
                    self._drop()
                break
            except _STALE as exc:
                self._drop()
                if attempt == 2 or not (reused or method == "GET"):
                    raise AgentUnavailable("The POSPal License Agent closed the connection.") from exc
            except TimeoutError as exc:
                self._drop()
                raise AgentUnavailable("The POSPal License Agent did not answer in time.") from exc
            except OSError as exc:
                self._drop()
                raise AgentUnavailable() from exc
        try:
            data = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise LocalApiError("The agent sent an answer that is not JSON.", status=status) from exc
        if status >= 400:
            data = data if isinstance(data, dict) else {}
            code = str(data.get("error") or "local_api_error")
            message = str(data.get("message") or f"The agent answered HTTP {status}.")
            extra = {k: v for k, v in data.items() if k not in ("error", "message")}
            raise LocalApiError(message, status=status, code=code, extra=extra)
        if not isinstance(data, dict):
            raise LocalApiError("The agent sent an unexpected answer.", status=status)
        return data

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            self._local.conn = conn
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's connection."""
        self._drop()


def license(port: int | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:  # noqa: A001
    """One-shot `GET /v1/license` (opens its own connection)."""
    client = AgentClient(port, timeout=timeout)
    try:
        return client.license()
    finally:
        client.close()


def health(port: int | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """One-shot `GET /v1/health`."""
    client = AgentClient(port, timeout=timeout)
    try:
        return client.health()
    finally:
        client.close()


def sync(token: str, port: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """One-shot `POST /v1/sync` with the agent's api-token."""
    client = AgentClient(port, token=token)
    try:
        return client.sync(timeout=timeout)
    finally:
        client.close()
