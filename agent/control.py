"""AgentControl: the one interface ui/ (and the CLI) use to drive the agent.

Two implementations share the Protocol:

- `InProcessControl` wraps an `AgentService` living in the same process (the tray app's default).
- `agent.localapi.remote.HttpControl` talks to an agent running as a separate process, over the local API with
  the bearer token.

Every method blocks; the UI calls them from a worker thread. `status()` answers from memory and never waits
on the network. Errors come from `agent.errors` (`ServerRefused`, `Offline`, ...), each carrying a message
the UI can show as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.selfupdate.updatestate import UpdateStatus  # noqa: F401

# Re-exported: ui/ and the CLI take the value types and the e-mail rule from here.
from agent.values import (  # noqa: F401
    AddTerminal,
    Checkout,
    Diagnostics,
    FingerprintSource,
    StatusCallback,
    Terminal,
)
from pospal_protocol.emails import is_email  # noqa: F401

if TYPE_CHECKING:
    from agent.core.service import AgentService
    from agent.core.state import LicenseStatus
    from agent.selfupdate.updatestate import UpdateDesk

log = logging.getLogger(__name__)


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

    def start_checkout(
        self, email: str, restaurant_name: str, quantity: int = 1, new_subscription: bool = False
    ) -> Checkout:
        """Create a Checkout session for this machine; the caller opens `Checkout.url`. An e-mail that
        already subscribes is refused `subscription_exists` unless `new_subscription` asks for a second."""
        ...

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Poll until the checkout completes, then activate; returns early when `cancel` is set."""
        ...

    def portal_url(self) -> str:
        """A billing-portal URL for this machine's license."""
        ...

    def pause_subscription(self, resumes_at: datetime | None = None) -> LicenseStatus:
        """Pause the subscription for the season until `resumes_at` (None: until resumed); the owner's."""
        ...

    def resume_subscription(self) -> LicenseStatus:
        """Resume the paused subscription now; the owner's."""
        ...

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals (machine-signed, or proven by email + code from another PC)."""
        ...

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """Free a seat by removing another terminal."""
        ...

    def rename_terminal(
        self, name: str, machine_id: str | None = None, email: str | None = None, code: str | None = None
    ) -> list[Terminal]:
        """Rename this PC (no `machine_id`) or, as the owner, another terminal; returns the terminals."""
        ...

    def deactivate(self) -> LicenseStatus:
        """Deactivate this PC, freeing its seat."""
        ...

    def diagnostics(self) -> Diagnostics:
        """Fingerprint sources, last sync result, data dir, server URL and version."""
        ...

    def language(self) -> str:
        """The agent's language ("en" or "el"): what the POS's `message` and the owner's e-mails use."""
        ...

    def set_language(self, lang: str) -> LicenseStatus:
        """Persist the language chosen in the window, so the POS and e-mails follow it."""
        ...

    def offline_request(self) -> bytes:
        """The activation request file for this PC (activation by file)."""
        ...

    def import_offline_license(self, data: bytes) -> LicenseStatus:
        """Import a license file from the server; refused (`LicenseFileRefused`) with nothing changed."""
        ...

    def offline_deactivation(self) -> bytes:
        """Give the license file up: forget it, and return the deactivation file that frees its seat."""
        ...

    # Signed updates (agent.selfupdate.updatestate): they never block licensing, so a failed check is an
    # outcome in the answer (`check_outcome == "failed"`), not an exception.
    def update_status(self) -> UpdateStatus:
        """The running version, a staged one, the last check and the launcher's last swap or rollback."""
        ...

    def check_updates(self) -> UpdateStatus:
        """Check for an update now (staging what is offered; it swaps in at the next idle moment)."""
        ...

    # The owner's actions (issue 13): billing, removing another terminal and choosing the terminals that
    # stay answer ServerRefused("owner_proof_required") until the owner proved their e-mail on this PC
    # (request_code(email, "owner"), then prove_owner); the proof lasts 15 minutes.
    def prove_owner(self, email: str, code: str) -> None:
        """Prove the owner's e-mail on this PC with the emailed code (spent)."""
        ...

    def add_terminal(
        self, email: str, confirm: bool = False, expected_quantity: int | None = None
    ) -> AddTerminal:
        """Add this PC to the owner's subscription: the price, then (`confirm`) quantity +1 and activation."""
        ...

    def keep_terminals(self, machine_ids: list[str]) -> list[Terminal]:
        """The owner's choice of the terminals that keep their seats; returns the new list."""
        ...


class InProcessControl:
    """AgentControl over an `AgentService` in the same process: each call goes straight to the service."""

    def __init__(self, service: AgentService, updates: UpdateDesk | None = None) -> None:
        self._service = service
        # The running agent's updates (`agent.selfupdate.launched`); None: this agent does not update itself.
        self._updates = updates

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

    def start_checkout(
        self, email: str, restaurant_name: str, quantity: int = 1, new_subscription: bool = False
    ) -> Checkout:
        """Create a Checkout session."""
        return self._service.start_checkout(email, restaurant_name, quantity, new_subscription)

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Wait for the checkout, then activate."""
        return self._service.wait_checkout(checkout_id, cancel, poll_s)

    def portal_url(self) -> str:
        """Billing portal URL."""
        return self._service.portal_url()

    def pause_subscription(self, resumes_at: datetime | None = None) -> LicenseStatus:
        """Pause for the season."""
        return self._service.pause_subscription(resumes_at)

    def resume_subscription(self) -> LicenseStatus:
        """Resume now."""
        return self._service.resume_subscription()

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals."""
        return self._service.list_terminals(email, code)

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """Remove a terminal."""
        self._service.remove_terminal(machine_id, email, code)

    def rename_terminal(
        self, name: str, machine_id: str | None = None, email: str | None = None, code: str | None = None
    ) -> list[Terminal]:
        """Rename a terminal."""
        return self._service.rename_terminal(name, machine_id, email, code)

    def deactivate(self) -> LicenseStatus:
        """Deactivate this PC."""
        return self._service.deactivate()

    def diagnostics(self) -> Diagnostics:
        """Diagnostics from the service."""
        return self._service.diagnostics()

    def prove_owner(self, email: str, code: str) -> None:
        """Prove the owner's e-mail on this PC."""
        self._service.prove_owner(email, code)

    def add_terminal(
        self, email: str, confirm: bool = False, expected_quantity: int | None = None
    ) -> AddTerminal:
        """Add this PC to the owner's subscription."""
        return self._service.add_terminal(email, confirm, expected_quantity)

    def keep_terminals(self, machine_ids: list[str]) -> list[Terminal]:
        """Choose the terminals that keep their seats."""
        return self._service.keep_terminals(machine_ids)

    def language(self) -> str:
        """The service's language."""
        return self._service.language

    def set_language(self, lang: str) -> LicenseStatus:
        """Persist the window's language choice."""
        return self._service.set_language(lang)

    def offline_request(self) -> bytes:
        """The activation request file."""
        return self._service.offline_request()

    def import_offline_license(self, data: bytes) -> LicenseStatus:
        """Import a license file."""
        return self._service.import_offline_license(data)

    def offline_deactivation(self) -> bytes:
        """Give the license file up; the deactivation file."""
        return self._service.offline_deactivation()

    def update_status(self) -> UpdateStatus:
        """The update state (`enabled=False` when this agent does not update itself)."""
        from agent.selfupdate import updatestate

        return self._updates.status() if self._updates is not None else updatestate.off()

    def check_updates(self) -> UpdateStatus:
        """Check for an update now."""
        from agent.selfupdate import updatestate

        return self._updates.check_now() if self._updates is not None else updatestate.off()
