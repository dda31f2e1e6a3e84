"""AgentService: THE owner of license state on a POS computer. Everything else observes it.

It loads the durable cache, verifies the cached token against the trusted keys, computes the status with
the pure `agent.state.compute_status` on the `TrustedClock`, and publishes every change to subscribers
(the local API's pre-serialised answer, the tray). It runs the flows against the server through a
`CloudTransport`:

- trial (offline first run: a 3-day provisional trial; the server's first-seen date wins at first sync),
- buy (create Checkout, open it with the injectable `opener`, poll, activate with the `checkout_id`),
- activate with an emailed code, refresh (the scheduled sync, with key-set updates), deactivate,
- revocation (a signed `revoked` token from refresh), billing portal, terminals.

Network calls never run under the state lock, so `status()` always answers from memory at once.
"""

from __future__ import annotations

import logging
import socket
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import fingerprint, messages, offline, store
from agent import language as agent_language
from agent.anchors import load_trusted_keys
from agent.cache import SealedCache, check_fresh
from agent.clock import Clock, SystemClock, TrustedClock
from agent.config import AgentSettings
from agent.errors import Error, InvalidInput, KeySetRejected, LicenseFileRefused, ServerRefused, TokenInvalid
from agent.marks import MarkStore
from agent.state import LicenseStatus, StatusInputs, compute_status
from agent.sync import SyncEngine, SyncResult
from agent.transport import CloudTransport, HttpTransport, MachineIdentity
from agent.values import AddTerminal, Checkout, Diagnostics, FingerprintSource, Terminal
from protocol import __version__
from protocol.emails import is_email
from protocol.signatures import new_nonce
from protocol.tokens import Claims, Policy, verify_token
from protocol.trust import TrustedKeys, encode_public_key

log = logging.getLogger(__name__)

# A token just received from the server is "now" by definition; its nbf says nothing about our clock.
_FRESH = datetime(9999, 1, 1, tzinfo=UTC)
# Persist the high-water mark when it has moved this far since it was last saved.
_HW_SAVE_S = 600


def _ts(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp())


