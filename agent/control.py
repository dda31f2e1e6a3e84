"""AgentControl: the one interface ui/ (and the CLI) use to drive the agent.

Two implementations share the Protocol:

- `InProcessControl` wraps an `AgentService` living in the same process (the tray app's default).
- `HttpControl` talks to an agent running as a separate process, over the local API with the bearer token.

Every method blocks; the UI calls them from a worker thread. `status()` answers from memory and never waits
on the network. Errors come from `agent.errors` (`ServerRefused`, `Offline`, ...), each carrying a message
the UI can show as is.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agent.service import AgentService
    from agent.state import LicenseStatus

log = logging.getLogger(__name__)

# What the server accepts as an email address (server.api.schemas.Email), after strip() and lower().
EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def is_email(value: str) -> bool:
    """True when `value` (stripped) looks like an address the server will accept."""
    value = value.strip()
    return 3 <= len(value) <= 320 and EMAIL.fullmatch(value) is not None


@dataclass(frozen=True)
class Checkout:
    """A Checkout session created for this machine: open `url` in a browser, then wait on `checkout_id`."""

    checkout_id: str
    url: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return asdict(self)


@dataclass(frozen=True)
class Terminal:
    """One activated terminal of the license; times are ISO 8601 UTC strings or None."""

    machine_id: str
    terminal_name: str | None
    activated_at: str | None
    last_seen: str | None
    this_machine: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Terminal:
        """Build from a server or local API JSON object; unknown keys are ignored."""
        return cls(
            machine_id=str(data["machine_id"]),
            terminal_name=data.get("terminal_name"),
            activated_at=data.get("activated_at"),
            last_seen=data.get("last_seen"),
            this_machine=bool(data.get("this_machine", False)),
        )


@dataclass(frozen=True)
class FingerprintSource:
    """One fingerprint component as diagnostics show it: its name, whether its source worked, its hash."""

    name: str
    ok: bool
    hash: str | None


@dataclass(frozen=True)
class Diagnostics:
    """What support needs: fingerprint sources, the last sync's outcome, where data lives, versions."""

    components: tuple[FingerprintSource, ...]
    last_sync_result: str | None
    data_dir: str
    server_url: str
    version: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return {
            "components": [asdict(c) for c in self.components],
            "last_sync_result": self.last_sync_result,
            "data_dir": self.data_dir,
            "server_url": self.server_url,
            "version": self.version,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostics:
        """Build from the local API body."""
        return cls(
            components=tuple(
                FingerprintSource(name=str(c["name"]), ok=bool(c["ok"]), hash=c.get("hash"))
                for c in data.get("components", [])
            ),
            last_sync_result=data.get("last_sync_result"),
            data_dir=str(data.get("data_dir", "")),
            server_url=str(data.get("server_url", "")),
            version=str(data.get("version", "")),
            extra=dict(data.get("extra") or {}),
        )

    def support_report(self) -> str:
        """A plain-text report a person can copy into a support email (hashes only, no raw values)."""
        lines = [
            f"POSPal License Agent {self.version}",
            f"server: {self.server_url}",
            f"data dir: {self.data_dir}",
            f"last sync: {self.last_sync_result or 'never'}",
            "fingerprint:",
        ]
        lines += [f"  {c.name}: {'ok' if c.ok else 'unavailable'} {c.hash or '-'}" for c in self.components]
        lines += [f"{k}: {v}" for k, v in sorted(self.extra.items())]
        return "\n".join(lines)


StatusCallback = Callable[["LicenseStatus"], None]


@runtime_checkable
class AgentControl(Protocol):
    """Everything ui/ may do with the agent. All methods block; call them off the UI thread."""

    def status(self) -> LicenseStatus:
        """The current status, from memory; never blocks on the network."""
        ...

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Call `callback(status)` on every status change (from a background thread); returns unsubscribe."""
        ...

    def sync_now(self) -> LicenseStatus:
        """Sync with the server now (coalesced with one already running) and return the new status."""
        ...

    def start_trial(self, email: str | None = None) -> LicenseStatus:
        """Start (or resume) the 30-day trial; `email` (optional) gets a reminder before it ends."""
        ...

    def request_code(self, email: str, purpose: str) -> None:
        """Ask the server to email a 6-digit code; `purpose` is "activate", "portal" or "terminals"."""
        ...

    def activate(self, email: str, code: str) -> LicenseStatus:
        """Activate this PC on the license of `email`, proven by the emailed `code`."""
        ...

    def start_checkout(self, email: str, restaurant_name: str, quantity: int = 1) -> Checkout:
        """Create a Checkout session for this machine; the caller opens `Checkout.url`."""
        ...

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Poll until the checkout completes, then activate; returns early when `cancel` is set."""
        ...

    def portal_url(self) -> str:
        """A billing-portal URL for this machine's license."""
        ...

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals (machine-signed, or proven by email + code from another PC)."""
        ...

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """Free a seat by removing another terminal."""
        ...

    def deactivate(self) -> LicenseStatus:
        """Deactivate this PC, freeing its seat."""
        ...

    def diagnostics(self) -> Diagnostics:
        """Fingerprint sources, last sync result, data dir, server URL and version."""
        ...


class InProcessControl:
    """AgentControl over an `AgentService` in the same process: each call goes straight to the service."""

    def __init__(self, service: AgentService) -> None:
        self._service = service

    def status(self) -> LicenseStatus:
        """The service's current status."""
        return self._service.status()

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Subscribe to the service's status changes."""
        return self._service.subscribe(callback)

    def sync_now(self) -> LicenseStatus:
        """Sync now through the service's coalescing sync engine."""
        return self._service.sync_now()

    def start_trial(self, email: str | None = None) -> LicenseStatus:
        """Start the trial."""
        return self._service.start_trial(email)

    def request_code(self, email: str, purpose: str) -> None:
        """Ask for an emailed code."""
        self._service.request_code(email, purpose)

    def activate(self, email: str, code: str) -> LicenseStatus:
        """Activate with an emailed code."""
        return self._service.activate(email, code)

    def start_checkout(self, email: str, restaurant_name: str, quantity: int = 1) -> Checkout:
        """Create a Checkout session."""
        return self._service.start_checkout(email, restaurant_name, quantity)

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Wait for the checkout, then activate."""
        return self._service.wait_checkout(checkout_id, cancel, poll_s)

    def portal_url(self) -> str:
        """Billing portal URL."""
        return self._service.portal_url()

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals."""
        return self._service.list_terminals(email, code)

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """Remove a terminal."""
        self._service.remove_terminal(machine_id, email, code)

    def deactivate(self) -> LicenseStatus:
        """Deactivate this PC."""
        return self._service.deactivate()

    def diagnostics(self) -> Diagnostics:
        """Diagnostics from the service."""
        return self._service.diagnostics()


def status_from_dict(data: Mapping[str, Any]) -> LicenseStatus:
    """Rebuild a `LicenseStatus` from its local API body (the inverse of `LicenseStatus.to_dict`)."""
    from datetime import datetime

    from agent.state import LicenseStatus

    def when(key: str) -> datetime | None:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            return None
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    return LicenseStatus(
        license_state=str(data.get("license_state") or "license_missing"),
        licensed=bool(data.get("licensed")),
        reason=data.get("reason"),
        message=str(data.get("message") or ""),
        days_left=data.get("days_left"),
        valid_until=when("valid_until"),
        grace_until=when("grace_until"),
        plan=data.get("plan"),
        features=tuple(data.get("features") or ()),
        seats=data.get("seats"),
        customer_email=data.get("customer_email"),
        machine_id=data.get("machine_id"),
        terminal_name=data.get("terminal_name"),
        last_sync=when("last_sync"),
        next_sync=when("next_sync"),
        agent_version=data.get("agent_version"),
    )


class HttpControl:
    """AgentControl over the local API of an agent running as its own process (bearer token required).

    `subscribe` polls `GET /v1/license` in one background thread (every `poll_s`) and calls back on
    changes; the local API answers from memory, so this costs the agent next to nothing.
    """

    def __init__(self, port: int | None = None, token: str | None = None, *, poll_s: float = 1.0,
                 timeout: float = 5.0) -> None:
        from agent.client import AgentClient

        self._client = AgentClient(port, token=token, timeout=timeout)
        self._poll_s = poll_s
        self._subscribers: list[StatusCallback] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
        from agent.errors import LocalApiError, Offline, ServerRefused

        try:
            return self._client.request(method, path, body, timeout=timeout)
        except LocalApiError as exc:
            if exc.code == "offline":
                raise Offline(exc.message) from exc
            if exc.code in _LOCAL_CODES or exc.status == 0:
                raise
            raise ServerRefused(exc.code, exc.message, exc.extra) from exc

    def status(self) -> LicenseStatus:
        """`GET /v1/license`."""
        return status_from_dict(self._call("GET", "/v1/license"))

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Poll for changes in a background thread; returns unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)
            if self._poller is None:
                self._stop.clear()
                self._poller = threading.Thread(target=self._poll, name="agent-status-poll", daemon=True)
                self._poller.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
                if not self._subscribers and self._poller is not None:
                    self._stop.set()
                    self._poller = None

        return unsubscribe

    def _poll(self) -> None:
        from agent.errors import Error

        last: LicenseStatus | None = None
        while not self._stop.is_set():
            try:
                current = self.status()
            except Error:
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

    def sync_now(self) -> LicenseStatus:
        """`POST /v1/sync`."""
        return status_from_dict(self._call("POST", "/v1/sync", {}, timeout=60))

    def start_trial(self, email: str | None = None) -> LicenseStatus:
        """`POST /v1/trial`."""
        body = {"email": email} if email else {}
        return status_from_dict(self._call("POST", "/v1/trial", body, timeout=60))

    def request_code(self, email: str, purpose: str) -> None:
        """`POST /v1/codes`."""
        self._call("POST", "/v1/codes", {"email": email, "purpose": purpose}, timeout=60)

    def activate(self, email: str, code: str) -> LicenseStatus:
        """`POST /v1/activate`."""
        body = {"email": email, "code": code}
        return status_from_dict(self._call("POST", "/v1/activate", body, timeout=60))

    def start_checkout(self, email: str, restaurant_name: str, quantity: int = 1) -> Checkout:
        """`POST /v1/checkout`."""
        body = {"email": email, "restaurant_name": restaurant_name, "quantity": quantity}
        data = self._call("POST", "/v1/checkout", body, timeout=60)
        return Checkout(str(data["checkout_id"]), str(data["url"]))

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """`POST /v1/checkout/wait` in short rounds, so setting `cancel` stops the wait within one round."""
        round_s = max(0.5, min(5.0, poll_s * 2))
        while True:
            body = {"checkout_id": checkout_id, "poll_s": poll_s, "timeout_s": round_s}
            data = self._call("POST", "/v1/checkout/wait", body, timeout=round_s + 60)
            status = status_from_dict(data["status"])
            if data.get("complete") or cancel.is_set() or status.license_state.startswith("licensed_"):
                return status

    def portal_url(self) -> str:
        """`POST /v1/portal`."""
        return str(self._call("POST", "/v1/portal", {}, timeout=60)["url"])

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """`POST /v1/terminals`."""
        body = {k: v for k, v in (("email", email), ("code", code)) if v}
        data = self._call("POST", "/v1/terminals", body, timeout=60)
        return [Terminal.from_dict(t) for t in data.get("terminals", [])]

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """`POST /v1/terminals/remove`."""
        body = {k: v for k, v in (("machine_id", machine_id), ("email", email), ("code", code)) if v}
        self._call("POST", "/v1/terminals/remove", body, timeout=60)

    def deactivate(self) -> LicenseStatus:
        """`POST /v1/deactivate`."""
        return status_from_dict(self._call("POST", "/v1/deactivate", {}, timeout=60))

    def diagnostics(self) -> Diagnostics:
        """`GET /v1/diagnostics`."""
        return Diagnostics.from_dict(self._call("GET", "/v1/diagnostics"))

    def close(self) -> None:
        """Stop polling and close the connection."""
        self._stop.set()
        self._client.close()


# Errors of the local API itself (not passed-on server refusals): raised as LocalApiError.
_LOCAL_CODES = frozenset({
    "forbidden_host", "forbidden_origin", "forbidden_referer", "unauthorized",
    "method_not_allowed", "payload_too_large", "unsupported_media_type", "bad_json", "bad_request",
    "length_required", "internal", "agent_error", "agent_unavailable", "local_api_error",
})
