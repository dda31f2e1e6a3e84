"""The owner's and staff's flows, as part of `AgentService`: trial, codes, Checkout, activation, billing
portal, terminals, the owner's proof, deactivation and activation by file.

Each flow is one request to the server through the `CloudTransport`, signed by this machine's key; a token
in the answer goes through `AgentService._accept` (verified, anchored, persisted, published). Network
calls never run under the state lock.

`FlowsMixin` is a mixin rather than a separate object because every flow ends in the service's state
(`_accept`, `_forget_license`, `refresh_status`) and the public methods stay on `AgentService`, which
`InProcessControl`, the local API and the CLI call. It uses these attributes of `AgentService`:
`_data`, `_lock`, `_claims`, `_token_problem`, `_trusted`, `_generation`, `trusted_clock`, `key_store`,
`transport`, `cache`, `engine`, `terminal_name`, `language`, and the methods `status()`,
`refresh_status()`, `_accept()`, `_save()`, `_changed()`, plus the machine bodies
of `agent.core.identity.IdentityMixin`.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent import messages
from agent.cloud.sync import SyncEngine
from agent.cloud.transport import CloudTransport, MachineIdentity
from agent.core import offline
from agent.core.clock import TrustedClock
from agent.core.identity import key_tag
from agent.errors import Error, InvalidInput, LicenseFileRefused, ServerRefused
from agent.values import AddTerminal, Checkout, Terminal
from agent.vault import store
from agent.vault.cache import SealedCache
from pospal_protocol.emails import is_email
from pospal_protocol.signatures import new_nonce
from pospal_protocol.tokens import Claims, Policy
from pospal_protocol.trust import TrustedKeys, encode_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.core.state import LicenseStatus

log = logging.getLogger(__name__)


class FlowsMixin:
    """Part of `AgentService`: what the owner and the staff do (trial, buy, activate, terminals, ...)."""

    _data: dict[str, Any]
    _lock: threading.RLock
    _claims: Claims | None
    _token_problem: str | None
    _trusted: TrustedKeys
    _generation: int
    _key_tag: str | None
    trusted_clock: TrustedClock
    key_store: store.MachineKeyStore
    transport: CloudTransport
    cache: SealedCache
    engine: SyncEngine

    if TYPE_CHECKING:

        @property
        def terminal_name(self) -> str: ...

        @property
        def language(self) -> str: ...

        def status(self) -> LicenseStatus: ...

        def refresh_status(self) -> LicenseStatus: ...

        def sync_now(self) -> LicenseStatus: ...

        def _accept(self, answer: dict[str, Any], gen: int, nonce: str, force: bool = False) -> None: ...

        def _save(self) -> None: ...

        def _changed(self) -> None: ...

        def _hashes(self) -> dict[str, str]: ...

        def _machine_body(self, key: Ed25519PrivateKey) -> dict[str, Any]: ...

        def _trial_body(self, key: Ed25519PrivateKey) -> dict[str, Any]: ...

        def _identity(self) -> MachineIdentity: ...

        def _signed_or_code(
            self, email: str | None, code: str | None
        ) -> tuple[MachineIdentity | None, dict]: ...

    def start_trial(self, email: str | None = None) -> LicenseStatus:
        """Start (or resume) the trial. Offline on a first run: a provisional trial of up to 3 days.

        `email` (optional) is where the server sends a reminder 3 days before the trial ends; given
        offline, it is kept and sent when the provisional trial is confirmed.
        """
        if email is not None:
            email = email.strip().lower() or None
        if email is not None and not is_email(email):
            raise InvalidInput(f"'{email}' is not an email address.")
        with self._lock:
            if self._claims is not None and self._claims.status != "revoked":
                return self.status()
            if email is not None:
                self._data["trial_email"] = email
                self._changed()
        key = self.key_store.load_or_create()
        body = self._trial_body(key)
        gen = self._generation
        nonce = new_nonce()
        try:
            answer = self.transport.start_trial(MachineIdentity(key, nonce=nonce), body)
        except ServerRefused:
            raise
        except Error as exc:
            with self._lock:
                if self._data.get("provisional_trial_started") is None:
                    start = self._provisional_start()
                    if start is None:
                        log.warning(
                            "server unreachable (%s), and this PC's one provisional trial was "
                            "already used: the trial needs the server",
                            exc.message,
                        )
                        raise
                    log.info("server unreachable (%s): starting a provisional trial", exc.message)
                    self._data["provisional_trial_started"] = start
                    self._changed()
            self._save()
            self.engine.schedule_in(self.engine.backoff_s(1))
            return self.refresh_status()
        self._accept(answer, gen, nonce)
        return self.status()

    def _provisional_start(self) -> int | None:
        """When the provisional trial starts: now on this PC's first one, its recorded start while that
        one runs, None once it was used (the marks outside the data dir remember it; see
        agent.vault.marks)."""
        now = int(self.trusted_clock.now().timestamp())
        marks = self.cache.marks
        used = marks.provisional_trial
        if used is None:
            return None if marks.provisional_seen else now
        return used if used <= now < used + Policy().provisional_trial_s else None

    def request_code(self, email: str, purpose: str) -> None:
        """Ask the server to email a code for `purpose` ("activate", "portal", "terminals")."""
        self.transport.request_code(email, purpose, self.language)

    def activate(self, email: str, code: str) -> LicenseStatus:
        """Activate this PC on the license of `email`, proven by the emailed 6-digit `code`."""
        return self._activate({"email": email, "code": code})

    def _activate(self, extra: dict[str, Any]) -> LicenseStatus:
        key = self.key_store.load_or_create()
        body = self._machine_body(key)
        body.update(extra)
        gen = self._generation
        nonce = new_nonce()
        answer = self.transport.activate(MachineIdentity(key, nonce=nonce), body)
        self._accept(answer, gen, nonce, force=True)
        return self.status()

    def start_checkout(
        self, email: str, restaurant_name: str, quantity: int = 1, new_subscription: bool = False
    ) -> Checkout:
        """Create a Checkout session bound to this machine (the caller opens its URL)."""
        key = self.key_store.load_or_create()
        body = self._machine_body(key)
        body.update(
            email=email,
            restaurant_name=restaurant_name.strip() or email,
            quantity=quantity,
            locale=self.language,
        )
        if new_subscription:
            body["new_subscription"] = True
        answer = self.transport.create_checkout(MachineIdentity(key), body)
        checkout = Checkout(str(answer["checkout_id"]), str(answer["url"]))
        with self._lock:
            self._data["checkout"] = {"id": checkout.checkout_id, "email": email}
        self._save()
        return checkout

    def wait_checkout(self, checkout_id: str, cancel: threading.Event, poll_s: float = 2.0) -> LicenseStatus:
        """Poll the checkout until it completes, then activate with it; returns early when `cancel` is set.

        Raises `ServerRefused("checkout_expired")` when the session expired unpaid. Offline moments while
        polling are waited out.
        """
        while not cancel.is_set():
            try:
                state = self.transport.checkout_status(checkout_id)
            except Error as exc:
                if isinstance(exc, ServerRefused):
                    raise
                state = "open"
            if state == "complete":
                email = (self._data.get("checkout") or {}).get("email")
                body: dict[str, Any] = {"checkout_id": checkout_id}
                if email:
                    body["email"] = email
                status = self._activate(body)
                with self._lock:
                    self._data.pop("checkout", None)
                self._save()
                return status
            if state == "expired":
                raise ServerRefused(
                    "checkout_expired", messages.text("error.checkout_expired", self.language)
                )
            cancel.wait(poll_s)
        return self.status()

    def portal_url(self) -> str:
        """A billing-portal URL for this machine's license (machine-signed)."""
        return self.transport.portal(self._identity(), {"locale": self.language})

    def pause_subscription(self, resumes_at: datetime | None = None) -> LicenseStatus:
        """Pause the subscription for the season until `resumes_at` (None: until resumed); the owner's.

        Machine-signed; the server wants the owner's proof on this PC (`owner_proof_required` until then).
        Every till (this one at once) then shows `licensed_cancelled` / `paused`.
        """
        body: dict[str, Any] = {}
        if resumes_at is not None:
            body["resumes_at"] = resumes_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        self.transport.set_pause(self._identity(), True, body)
        return self._synced_after_owner_change()

    def resume_subscription(self) -> LicenseStatus:
        """Resume a paused subscription now (the owner's); this till is licensed again at once."""
        self.transport.set_pause(self._identity(), False, {})
        return self._synced_after_owner_change()

    def _synced_after_owner_change(self) -> LicenseStatus:
        try:
            return self.sync_now()
        except Error:
            return self.status()  # the change is made; the next scheduled sync (within a minute) shows it

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals: machine-signed, or proven by `email` + `code`."""
        identity, body = self._signed_or_code(email, code)
        rows = self.transport.list_terminals(identity, body)
        return [Terminal.from_dict(r) for r in rows]

    def rename_terminal(
        self, name: str, machine_id: str | None = None, email: str | None = None, code: str | None = None
    ) -> list[Terminal]:
        """Rename this PC (no `machine_id`, or its own), or as the owner another terminal of the license.

        Before activation this PC's name is kept here and sent when it activates. Once activated the
        server renames it (the owner's list, the e-mails and the next token say it; renaming needs the
        server) and this PC keeps its own new name at once. Returns the license's terminals (none before
        activation).
        """
        clean = clean_terminal_name(name)
        own = self._data.get("machine_id")
        target = machine_id or own
        if target is None and not (email and code):
            with self._lock:
                self._data["terminal_name"] = clean
                self._changed()
            self._save()
            self.refresh_status()
            return []
        if target is None:
            raise InvalidInput("Name the terminal to rename (its machine id).")
        identity, body = self._signed_or_code(email, code)
        body.update(machine_id=target, terminal_name=clean)
        rows = self.transport.rename_terminal(identity, body)
        if target == own:
            with self._lock:
                self._data["terminal_name"] = clean
                self._changed()
            self._save()
            self.refresh_status()
        return [Terminal.from_dict(r) for r in rows]

    def remove_terminal(self, machine_id: str, email: str | None = None, code: str | None = None) -> None:
        """Remove a terminal from the license (frees a seat)."""
        identity, body = self._signed_or_code(email, code)
        body["machine_id"] = machine_id
        self.transport.remove_terminal(identity, body)
        if machine_id == self._data.get("machine_id"):
            self._forget_license()

    def prove_owner(self, email: str, code: str) -> None:
        """Prove the owner's e-mail on this PC with the emailed code: owner actions for 15 minutes.

        Signed by this PC's machine key (its public key in the body when it is not activated yet).
        """
        key = self.key_store.load_or_create()
        machine_id = self._data.get("machine_id")
        body: dict[str, Any] = {"email": email.strip().lower(), "code": code}
        if not machine_id:
            body["machine_public_key"] = encode_public_key(key.public_key())
        self.transport.prove_owner(MachineIdentity(key, machine_id), body)

    def add_terminal(
        self, email: str, confirm: bool = False, expected_quantity: int | None = None
    ) -> AddTerminal:
        """Add this PC to the owner's subscription (quantity +1, prorated): the price, then with `confirm`
        the change and this PC's activation. Needs the owner's proof on this PC."""
        key = self.key_store.load_or_create()
        body = self._machine_body(key)
        body.update(email=email.strip().lower(), confirm=confirm)
        if expected_quantity is not None:
            body["expected_quantity"] = expected_quantity
        gen = self._generation
        nonce = new_nonce()
        answer = self.transport.add_terminal(MachineIdentity(key, nonce=nonce), body)
        if confirm and answer.get("token"):
            self._accept(answer, gen, nonce, force=True)
        return AddTerminal.from_dict(answer)

    def keep_terminals(self, machine_ids: list[str]) -> list[Terminal]:
        """The owner chooses which terminals keep their seats; the others beyond the quantity stop."""
        rows = self.transport.keep_terminals(self._identity(), {"machine_ids": list(machine_ids)})
        return [Terminal.from_dict(r) for r in rows]

    def deactivate(self) -> LicenseStatus:
        """Deactivate this PC on the server (freeing its seat), then forget the license locally."""
        identity = self._identity()
        self.transport.deactivate(identity)
        self._forget_license()
        return self.status()

    def offline_request(self) -> bytes:
        """The activation request file for this PC: its public key, fingerprint hashes and a signature."""
        key = self.key_store.load_or_create()
        self._key_tag = key_tag(key)  # the default name tells two tills of one image apart here too
        return offline.request_file(
            key,
            self._hashes(),
            terminal_name=self.terminal_name,
            lang=self.language,
            now=self.trusted_clock.now(),
            known_kids=self._trusted.kids(),
        )

    def offline_deactivation(self) -> bytes:
        """Give this PC's license file up: forget the license, and return the signed deactivation file that
        frees its seat on the server's `/offline` page (else the seat stays taken until the file ends)."""
        key = self.key_store.load()
        claims = self._claims
        if key is None or claims is None:
            raise LicenseFileRefused("invalid", messages.text("error.offline_file_invalid", self.language))
        data = offline.deactivation_file(key, claims, now=self.trusted_clock.now(), lang=self.language)
        with self._lock:
            # The newest-token mark (kept outside the data dir too) moves past the given-up token, so neither
            # a state file put back from a copy nor the same license file imported again licenses this PC.
            self._data["token_iat"] = max(self._data.get("token_iat") or 0, offline.past(claims))
        self._forget_license()
        log.info("offline license of %s given up; deactivation file written", claims.mid)
        return data

    def import_offline_license(self, data: bytes | str) -> LicenseStatus:
        """Make a license file this PC's license, only when every check passes (else nothing changes).

        The file is checked like any token (trusted key, machine, trusted clock) and must be an offline
        license for this machine key. It is not a sync: `last_sync` and the clock anchor stay as they are.
        """
        key = self.key_store.load()
        if key is None:  # no request was ever made here, so no file can be for this PC
            raise LicenseFileRefused(
                "other_machine", messages.text("error.offline_file_other_machine", self.language)
            )
        hashes = self._hashes()
        with self._lock:
            checked = offline.check_license_file(
                data,
                trusted=self._trusted,
                now=self.trusted_clock.now(),
                hashes=hashes,
                public_key=offline.public_key_of(key),
                held=self._claims,
                lang=self.language,
                newest_iat=self._data.get("token_iat"),
            )
            if checked.keyset and self._trusted.apply_chain([checked.keyset]):
                self._data["keyset_updates"] = list(self._trusted.accepted_updates)
            self._claims, self._token_problem = checked.claims, None
            # A PC clock that lags the server a little must still accept this token after a restart.
            self.trusted_clock.advance_to(datetime.fromtimestamp(checked.claims.srv, UTC))
            self._data.update(token=checked.token, machine_id=checked.claims.mid)
            self._data.pop("provisional_trial_started", None)
            if checked.claims.terminal:
                self._data["terminal_name"] = checked.claims.terminal
            self._changed()
        self._save()
        log.info(
            "offline license imported for %s, valid until %s",
            checked.claims.mid,
            datetime.fromtimestamp(checked.claims.exp, UTC).date(),
        )
        return self.refresh_status()

    def _forget_license(self) -> None:
        with self._lock:
            # `pospal1_notice` too: once a license was here, an old app's refusal is old news.
            for key in (
                "token",
                "machine_id",
                "last_sync",
                "provisional_trial_started",
                "checkout",
                "pospal1_notice",
            ):
                self._data.pop(key, None)
            self._claims, self._token_problem = None, None
            self._changed()
        self._save()
        self.refresh_status()


TERMINAL_NAME_MAX = 100


def clean_terminal_name(name: object) -> str:
    """A terminal name as the server takes it: trimmed, 1 to 100 characters, no control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Give the terminal a name.")
    clean = name.strip()
    if len(clean) > TERMINAL_NAME_MAX:
        raise InvalidInput(f"A terminal name has at most {TERMINAL_NAME_MAX} characters.")
    if any(unicodedata.category(ch).startswith("C") for ch in clean):
        raise InvalidInput("A terminal name cannot hold control characters.")
    return clean
