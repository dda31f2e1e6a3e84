"""FakeControl: an in-memory AgentControl for UI tests, and BlockingControl, whose calls never return.

FakeControl behaves like the agent as the window sees it: a trial starts, a wrong code is refused with
``bad_code``, a full license refuses with ``seats_full`` and its terminals, a checkout completes when the
test "pays". A conformance test runs the same checks against the real InProcessControl so this fake
cannot drift from the contract.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agent.control import AddTerminal, Checkout, Diagnostics, FingerprintSource, Terminal
from agent.core.state import LicenseStatus
from agent.errors import Offline, ServerRefused
from agent.selfupdate.updatestate import UpdateStatus

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
RIGHT_CODE = "424242"

_LICENSED = {
    "licensed_active": True,
    "trial_active": True,
    "licensed_grace": True,
    "licensed_renewal_required": True,
}
_REASON = {
    "licensed_active": "active",
    "trial_active": "trial",
    "licensed_grace": "offline_grace",
    "licensed_renewal_required": "payment_failed",
    "licensed_cancelled": "subscription_ended",
    "trial_expired": "trial_ended",
    "license_missing": "not_activated",
    "license_error": "offline_expired",
}
_DAYS = {"trial_active": 12, "licensed_grace": 9, "licensed_renewal_required": 4, "licensed_active": 27}


def make_status(state: str, **overrides) -> LicenseStatus:
    """A plausible LicenseStatus for ``state`` (any field can be overridden)."""
    licensed = _LICENSED.get(state, False)
    n = overrides.get("days_left", _DAYS.get(state, 0))
    fields = {
        "license_state": state,
        "licensed": licensed,
        "reason": _REASON[state],
        "message": f"agent message for {state}",
        "days_left": _DAYS.get(state, 0 if state != "license_missing" else None),
        "valid_until": NOW + timedelta(days=n or 0) if state != "license_missing" else None,
        "grace_until": NOW + timedelta(days=n or 0) if licensed else None,
        "plan": None if state == "license_missing" else ("trial" if "trial" in state else "pospal-monthly"),
        "seats": None if state == "license_missing" else (1 if "trial" in state else 2),
        "customer_email": None if state == "license_missing" else "owner@taverna.gr",
        "machine_id": None if state == "license_missing" else "m_front",
        "terminal_name": "Front counter",
        "last_sync": None if state == "license_missing" else NOW - timedelta(hours=2),
        "next_sync": None,
        "agent_version": "1.0.0",
    }
    fields.update(overrides)
    return LicenseStatus(**fields)


class FakeControl:
    """An AgentControl in memory. Set ``fail_next[method] = exc`` to make one call raise."""

    def __init__(self, state: str = "license_missing", seats_full: bool = False) -> None:
        self._status = make_status(state)
        self._callbacks: list = []
        self._lock = threading.Lock()
        self.calls: list[tuple[str, tuple]] = []
        self.fail_next: dict[str, BaseException] = {}
        self.codes_sent: list[tuple[str, str]] = []
        self.paid = threading.Event()
        self.seats_full = seats_full
        self._language = "en"
        # What "Check for updates" finds next: "up_to_date", "staged" (1.1.0) or "failed" (its words).
        self.update_outcome = "up_to_date"
        self.updates = UpdateStatus(enabled=True, current="1.0.0")
        self.terminals = [
            Terminal("m_front", "Front counter", NOW.isoformat(), NOW.isoformat(), True),
            Terminal("m_bar", "Beach bar", NOW.isoformat(), (NOW - timedelta(days=40)).isoformat(), False),
        ]

    # --- helpers for tests ---
    def set_status(self, status: LicenseStatus) -> None:
        """Change the status and push it to subscribers, as the agent's sync thread would."""
        with self._lock:
            self._status = status
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(status)

    def _call(self, name: str, *args) -> None:
        self.calls.append((name, args))
        exc = self.fail_next.pop(name, None)
        if exc is not None:
            raise exc

    def called(self, name: str) -> int:
        """How many times ``name`` was called."""
        return sum(1 for n, _ in self.calls if n == name)

    # --- AgentControl ---
    def status(self) -> LicenseStatus:
        """Current status."""
        return self._status

    def subscribe(self, callback):
        """Register a status callback."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def sync_now(self) -> LicenseStatus:
        """A sync that changes nothing."""
        self._call("sync_now")
        return self._status

    def start_trial(self, email: str | None = None) -> LicenseStatus:
        """Start the 30-day trial."""
        self._call("start_trial", email)
        self.set_status(make_status("trial_active", days_left=30))
        return self._status

    def request_code(self, email: str, purpose: str) -> None:
        """Pretend to email a code."""
        self._call("request_code", email, purpose)
        self.codes_sent.append((email, purpose))

    def activate(self, email: str, code: str) -> LicenseStatus:
        """Activate with the right code; refuse a wrong one or a full license like the server does."""
        self._call("activate", email, code)
        if code != RIGHT_CODE:
            raise ServerRefused("bad_code", "The code is not right.")
        others = [t for t in self.terminals if not t.this_machine]
        if self.seats_full and len(others) >= 1:
            raise ServerRefused(
                "seats_full",
                "All seats are taken.",
                {
                    "terminals": [
                        {
                            "machine_id": t.machine_id,
                            "terminal_name": t.terminal_name,
                            "last_seen": t.last_seen,
                        }
                        for t in others
                    ]
                },
            )
        self.set_status(make_status("licensed_active", customer_email=email))
        return self._status

    def start_checkout(self, email: str, restaurant_name: str, quantity: int = 1) -> Checkout:
        """A checkout session."""
        self._call("start_checkout", email, restaurant_name, quantity)
        return Checkout("co_test", "http://127.0.0.1:9/sandbox/checkout/co_test")

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Wait for ``paid`` (the test pays) or ``cancel``; bounded so a broken test cannot hang."""
        self._call("wait_checkout", checkout_id)
        for _ in range(600):
            if cancel.is_set():
                return self._status
            if self.paid.wait(0.05):
                self.set_status(make_status("licensed_active"))
                return self._status
        raise Offline("checkout wait timed out")

    def add_terminal(self, email: str, confirm: bool = False, expected_quantity=None) -> AddTerminal:
        """ "Add this terminal": 1 -> 2 terminals for EUR 10.00 now; confirming activates this PC."""
        self._call("add_terminal", email, confirm, expected_quantity)
        if confirm:
            self.set_status(make_status("licensed_active"))
        return AddTerminal(1, 2, 1000, "eur")

    def keep_terminals(self, machine_ids: list[str]) -> list[Terminal]:
        """The owner's choice of the terminals that stay."""
        self._call("keep_terminals", list(machine_ids))
        return list(self.terminals)

    def prove_owner(self, email: str, code: str) -> None:
        """The owner's code (any 6 digits but 000000 pass)."""
        self._call("prove_owner", email, code)
        if code == "000000":
            raise ServerRefused("bad_code", "The code is not correct.")

    def portal_url(self) -> str:
        """Billing portal URL."""
        self._call("portal_url")
        return "https://billing.example/portal/session"

    def pause_subscription(self, resumes_at=None) -> LicenseStatus:
        """Pause for the season (the status is unchanged in the fake)."""
        self._call("pause_subscription", resumes_at)
        return self._status

    def resume_subscription(self) -> LicenseStatus:
        """Resume now."""
        self._call("resume_subscription")
        return self._status

    def list_terminals(self, email=None, code=None) -> list[Terminal]:
        """The terminals."""
        self._call("list_terminals", email, code)
        return list(self.terminals)

    def remove_terminal(self, machine_id: str, email=None, code=None) -> None:
        """Remove a terminal."""
        self._call("remove_terminal", machine_id, email, code)
        before = len(self.terminals)
        self.terminals = [t for t in self.terminals if t.machine_id != machine_id]
        if len(self.terminals) == before:
            raise ServerRefused("not_found", "No such terminal.")
        self.seats_full = False

    def rename_terminal(self, name: str, machine_id=None, email=None, code=None) -> list[Terminal]:
        """Rename this PC (no `machine_id`) or another terminal; the status follows this PC's name."""
        self._call("rename_terminal", name, machine_id, email, code)
        mine = next((t.machine_id for t in self.terminals if t.this_machine), None)
        target = machine_id or mine
        self.terminals = [
            replace(t, terminal_name=name) if t.machine_id == target else t for t in self.terminals
        ]
        if target == mine:
            self.set_status(replace(self._status, terminal_name=name))
        return list(self.terminals)

    def deactivate(self) -> LicenseStatus:
        """Deactivate: the status goes to license_missing."""
        self._call("deactivate")
        self.set_status(make_status("license_missing"))
        return self._status

    def diagnostics(self) -> Diagnostics:
        """Diagnostics with one failing fingerprint source."""
        self._call("diagnostics")
        return Diagnostics(
            components=(
                FingerprintSource("machine_id", True, "a1" * 32),
                FingerprintSource("product_uuid", True, "b2" * 32),
                FingerprintSource("board_serial", False, None),
                FingerprintSource("disk_serial", True, "c3" * 32),
                FingerprintSource("mac", True, "d4" * 32),
            ),
            last_sync_result="ok at 2026-11-26T07:30:00Z",
            data_dir="/var/lib/pospal",
            server_url="https://license.pospal.gr",
            version="1.0.0",
            extra={
                "fingerprint_match": "4 compared, 0 differ, 5 bound: same machine",
                "proxy": "none (direct)",
                "sync_attempts": 1,
            },
        )

    def language(self) -> str:
        """The agent's language (what ``set_language`` last chose)."""
        self._call("language")
        return self._language

    def set_language(self, lang: str) -> LicenseStatus:
        """Persist the window's language choice."""
        self._call("set_language", lang)
        self._language = lang
        return self._status

    def offline_request(self) -> bytes:
        """A stand-in activation request file."""
        self._call("offline_request")
        return b'{"type": "pospal-offline-request"}\n'

    def import_offline_license(self, data: bytes) -> LicenseStatus:
        """Take a file reading ``GOOD`` as an offline license; refuse anything else like the agent does."""
        self._call("import_offline_license", data)
        if data.strip() != b"GOOD":
            from agent.errors import LicenseFileRefused

            raise LicenseFileRefused("other_machine", "This license file was made for another computer.")
        self.set_status(
            make_status("licensed_active", reason="offline_license", offline_license=True, days_left=40)
        )
        return self._status

    def offline_deactivation(self) -> bytes:
        """Give a license file up like the agent: refused without one, else forgotten, and a signed file."""
        self._call("offline_deactivation")
        if not self._status.offline_license:
            from agent.errors import LicenseFileRefused

            raise LicenseFileRefused("invalid", "This PC holds no license file to give up.")
        self.set_status(make_status("license_missing"))
        return b'{"type": "pospal-offline-deactivation"}\n'

    def update_status(self) -> UpdateStatus:
        """The update state as last set or checked."""
        self._call("update_status")
        return self.updates

    def check_updates(self) -> UpdateStatus:
        """A check that finds ``update_outcome``; a failure is an outcome, never an exception."""
        self._call("check_updates")
        if not self.updates.enabled:  # like the agent: nothing is checked
            return self.updates
        when = NOW.isoformat()
        if self.update_outcome == "staged":
            self.updates = replace(
                self.updates, pending="1.1.0", check_outcome="staged", checked_at=when, check_detail="1.1.0"
            )
        elif self.update_outcome == "failed":
            self.updates = replace(
                self.updates,
                check_outcome="failed",
                checked_at=when,
                check_detail="cannot reach https://license.pospal.gr/updates",
            )
        else:
            self.updates = replace(
                self.updates, check_outcome="up_to_date", checked_at=when, check_detail="1.0.0"
            )
        return self.updates


class BlockingControl(FakeControl):
    """Every call except status/subscribe blocks until ``release`` is set: a hung agent or network."""

    def __init__(self, state: str = "licensed_active") -> None:
        super().__init__(state)
        self.entered = threading.Event()
        self.release = threading.Event()

    def _call(self, name: str, *args) -> None:
        self.entered.set()
        self.release.wait(60)  # bounded; the fixture sets it at teardown
        super()._call(name, *args)
