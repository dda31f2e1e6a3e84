"""`HttpControl`: the `AgentControl` over the local API of an agent in another process, with the bearer token.

Trays use the caller-checked channel instead (`agent.link.channelcontrol.ChannelControl`, which reuses these
methods); this is for the CLI against an agent without a channel, and for scripts that hold the token.

Every call is one request to `127.0.0.1` with the bearer token, and `subscribe` polls `GET /v1/license`
(answered from memory, so it costs the agent next to nothing). Server refusals the agent passes on come
back as the same `ServerRefused` an in-process call raises; the local API's own errors are
`LocalApiError`, and a missing agent is `AgentUnavailable`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.values import AddTerminal, Checkout, Diagnostics, StatusCallback, Terminal

if TYPE_CHECKING:
    from agent.core.state import LicenseStatus
    from agent.selfupdate.updatestate import UpdateStatus

log = logging.getLogger(__name__)


def status_from_dict(data: Mapping[str, Any]) -> LicenseStatus:
    """Rebuild a `LicenseStatus` from its local API body (the inverse of `LicenseStatus.to_dict`)."""
    from datetime import datetime

    from agent.core.state import LicenseStatus

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
        payment_action_url=data.get("payment_action_url") or None,
        old_app_notice=data.get("old_app_notice") or None,
        machine_id=data.get("machine_id"),
        terminal_name=data.get("terminal_name"),
        last_sync=when("last_sync"),
        next_sync=when("next_sync"),
        agent_version=data.get("agent_version"),
        offline_license=bool(data.get("offline_license")),
        warn_days=int(data.get("warn_days", LicenseStatus.warn_days)),
    )


class HttpControl:
    """AgentControl over the local API of an agent running as its own process (bearer token required).

    `subscribe` polls `GET /v1/license` in one background thread (every `poll_s`) and calls back on
    changes; the local API answers from memory, so this costs the agent next to nothing.
    """

    def __init__(
        self, port: int | None = None, token: str | None = None, *, poll_s: float = 1.0, timeout: float = 5.0
    ) -> None:
        from pospal_client.client import AgentClient

        self._client = AgentClient(port, token=token, timeout=timeout)
        self._poll_s = poll_s
        self._subscribers: list[StatusCallback] = []
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
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

    def start_checkout(
        self, email: str, restaurant_name: str, quantity: int = 1, new_subscription: bool = False
    ) -> Checkout:
        """`POST /v1/checkout`."""
        body = {
            "email": email,
            "restaurant_name": restaurant_name,
            "quantity": quantity,
            "new_subscription": new_subscription,
        }
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

    def pause_subscription(self, resumes_at: datetime | None = None) -> LicenseStatus:
        """`POST /v1/subscription/pause`."""
        body = {"resumes_at": resumes_at.isoformat()} if resumes_at is not None else {}
        return status_from_dict(self._call("POST", "/v1/subscription/pause", body, timeout=60))

    def resume_subscription(self) -> LicenseStatus:
        """`POST /v1/subscription/resume`."""
        return status_from_dict(self._call("POST", "/v1/subscription/resume", {}, timeout=60))

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """`POST /v1/terminals`."""
        body = {k: v for k, v in (("email", email), ("code", code)) if v}
        data = self._call("POST", "/v1/terminals", body, timeout=60)
        return [Terminal.from_dict(t) for t in data.get("terminals", [])]

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """`POST /v1/terminals/remove`."""
        body = {k: v for k, v in (("machine_id", machine_id), ("email", email), ("code", code)) if v}
        self._call("POST", "/v1/terminals/remove", body, timeout=60)

    def rename_terminal(
        self, name: str, machine_id: str | None = None, email: str | None = None, code: str | None = None
    ) -> list[Terminal]:
        """`POST /v1/terminals/rename`."""
        pairs = (("name", name), ("machine_id", machine_id), ("email", email), ("code", code))
        data = self._call("POST", "/v1/terminals/rename", {k: v for k, v in pairs if v}, timeout=60)
        return [Terminal.from_dict(t) for t in data.get("terminals", [])]

    def prove_owner(self, email: str, code: str) -> None:
        """`POST /v1/owner`."""
        self._call("POST", "/v1/owner", {"email": email, "code": code}, timeout=60)

    def add_terminal(
        self, email: str, confirm: bool = False, expected_quantity: int | None = None
    ) -> AddTerminal:
        """`POST /v1/terminals/add`."""
        body: dict[str, Any] = {"email": email, "confirm": confirm}
        if expected_quantity is not None:
            body["expected_quantity"] = expected_quantity
        return AddTerminal.from_dict(self._call("POST", "/v1/terminals/add", body, timeout=60))

    def keep_terminals(self, machine_ids: list[str]) -> list[Terminal]:
        """`POST /v1/terminals/keep`."""
        data = self._call("POST", "/v1/terminals/keep", {"machine_ids": list(machine_ids)}, timeout=60)
        return [Terminal.from_dict(t) for t in data.get("terminals", [])]

    def deactivate(self) -> LicenseStatus:
        """`POST /v1/deactivate`."""
        return status_from_dict(self._call("POST", "/v1/deactivate", {}, timeout=60))

    def diagnostics(self) -> Diagnostics:
        """`GET /v1/diagnostics`."""
        return Diagnostics.from_dict(self._call("GET", "/v1/diagnostics"))

    def language(self) -> str:
        """`GET /v1/language`."""
        return str(self._call("GET", "/v1/language")["language"])

    def set_language(self, lang: str) -> LicenseStatus:
        """`POST /v1/language`."""
        return status_from_dict(self._call("POST", "/v1/language", {"language": lang})["status"])

    def offline_request(self) -> bytes:
        """`POST /v1/offline/request`."""
        return str(self._call("POST", "/v1/offline/request", {})["file"]).encode("utf-8")

    def offline_deactivation(self) -> bytes:
        """`POST /v1/offline/deactivate`."""
        return str(self._call("POST", "/v1/offline/deactivate", {})["file"]).encode("utf-8")

    def update_status(self) -> UpdateStatus:
        """`GET /v1/update`."""
        from agent.selfupdate.updatestate import UpdateStatus as Status

        return Status.from_dict(self._call("GET", "/v1/update"))

    def check_updates(self) -> UpdateStatus:
        """`POST /v1/update/check` (a download may take minutes on a slow line)."""
        from agent.selfupdate.updatestate import UpdateStatus as Status

        return Status.from_dict(self._call("POST", "/v1/update/check", {}, timeout=600))

    def import_offline_license(self, data: bytes) -> LicenseStatus:
        """`POST /v1/offline/license`."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return status_from_dict(self._call("POST", "/v1/offline/license", {"file": text}))

    def close(self) -> None:
        """Stop polling and close the connection."""
        self._stop.set()
        self._client.close()


# Errors of the local API itself (not passed-on server refusals): raised as LocalApiError.
_LOCAL_CODES = frozenset(
    {
        "forbidden_host",
        "forbidden_origin",
        "forbidden_referer",
        "unauthorized",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "bad_json",
        "bad_request",
        "length_required",
        "internal",
        "agent_error",
        "agent_unavailable",
        "local_api_error",
    }
)