def _dt(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


class AgentService:
    """The agent: state owner, sync schedule and flows. Create, `start()`, then observe with
    `status()`/`subscribe()`; `stop()` at exit."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        clock: Clock | None = None,
        transport: CloudTransport | None = None,
        fingerprinter: Callable[[], fingerprint.Fingerprint] = fingerprint.current,
        key_store: store.MachineKeyStore | None = None,
        opener: Callable[[str], Any] = webbrowser.open,
        terminal_name: str | None = None,
        rng: Any = None,
        probe_in_background: bool = False,
        marks: MarkStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.transport = transport or HttpTransport(settings.server_url, self.clock)
        self._fingerprinter = fingerprinter
        # The probes can take seconds (PowerShell/CIM on Windows). In the background, the first status
        # uses the hashes cached at the last run, so the POS gets its answer at once.
        self._probe_in_background = probe_in_background
        self._fp_lock = threading.Lock()
        # A probe that failed is unknown: the license is kept and the probes run again, with backoff.
        self._reprobe = fingerprint.Reprobe(self._reprobe_once)
        self._clone_suspected = False
        self.opener = opener
        self.key_store = key_store or store.MachineKeyStore(settings.data_dir)
        # state.json sealed under the machine key, with marks outside the data dir (agent.cache).
        self.cache = SealedCache(settings.data_dir, self.key_store, marks)
        self.state_store = self.cache.state_store
        self._lock = threading.RLock()
        self._publish_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._subscribers: list[Callable[[LicenseStatus], None]] = []
        self._generation = 0  # bumped by every local state change; a sync started before one is dropped
        self._data: dict[str, Any] = {}
        self._claims: Claims | None = None
        self._token_problem: str | None = None
        self._trusted = TrustedKeys()
        self.trusted_clock = TrustedClock(self.clock)
        self._fingerprint: fingerprint.Fingerprint | None = None
        self._status: LicenseStatus | None = None
        self._hw_saved: datetime | None = None
        self.load_status = store.LoadStatus.MISSING
        self._default_terminal = terminal_name or socket.gethostname() or "POS"
        self._env_language = agent_language.from_env()
        self._system_language = agent_language.system_language()
        self.engine = SyncEngine(self.clock, self._sync_once, policy=self._policy, rng=rng,
                                 on_tick=self.refresh_status, on_result=self._on_sync_result)
        self.load()

    # -- lifecycle -------------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)read the cache and trusted keys and recompute the status. A damaged cache means "re-sync"."""
        loaded = self.cache.load()
        self.load_status = store.LoadStatus.RESYNC_NEEDED if loaded.dropped else loaded.status
        if loaded.resync_needed:
            log.warning("state cache was damaged (%s); it will be refreshed at the next sync",
                        self.load_status.value)
        with self._lock:
            self._data = dict(loaded.data)
            self._trusted = load_trusted_keys(self.settings.trusted_keys_path,
                                              self._data.get("keyset_updates") or [])
            hw = _dt(self._data.get("high_water"))
            self._hw_saved = hw
            self.trusted_clock = TrustedClock(self.clock, hw,
                                              rolled_back=bool(self._data.get("clock_rolled_back")))
            self._load_token()
            if "token" in loaded.dropped:
                # A token the seal does not vouch for (edited or restored state): "re-sync needed".
                self._token_problem = "token_invalid"  # noqa: S105 (a reason code, not a secret)
        if self._probe_in_background and self._fingerprint is None:
            threading.Thread(target=self._probe, name="pospal-fingerprint", daemon=True).start()
        self.refresh_status()

    def start(self, scheduler: bool = True) -> AgentService:
        """Start the sync schedule (the first sync runs at once in the background); returns self."""
        if scheduler:
            self.engine.start()
        return self

    def stop(self) -> None:
        """Stop the schedule and persist the high-water mark."""
        self.engine.stop()
        self._reprobe.stop()
        try:
            self._save()
        except Error as exc:
            log.warning("could not save state at exit: %s", exc.message)

    # -- observing -------------------------------------------------------------------------------------

    def status(self) -> LicenseStatus:
        """The current status, from memory."""
        status = self._status
        assert status is not None
        return status

    def proof_material(self) -> tuple[str | None, Ed25519PrivateKey | None]:
        """The current token and the machine key, which sign the local API's challenge answers.

        The key is read from its store once per token (a keyring may be slow); (None, None) without one.
        """
        token = self._data.get("token")
        if not isinstance(token, str):
            return None, None
        cached = getattr(self, "_proof_key", None)
        if cached is None or cached[0] != token:
            cached = self._proof_key = (token, self.key_store.load())
        return token, cached[1]

    def subscribe(self, callback: Callable[[LicenseStatus], None]) -> Callable[[], None]:
        """Call `callback(status)` on every change; returns the unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def refresh_status(self) -> LicenseStatus:
        """Recompute the status (time moves: grace starts, days count down) and publish it if it changed."""
        with self._lock:
            verdict = self.trusted_clock.verdict()
            claims = self._claims
            fp_match = None
            if claims is not None:
                fp_match = fingerprint.match(claims.fp, self._status_hashes()).ok
            inputs = StatusInputs(
                now=verdict.now,
                claims=claims,
                token_problem=self._token_problem,
                provisional_trial_started=_dt(self._data.get("provisional_trial_started")),
                last_sync=_dt(self._data.get("last_sync")),
                fingerprint_match=fp_match,
                clock_rollback=verdict.rollback,
                machine_id=self._data.get("machine_id"),
                terminal_name=self.terminal_name,
                next_sync=self.engine.next_sync,
                agent_version=__version__,
                language=self.language,
            )
            status = compute_status(inputs)
            # The message in every language, so a POS may ask for its own (`?lang=`) at no cost.
            status = replace(status, translations=tuple(
                (lang, status.message if lang == inputs.language
                 else compute_status(replace(inputs, language=lang)).message)
                for lang in messages.LANGUAGES))
            changed = status != self._status
            if changed:
                self._status = status
            else:
                status = self._status  # keep the published object: the publish check below compares identity
            subscribers = list(self._subscribers) if changed else []
            hw = verdict.high_water
            persist_hw = hw is not None and (self._hw_saved is None
                                             or (hw - self._hw_saved).total_seconds() > _HW_SAVE_S)
        if self._fingerprint is not None:
            self._check_clone(self._fingerprint)  # records the OS id under a new machine id at once
        if persist_hw:
            try:
                self._save()
            except Error as exc:
                log.warning("could not persist the clock high-water mark: %s", exc.message)
        if subscribers:
            with self._publish_lock:
                # Two threads may recompute at once; never let the older answer be published last.
                if status is self._status:
                    for callback in subscribers:
                        try:
                            callback(status)
                        except Exception:
                            log.exception("a status subscriber failed")
        return status

    @property
    def terminal_name(self) -> str:
        """This terminal's name (stored, else the host name)."""
        return self._data.get("terminal_name") or self._default_terminal

    @property
    def language(self) -> str:
        """The language of status messages and e-mails ("en" or "el"), by `agent.language.resolve`."""
        return agent_language.resolve(self._env_language, self._data.get("language"), self._system_language)

    def set_language(self, lang: str) -> LicenseStatus:
        """Persist the language chosen in the window (POSPAL_LANGUAGE, when set, still wins)."""
        chosen = agent_language.normalize(lang)
        if chosen is None:
            raise InvalidInput(f"'{lang}' is not a language this agent speaks (en, el).")
        with self._lock:
            self._data["language"] = chosen
        self._save()
        return self.refresh_status()

    # -- flows -----------------------------------------------------------------------------------------

    def sync_now(self) -> LicenseStatus:
        """Sync now (coalesced); raises the sync's error (`Offline`, `ServerRefused`) if it failed."""
        result = self.engine.sync_now()
        if not result.ok and result.error is not None:
            raise result.error
        return self.status()

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
                        log.warning("server unreachable (%s), and this PC's one provisional trial was "
                                    "already used: the trial needs the server", exc.message)
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
        one runs, None once it was used (the marks outside the data dir remember it; see agent.marks)."""
        now = _ts(self.trusted_clock.now())
        assert now is not None
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

    def start_checkout(self, email: str, restaurant_name: str, quantity: int = 1) -> Checkout:
        """Create a Checkout session bound to this machine (the caller opens its URL)."""
        key = self.key_store.load_or_create()
        body = self._machine_body(key)
        body.update(email=email, restaurant_name=restaurant_name.strip() or email, quantity=quantity,
                    locale=self.language)
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
                raise ServerRefused("checkout_expired", messages.text("error.checkout_expired",
                                                                      self.language))
            cancel.wait(poll_s)
        return self.status()

    def buy(self, email: str, restaurant_name: str, cancel: threading.Event, quantity: int = 1,
            poll_s: float = 2.0) -> LicenseStatus:
        """The whole purchase: create Checkout, open it with `opener`, wait for payment, activate."""
        checkout = self.start_checkout(email, restaurant_name, quantity)
        try:
            self.opener(checkout.url)
        except Exception:
            log.warning("could not open a browser; the Checkout URL is %s", checkout.url)
        return self.wait_checkout(checkout.checkout_id, cancel, poll_s)

    def portal_url(self) -> str:
        """A billing-portal URL for this machine's license (machine-signed)."""
        return self.transport.portal(self._identity(), {"locale": self.language})

    def list_terminals(self, email: str | None = None, code: str | None = None) -> list[Terminal]:
        """The license's terminals: machine-signed, or proven by `email` + `code`."""
        identity, body = self._signed_or_code(email, code)
        rows = self.transport.list_terminals(identity, body)
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

    # -- activation by file (agent.offline) -------------------------------------------------------------

    def offline_request(self) -> bytes:
        """The activation request file for this PC: its public key, fingerprint hashes and a signature."""
        key = self.key_store.load_or_create()
        return offline.request_file(key, self._hashes(), terminal_name=self.terminal_name, lang=self.language,
                                    now=self.trusted_clock.now(), known_kids=self._trusted.kids())

    def import_offline_license(self, data: bytes | str) -> LicenseStatus:
        """Make a license file this PC's license, only when every check passes (else nothing changes).

        The file is checked like any token (trusted key, machine, trusted clock) and must be an offline
        license for this machine key. It is not a sync: `last_sync` and the clock anchor stay as they are.
        """
        key = self.key_store.load()
        if key is None:  # no request was ever made here, so no file can be for this PC
            raise LicenseFileRefused("other_machine", messages.text("error.offline_file_other_machine",
                                                                    self.language))
        hashes = self._hashes()
        with self._lock:
            checked = offline.check_license_file(
                data, trusted=self._trusted, now=self.trusted_clock.now(), hashes=hashes,
                public_key=offline.public_key_of(key), held=self._claims, lang=self.language)
            if checked.keyset and self._trusted.apply_keyset_update(checked.keyset):
                self._data["keyset_updates"] = list(self._trusted.accepted_updates)
            self._claims, self._token_problem = checked.claims, None
            # A PC clock that lags the server a little must still accept this token after a restart.
            self.trusted_clock.advance_to(datetime.fromtimestamp(checked.claims.srv, UTC))
            self._data.update(token=checked.token, machine_id=checked.claims.mid)
            self._data.pop("provisional_trial_started", None)
            if checked.claims.terminal and not self._data.get("terminal_name"):
                self._data["terminal_name"] = checked.claims.terminal
            self._changed()
        self._save()
        log.info("offline license imported for %s, valid until %s", checked.claims.mid,
                 datetime.fromtimestamp(checked.claims.exp, UTC).date())
        return self.refresh_status()

    def diagnostics(self) -> Diagnostics:
        """What support needs (hashes only)."""
        fp = self._get_fingerprint()
        result = self.engine.last_result
        return Diagnostics(
            components=tuple(FingerprintSource(c.name, c.ok, c.hash) for c in fp.components),
            last_sync_result=result.describe() if result else None,
            data_dir=str(self.settings.data_dir),
            server_url=self.settings.server_url,
            version=__version__,
            extra={
                "machine_id": self._data.get("machine_id"),
                "trusted_kids": ", ".join(self._trusted.kids()),
                "cache": self.load_status.value,
                "sync_attempts": self.engine.attempts,
                **self._identity_diagnostics(fp),
                **(self.transport.describe_network() if hasattr(self.transport, "describe_network")
                   else {}),
            },
        )

    # -- sync ------------------------------------------------------------------------------------------

    def _sync_once(self) -> bool:
        """One sync: refresh the token, or register a provisional trial; False when there is nothing to do."""
        with self._lock:
            gen = self._generation
            # A machine id without a token (dropped from an unsealed state) refreshes too: the re-sync.
            has_license = bool(self._data.get("machine_id"))
            provisional = self._data.get("provisional_trial_started")
        nonce = new_nonce()
        if has_license:
            identity = replace(self._identity(), nonce=nonce)
            body = {"fingerprint": self._hashes(), "known_kids": self._trusted.kids()}
            self._accept(self.transport.refresh(identity, body), gen, nonce)
            return True
        if provisional is not None:
            key = self.key_store.load_or_create()
            answer = self.transport.start_trial(MachineIdentity(key, nonce=nonce), self._trial_body(key))
            self._accept(answer, gen, nonce)
            return True
        return False

    def _on_sync_result(self, result: SyncResult) -> None:
        self.refresh_status()

    def _policy(self) -> Policy:
        claims = self._claims
        return claims.policy if claims is not None else Policy()

    # -- internals -------------------------------------------------------------------------------------

    def _activate(self, extra: dict[str, Any]) -> LicenseStatus:
        key = self.key_store.load_or_create()
        body = self._machine_body(key)
        body.update(extra)
        gen = self._generation
        nonce = new_nonce()
        answer = self.transport.activate(MachineIdentity(key, nonce=nonce), body)
        self._accept(answer, gen, nonce, force=True)
        return self.status()

    def _accept(self, answer: dict[str, Any], gen: int, nonce: str, force: bool = False) -> None:
        """Take a token (and key-set update) from the server: verify, anchor the clock, persist, publish.

        The token must answer the request just sent (its `rn` is that request's `nonce`) and be no older
        than the newest token seen (`agent.cache.check_fresh`): an old genuine token served by anyone is
        refused and logged, and the trusted clock never moves back to its time.
        """
        keyset = answer.get("keyset")
        with self._lock:
            if keyset:
                try:
                    new = self._trusted.apply_keyset_update(keyset)
                    if new:
                        log.info("trusting new signing keys %s", ", ".join(new))
                        self._data["keyset_updates"] = list(self._trusted.accepted_updates)
                except KeySetRejected as exc:
                    log.warning("ignored a key-set update: %s", exc.message)
            token = answer.get("token")
            if not isinstance(token, str):
                raise TokenInvalid("format", "The server sent no license token.")
            claims = verify_token(token, self._trusted, _FRESH)
            try:
                check_fresh(claims, nonce, self._data.get("token_iat"))
            except TokenInvalid as exc:
                log.warning("refused a token from the server (%s, issued %s): %s", exc.reason,
                            datetime.fromtimestamp(claims.iat, UTC).isoformat(), exc.message)
                raise
            if not force and gen != self._generation:
                log.info("dropping a sync answer: the license changed while it was in flight")
                return
            self._claims = claims
            self._token_problem = None
            self.trusted_clock.anchor(datetime.fromtimestamp(claims.srv, UTC))
            newest = max(claims.iat, self._data.get("token_iat") or 0)
            self._data.update(token=token, machine_id=answer.get("machine_id") or claims.mid,
                              last_sync=claims.srv, token_iat=newest)
            self._data.pop("provisional_trial_started", None)
            if claims.terminal and not self._data.get("terminal_name"):
                self._data["terminal_name"] = claims.terminal
            self._changed()
        self._save()
        if force:
            self.engine.schedule_in(self.engine.interval_s())
        self.refresh_status()

    def _load_token(self) -> None:
        token = self._data.get("token")
        self._claims, self._token_problem = None, None
        if not token:
            return
        try:
            self._claims = verify_token(token, self._trusted, self.trusted_clock.now())
            # Older than a token this PC already had: a state file put back from a copy.
            check_fresh(self._claims, None, self._data.get("token_iat"))
        except TokenInvalid as exc:
            log.warning("cached license token rejected: %s", exc.reason)
            self._claims = None
            self._token_problem = "token_invalid"  # noqa: S105 (a reason code, not a secret)

    def _forget_license(self) -> None:
        with self._lock:
            for key in ("token", "machine_id", "last_sync", "provisional_trial_started", "checkout"):
                self._data.pop(key, None)
            self._claims, self._token_problem = None, None
            self._changed()
        self._save()
        self.refresh_status()

    def _changed(self) -> None:
        self._generation += 1

    def _save(self) -> None:
        # One writer at a time: two interleaved atomic writes would race on the .bak rename.
        with self._save_lock:
            with self._lock:
                hw = self.trusted_clock.high_water
                if hw is not None:
                    self._data["high_water"] = _ts(hw)
                self._data["clock_rolled_back"] = self.trusted_clock.rolled_back
                if self._claims is not None:  # every way a token arrives raises the newest-token mark
                    self._data["token_iat"] = max(self._claims.iat, self._data.get("token_iat") or 0)
                data = dict(self._data)
                self._hw_saved = hw
            self.cache.save(data)

    def _get_fingerprint(self) -> fingerprint.Fingerprint:
        """The probed fingerprint (probing now if nobody has yet; what goes to the server)."""
        probed = False
        with self._fp_lock:
            if self._fingerprint is None:
                self._fingerprint = self._fingerprinter()
                probed = True
            fp = self._fingerprint
        hashes = fp.hashes()
        if self._data.get("fingerprint") != hashes:
            with self._lock:
                self._data["fingerprint"] = hashes  # hashes only: the cache for the next start
        if probed:
            self._after_probe(fp)
        return fp

    def _after_probe(self, fp: fingerprint.Fingerprint) -> None:
        """Log what could not be read, probe again in the background if needed, and check for a clone."""
        claims = self._claims
        bound = claims.fp if claims is not None else {}
        result = fingerprint.match(bound, fp.hashes())
        if fp.problems():
            log.info("fingerprint: %d of %d sources read; unavailable: %s", fp.working_count(),
                     len(fp.components), ", ".join(f"{k} ({v})" for k, v in fp.problems().items()))
        if bound and not result.decided:
            log.warning("fingerprint: only %d of the %d bound components could be read; the license is "
                        "kept and the sources are probed again in the background", result.compared,
                        len(bound))
        if fingerprint.needs_reprobe(fp, bound):
            self._reprobe.start()
        self._check_clone(fp)

    def _reprobe_once(self) -> bool:
        """One background re-probe; True when nothing is left to retry."""
        with self._fp_lock:
            self._fingerprint = None
        fp = self._get_fingerprint()
        try:
            self._save()
        except Error as exc:
            log.warning("could not cache the fingerprint hashes: %s", exc.message)
        self.refresh_status()
        claims = self._claims
        return not fingerprint.needs_reprobe(fp, claims.fp if claims is not None else None)

    def _check_clone(self, fp: fingerprint.Fingerprint) -> None:
        """A changed OS id (MachineGuid, machine-id) under the same machine key: a cloned disk image, or
        state and key copied to another installation. Reported (log, Diagnostics), never acted on here."""
        anchor = fp.components[0] if fp.components else None
        with self._lock:
            mid = self._data.get("machine_id")
            if anchor is None or not anchor.ok or not mid:
                return
            seen = self._data.get("key_anchor")
            if not isinstance(seen, dict) or seen.get("mid") != mid:
                self._data["key_anchor"] = {"mid": mid, "name": anchor.name, "hash": anchor.hash}
                return
            changed = seen.get("name") == anchor.name and seen.get("hash") != anchor.hash
        if changed and not self._clone_suspected:
            log.warning("%s changed since this PC's machine key was made (same key, same machine id): "
                        "a cloned disk image or copied agent data?", anchor.name)
        self._clone_suspected = changed

    def _identity_diagnostics(self, fp: fingerprint.Fingerprint) -> dict[str, Any]:
        claims = self._claims
        out: dict[str, Any] = {}
        if fp.problems():
            out["fingerprint_unavailable"] = ", ".join(f"{k} ({v})" for k, v in fp.problems().items())
        if claims is not None:
            r = fingerprint.match(claims.fp, fp.hashes())
            verdict = ("same machine" if r.ok else "machine changed") if r.decided else \
                "undecided: too few components readable, license kept"
            out["fingerprint_match"] = f"{r.compared} compared, {r.differ} differ, {r.total} bound: {verdict}"
        if self._reprobe.running:
            out["fingerprint_reprobe"] = f"running (attempt {self._reprobe.attempts})"
        if self._clone_suspected:
            out["clone_suspected"] = "the OS machine id changed under the same machine key"
        return out

    def _hashes(self) -> dict[str, str]:
        return self._get_fingerprint().hashes()

    def _status_hashes(self) -> dict[str, str]:
        """Hashes for the status: the last run's cached ones while a background probe is still running."""
        cached = self._data.get("fingerprint")
        if self._fingerprint is None and self._probe_in_background and isinstance(cached, dict):
            return cached
        return self._hashes()

    def _probe(self) -> None:
        before = self._data.get("fingerprint")
        try:
            self._get_fingerprint()
        except Exception:  # the probes skip failing sources themselves; this is a last resort
            log.exception("fingerprint probe failed")
            return
        if self._data.get("fingerprint") != before:
            try:
                self._save()
            except Error as exc:
                log.warning("could not cache the fingerprint hashes: %s", exc.message)
        self.refresh_status()

    def _trial_body(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        body = self._machine_body(key)
        with self._lock:
            provisional = self._data.get("provisional_trial_started")
            email = self._data.get("trial_email")
        if provisional is not None:
            body["provisional_started_at"] = provisional
        if email:
            body["email"] = email
        body["locale"] = self.language
        return body

    def _machine_body(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        return {
            "fingerprint": self._hashes(),
            "machine_public_key": encode_public_key(key.public_key()),
            "terminal_name": self.terminal_name,
        }

    def _identity(self) -> MachineIdentity:
        machine_id = self._data.get("machine_id")
        key = self.key_store.load()
        if not machine_id or key is None:
            raise ServerRefused("not_activated", messages.text("error.not_activated", self.language))
        return MachineIdentity(key, machine_id)

    def _signed_or_code(self, email: str | None, code: str | None) -> tuple[MachineIdentity | None, dict]:
        if email and code:
            return None, {"email": email, "code": code}
        return self._identity(), {}

