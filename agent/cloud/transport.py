"""Talking to the cloud server: the `CloudTransport` protocol and `HttpTransport` on a requests Session.

One method per server endpoint (docs/ARCHITECTURE.md "Server API"). Bodies are plain dicts built by the
service; this module only signs, sends, and maps answers:

- no answer, a timeout, a 5xx or a garbled 200  -> `agent.errors.Offline` (transient: back off, retry)
- a 4xx JSON error body                         -> `agent.errors.ServerRefused(code, message, extra)`

Only idempotent calls (GETs) are retried here; a POST is sent once and the sync engine's backoff decides
when to try again. The one exception is a request the server refused *as a replay* because this PC's clock
is off: nothing happened on the server, so it is re-signed with the server's time and sent once more. That
is what lets a PC whose clock was set back sync at all (and so clear `clock_rollback`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

from agent.errors import Offline, ServerRefused
from pospal_protocol import __version__
from pospal_protocol.signatures import new_nonce, sign_request

if TYPE_CHECKING:
    import requests
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
# GETs are retried this many extra times, quickly: a blip should not cost a whole backoff step.
GET_RETRIES = 2
# A skew smaller than this is noise (HTTP dates have 1 s resolution; the server allows 300 s).
_SKEW_NOISE_S = 30


@dataclass(frozen=True)
class MachineIdentity:
    """Who signs a request: the machine key, and the server-assigned id once there is one.

    `nonce`, when given, is the request's nonce (else a fresh one is drawn): the caller picks it so it can
    check that the token in the answer carries it (`rn`), i.e. answers this very request.
    """

    private_key: Ed25519PrivateKey
    machine_id: str | None = None
    nonce: str | None = None


class CloudTransport(Protocol):
    """The server API as the agent uses it. Every method raises `Offline` or `ServerRefused`."""

    def start_trial(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/trials` -> `{token, keyset?}`."""
        ...

    def request_code(self, email: str, purpose: str, locale: str | None = None) -> None:
        """`POST /v1/codes`: email a 6-digit code."""
        ...

    def create_checkout(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/checkout` -> `{checkout_id, url}`."""
        ...

    def checkout_status(self, checkout_id: str) -> str:
        """`GET /v1/checkout/{id}` -> "open", "complete" or "expired"."""
        ...

    def activate(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/activations` -> `{token, machine_id, license_id, keyset?}`."""
        ...

    def refresh(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/refresh` (machine-signed) -> `{token, keyset?}`."""
        ...

    def deactivate(self, identity: MachineIdentity) -> None:
        """`POST /v1/deactivate` (machine-signed)."""
        ...

    def list_terminals(
        self, identity: MachineIdentity | None, body: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`POST /v1/terminals` (machine-signed, or email + code in `body`)."""
        ...

    def remove_terminal(self, identity: MachineIdentity | None, body: Mapping[str, Any]) -> None:
        """`POST /v1/terminals/remove`."""
        ...

    def rename_terminal(
        self, identity: MachineIdentity | None, body: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`POST /v1/terminals/rename` -> the terminals."""
        ...

    def portal(self, identity: MachineIdentity | None, body: Mapping[str, Any]) -> str:
        """`POST /v1/portal` -> the portal URL."""
        ...

    def set_pause(self, identity: MachineIdentity, paused: bool, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/subscription/pause` (or `/resume`) -> `{paused, resumes_at}`."""
        ...

    def prove_owner(self, identity: MachineIdentity, body: Mapping[str, Any]) -> None:
        """`POST /v1/owner` (signed): the owner's code proves their e-mail on this machine."""
        ...

    def add_terminal(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/terminals/add` -> the price, and the token once confirmed."""
        ...

    def keep_terminals(self, identity: MachineIdentity, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`POST /v1/terminals/keep` -> the terminals."""
        ...

    def keys(self) -> dict[str, Any]:
        """`GET /v1/keys`: the JWKS (informational only; unsigned keys are never trusted)."""
        ...


class HttpTransport:
    """`CloudTransport` over HTTPS with connect/read timeouts; signs with the machine key.

    `clock` gives the local time used for request timestamps (corrected by the skew learned from the
    server when it refused a timestamp). `requests_made` counts requests by path (for diagnostics and the
    fleet simulation).
    """

    def __init__(
        self,
        server_url: str,
        clock: Any,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        session: requests.Session | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._prefix = urlsplit(self.server_url).path.rstrip("/")
        self.clock = clock
        self.timeouts = (connect_timeout, read_timeout)
        self._session = session
        self.skew_s = 0
        self.requests_made: Counter[str] = Counter()

    # -- endpoints -------------------------------------------------------------------------------------

    def start_trial(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/trials`."""
        return self._post("/v1/trials", body, identity)

    def request_code(self, email: str, purpose: str, locale: str | None = None) -> None:
        """`POST /v1/codes`."""
        body: dict[str, Any] = {"email": email, "purpose": purpose}
        if locale:
            body["locale"] = locale
        self._post("/v1/codes", body, None)

    def create_checkout(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/checkout`."""
        return self._post("/v1/checkout", body, identity)

    def checkout_status(self, checkout_id: str) -> str:
        """`GET /v1/checkout/{id}`."""
        return str(self._get(f"/v1/checkout/{quote(checkout_id, safe='')}").get("status", "open"))

    def activate(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/activations`."""
        return self._post("/v1/activations", body, identity)

    def set_pause(self, identity: MachineIdentity, paused: bool, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/subscription/pause` or `/v1/subscription/resume` (the owner's proof on this PC)."""
        return self._post(f"/v1/subscription/{'pause' if paused else 'resume'}", body, identity)

    def migrate(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/migrations`: the old POSPal app's e-mail and unlock token (agent/vault/pospal1.py)."""
        return self._post("/v1/migrations", body, identity)

    def refresh(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/refresh`."""
        return self._post("/v1/refresh", body, identity)

    def deactivate(self, identity: MachineIdentity) -> None:
        """`POST /v1/deactivate`."""
        self._post("/v1/deactivate", {}, identity)

    def list_terminals(
        self, identity: MachineIdentity | None, body: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`POST /v1/terminals`."""
        terminals = self._post("/v1/terminals", body, identity).get("terminals", [])
        return [t for t in terminals if isinstance(t, dict)]

    def remove_terminal(self, identity: MachineIdentity | None, body: Mapping[str, Any]) -> None:
        """`POST /v1/terminals/remove`."""
        self._post("/v1/terminals/remove", body, identity)

    def rename_terminal(
        self, identity: MachineIdentity | None, body: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """`POST /v1/terminals/rename`."""
        terminals = self._post("/v1/terminals/rename", body, identity).get("terminals", [])
        return [t for t in terminals if isinstance(t, dict)]

    def prove_owner(self, identity: MachineIdentity, body: Mapping[str, Any]) -> None:
        """`POST /v1/owner`."""
        self._post("/v1/owner", body, identity)

    def add_terminal(self, identity: MachineIdentity, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /v1/terminals/add`."""
        return self._post("/v1/terminals/add", body, identity)

    def keep_terminals(self, identity: MachineIdentity, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`POST /v1/terminals/keep`."""
        terminals = self._post("/v1/terminals/keep", body, identity).get("terminals", [])
        return [t for t in terminals if isinstance(t, dict)]

    def portal(self, identity: MachineIdentity | None, body: Mapping[str, Any]) -> str:
        """`POST /v1/portal`."""
        url = self._post("/v1/portal", body, identity).get("url")
        if not isinstance(url, str) or not url:
            raise Offline("The server sent no billing portal address.")
        return url

    def keys(self) -> dict[str, Any]:
        """`GET /v1/keys`."""
        return self._get("/v1/keys")

    @property
    def session(self) -> requests.Session:
        """The pooled requests Session, made on first use (importing requests takes a noticeable part of a
        second, which the agent spends after its local API already answers)."""
        if self._session is None:
            from agent.cloud import netconfig

            # The OS trust store (TLS-inspecting antivirus and proxies) and the system/env proxy.
            self._session = netconfig.new_session()
            self._session.headers["User-Agent"] = f"pospal-agent/{__version__}"
        return self._session

    def describe_network(self) -> dict[str, str]:
        """Which proxy and trust store reach the server (for Diagnostics; no password shown)."""
        from agent.cloud import netconfig

        return netconfig.describe(self.server_url, self._session)

    def close(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            self._session.close()

    # -- plumbing --------------------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        for attempt in range(GET_RETRIES + 1):
            try:
                return self._send("GET", path, b"", {})
            except Offline:
                if attempt == GET_RETRIES:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _post(self, path: str, body: Mapping[str, Any], identity: MachineIdentity | None) -> dict[str, Any]:
        raw = json.dumps(dict(body), separators=(",", ":"), sort_keys=True).encode("utf-8")
        try:
            return self._send("POST", path, raw, self._signed(path, raw, identity))
        except _SkewRefused as skew:
            # The server refused our timestamp, so nothing happened there: re-sign with its time, once.
            self.skew_s = skew.new_skew
            log.info("clock differs from the server's by %d s; re-signing", self.skew_s)
            try:
                return self._send("POST", path, raw, self._signed(path, raw, identity))
            except _SkewRefused as again:
                raise again.refused from None

    def _signed(self, path: str, raw: bytes, identity: MachineIdentity | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if identity is not None:
            ts = int(self.clock.now().timestamp()) + self.skew_s
            headers.update(
                # A re-sign after a skew refusal reuses the nonce: the server refused it before storing it.
                sign_request(
                    identity.private_key,
                    "POST",
                    self._prefix + path,
                    raw,
                    ts,
                    identity.nonce or new_nonce(),
                    machine_id=identity.machine_id,
                )
            )
        return headers

    def _send(self, method: str, path: str, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
        import requests

        self.requests_made["/v1/checkout/{id}" if path.startswith("/v1/checkout/") else path] += 1
        try:
            resp = self.session.request(
                method,
                self.server_url + path,
                data=raw or None,
                headers=headers,
                timeout=self.timeouts,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise Offline("The license server did not answer in time.") from exc
        except requests.RequestException as exc:
            raise Offline("The license server cannot be reached.") from exc
        if resp.status_code >= 500:
            raise Offline(f"The license server had a problem (HTTP {resp.status_code}).")
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            raise self._refusal(resp, data, headers)
        if not isinstance(data, dict) or resp.status_code >= 300:
            raise Offline(f"The license server sent an unexpected answer (HTTP {resp.status_code}).")
        return data

    def _refusal(self, resp: requests.Response, data: Any, headers: Mapping[str, str]) -> Exception:
        if not isinstance(data, dict) or not isinstance(data.get("error"), str):
            code = resp.status_code
            return ServerRefused(f"http_{code}", f"The license server refused the request (HTTP {code}).")
        extra = {k: v for k, v in data.items() if k not in ("error", "message")}
        retry_after = resp.headers.get("Retry-After", "")
        if resp.status_code == 429 and "retry_after" not in extra and retry_after.isdigit():
            extra["retry_after"] = int(retry_after)
        refused = ServerRefused(data["error"], str(data.get("message") or data["error"]), extra)
        if refused.code == "replay" and "X-POSPal-Timestamp" in headers:
            new_skew = self._server_skew(resp, extra, int(headers["X-POSPal-Timestamp"]) - self.skew_s)
            if new_skew is not None and abs(new_skew - self.skew_s) > _SKEW_NOISE_S:
                return _SkewRefused(refused, new_skew)
        return refused

    @staticmethod
    def _server_skew(resp: requests.Response, extra: Mapping[str, Any], local_ts: int) -> int | None:
        """Server time minus our local time, from the error's `server_time` or else the Date header."""
        server_time = extra.get("server_time")
        if isinstance(server_time, int | float) and not isinstance(server_time, bool):
            return int(server_time) - local_ts
        try:
            return int(parsedate_to_datetime(resp.headers["Date"]).timestamp()) - local_ts
        except (KeyError, TypeError, ValueError):
            return None


class _SkewRefused(Exception):
    """Internal: a replay refusal explained by clock skew (carries the refusal and the corrected skew)."""

    def __init__(self, refused: ServerRefused, new_skew: int) -> None:
        super().__init__(refused.message)
        self.refused = refused
        self.new_skew = new_skew
