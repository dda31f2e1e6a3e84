"""AgentService: THE owner of license state on a POS computer. Everything else observes it.

It loads the durable cache, verifies the cached token against the trusted keys, computes the status with
the pure `agent.core.state.compute_status` on the `TrustedClock`, and publishes every change to subscribers
(the local API's pre-serialised answer, the tray). This module keeps that state: load and save, status,
subscribe, the language, the scheduled sync (refresh, with key-set updates; revocation arrives as a signed
`revoked` token) and `_accept`, the one way a token from the server becomes the license.

The rest of the service lives in two mixins that `AgentService` inherits, so its public methods stay on
one object: `agent.core.flows.FlowsMixin` (trial, codes, Checkout, activation, portal, terminals, the owner's
proof, deactivation, activation by file) and `agent.core.identity.IdentityMixin` (fingerprint, re-probe, clone
check, machine-signed bodies).

Network calls never run under the state lock, so `status()` always answers from memory at once.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from agent import language as agent_language
from agent import messages
from agent.cloud.sync import SyncEngine, SyncResult
from agent.cloud.transport import CloudTransport, HttpTransport, MachineIdentity
from agent.config import AgentSettings
from agent.core.anchors import load_trusted_keys
from agent.core.clock import Clock, ClockVerdict, SystemClock, TrustedClock
from agent.core.flows import FlowsMixin
from agent.core.identity import IdentityMixin
from agent.core.state import LicenseStatus, StatusInputs, compute_status
from agent.errors import Error, InvalidInput, KeySetRejected, TokenInvalid
from agent.vault import store
from agent.vault.cache import SealedCache, check_fresh
from agent.vault.marks import MarkStore
from pospal_protocol import __version__, fingerprint
from pospal_protocol.signatures import new_nonce
from pospal_protocol.tokens import Claims, Policy, verify_token
from pospal_protocol.trust import TrustedKeys

log = logging.getLogger(__name__)

KEYSET_HEADER = "X-POSPal-Keyset"

# A token just received from the server is "now" by definition; its nbf says nothing about our clock.
_FRESH = datetime(9999, 1, 1, tzinfo=UTC)
# Persist the high-water mark when it has moved this far since it was last saved.
_HW_SAVE_S = 600


def _ts(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp())


def _dt(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int | float) else None


def _with_translations(status: LicenseStatus, inputs: StatusInputs) -> LicenseStatus:
    """`status` with its message in every language, so a POS may ask for its own (`?lang=`) at no cost."""
    return replace(
        status,
        translations=tuple(
            (
                lang,
                status.message
                if lang == inputs.language
                else compute_status(replace(inputs, language=lang)).message,
            )
            for lang in messages.LANGUAGES
        ),
    )


class AgentService(FlowsMixin, IdentityMixin):
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
        terminal_name: str | None = None,
        rng: Any = None,
        probe_in_background: bool = False,
        marks: MarkStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.transport = transport or HttpTransport(settings.server_url, self.clock)
        self._init_identity(fingerprinter, probe_in_background)
        self.key_store = key_store or store.MachineKeyStore(settings.data_dir)
        # state.json sealed under the machine key, with marks outside the data dir (agent.vault.cache).
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
        self._status: LicenseStatus | None = None
        self._hw_saved: datetime | None = None
        self.load_status = store.LoadStatus.MISSING
        self._explicit_terminal = terminal_name
        self._host_name = socket.gethostname() or "POS"
        self._key_tag: str | None = None  # set once the machine key is used (agent.core.identity.key_tag)
        self._env_language = agent_language.from_env()
        self._system_language = agent_language.system_language()
        self.engine = SyncEngine(
            self.clock,
            self._sync_once,
            policy=self._policy,
            rng=rng,
            on_tick=self.refresh_status,
            on_result=self._on_sync_result,
        )
        self.load()

    # -- lifecycle -------------------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)read the cache and trusted keys and recompute the status. A damaged cache means "re-sync"."""
        loaded = self.cache.load()
        self.load_status = store.LoadStatus.RESYNC_NEEDED if loaded.dropped else loaded.status
        if loaded.resync_needed:
            log.warning(
                "state cache was damaged (%s); it will be refreshed at the next sync", self.load_status.value
            )
        with self._lock:
            self._data = dict(loaded.data)
            self._trusted = load_trusted_keys(
                self.settings.trusted_keys_path, self._data.get("keyset_updates") or []
            )
            hw = _dt(self._data.get("high_water"))
            self._hw_saved = hw
            self.trusted_clock = TrustedClock(
                self.clock, hw, rolled_back=bool(self._data.get("clock_rolled_back"))
            )
            self._load_token()
            if "token" in loaded.dropped:
                # A token the seal does not vouch for (edited or restored state): "re-sync needed".
                self._token_problem = "token_invalid"  # noqa: S105 (a reason code, not a secret)
        if self._probe_in_background and self._fingerprint is None:
            threading.Thread(target=self._probe, name="pospal-fingerprint", daemon=True).start()
        self._report_keyset()
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
            status = _with_translations(compute_status(inputs := self._status_inputs(verdict)), inputs)
            previous = self._status
            changed = status != previous
            if changed or previous is None:
                self._status = status
            else:
                status = previous  # keep the published object: the publish check below compares identity
            subscribers = list(self._subscribers) if changed else []
            hw = verdict.high_water
            persist_hw = hw is not None and (
                self._hw_saved is None or (hw - self._hw_saved).total_seconds() > _HW_SAVE_S
            )
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

    def _status_inputs(self, verdict: ClockVerdict) -> StatusInputs:
        """What the state function needs, from the cache, the token and the trusted clock (under the lock)."""
        claims = self._claims
        fp_match = None
        if claims is not None:
            fp_match = fingerprint.match(claims.fp, self._status_hashes()).ok
        return StatusInputs(
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
            old_app_notice=self._data.get("pospal1_notice"),
        )

    @property
    def terminal_name(self) -> str:
        """This terminal's name: the stored one (the server's, or set here before activation), else the
        host name with a tag of this PC's machine key once known (`vm-3F2A`), so two tills made from one
        image, both called `vm`, still differ in the owner's list."""
        stored = self._data.get("terminal_name") or self._explicit_terminal
        if stored:
            return str(stored)
        return f"{self._host_name}-{self._key_tag}" if self._key_tag else self._host_name

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

    # -- sync ------------------------------------------------------------------------------------------

    def sync_now(self) -> LicenseStatus:
        """Sync now (coalesced); raises the sync's error (`Offline`, `ServerRefused`) if it failed."""
        result = self.engine.sync_now()
        if not result.ok and result.error is not None:
            raise result.error
        return self.status()

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

    def adopt_keyset(self, doc: str) -> list[str]:
        """Apply a key-set document from the update metadata (`agent.selfupdate.updater`); returns the new
        kids.

        Only the offline authority's newest document counts (`pospal_protocol.trust`); anything else is a log
        line. A newer one is kept in the sealed state and the held token re-checked, so a token signed by
        a key it revokes stops licensing now (the next sync brings one from a trusted key).
        """
        with self._lock:
            before = self._trusted.keyset_version
            try:
                new = self._trusted.apply_keyset_update(doc)
            except KeySetRejected as exc:
                log.warning("ignored a key-set update: %s", exc.message)
                return []
            if self._trusted.keyset_version == before:
                return []
            self._data["keyset_updates"] = list(self._trusted.accepted_updates)
            log.info(
                "trusted key set is now version %d (new %s; revoked %s)",
                self._trusted.keyset_version,
                ", ".join(new) or "none",
                ", ".join(sorted(self._trusted.revoked)) or "none",
            )
            if self._claims is not None and self._claims.kid not in self._trusted:
                # The token held was signed by a key this document revokes: it licenses nothing now.
                log.warning("the license token held is signed by a revoked key; it re-syncs")
                self._claims = None
                self._token_problem = "token_invalid"  # noqa: S105 (a reason code, not a secret)
            self._changed()
        self._save()
        self._report_keyset()
        self.refresh_status()
        return new

    def keyset_version(self) -> int:
        """The version of the authority's key-set document this agent holds (0: none yet)."""
        return self._trusted.keyset_version

    def _report_keyset(self) -> None:
        """Say which key set this agent trusts on its requests (`X-POSPal-Keyset`, `server/fleet.py`)."""
        session = getattr(self.transport, "session", None)  # HttpTransport; test fakes have none
        if session is not None and self._trusted.keyset_version:
            session.headers[KEYSET_HEADER] = str(self._trusted.keyset_version)

    def _on_sync_result(self, result: SyncResult) -> None:
        self.refresh_status()

    def _policy(self) -> Policy:
        claims = self._claims
        return claims.policy if claims is not None else Policy()

    # -- internals -------------------------------------------------------------------------------------

    def _accept(self, answer: dict[str, Any], gen: int, nonce: str, force: bool = False) -> None:
        """Take a token (and key-set update) from the server: verify, anchor the clock, persist, publish.

        The token must answer the request just sent (its `rn` is that request's `nonce`) and be no older
        than the newest token seen (`agent.vault.cache.check_fresh`): an old genuine token served by anyone is
        refused and logged, and the trusted clock never moves back to its time.
        """
        keyset = answer.get("keyset")
        with self._lock:
            if keyset:
                try:
                    held = self._trusted.keyset_version
                    new = self._trusted.apply_keyset_update(keyset)
                    if self._trusted.keyset_version != held:
                        log.info("trusting new signing keys %s", ", ".join(new) or "(none)")
                        self._data["keyset_updates"] = list(self._trusted.accepted_updates)
                        self._report_keyset()
                except KeySetRejected as exc:
                    log.warning("ignored a key-set update: %s", exc.message)
            token = answer.get("token")
            if not isinstance(token, str):
                raise TokenInvalid("format", "The server sent no license token.")
            claims = verify_token(token, self._trusted, _FRESH)
            try:
                check_fresh(claims, nonce, self._data.get("token_iat"))
            except TokenInvalid as exc:
                log.warning(
                    "refused a token from the server (%s, issued %s): %s",
                    exc.reason,
                    datetime.fromtimestamp(claims.iat, UTC).isoformat(),
                    exc.message,
                )
                raise
            if not force and gen != self._generation:
                log.info("dropping a sync answer: the license changed while it was in flight")
                return
            self._claims = claims
            self._token_problem = None
            self.trusted_clock.anchor(datetime.fromtimestamp(claims.srv, UTC))
            newest = max(claims.iat, self._data.get("token_iat") or 0)
            self._data.update(
                token=token,
                machine_id=answer.get("machine_id") or claims.mid,
                last_sync=claims.srv,
                token_iat=newest,
            )
            self._data.pop("provisional_trial_started", None)
            if claims.terminal:
                # The server's name wins: the owner may have renamed this till from another PC.
                self._data["terminal_name"] = claims.terminal
            self._changed()
        self._save()
        # A token from the server is a sync: the next one is a whole interval away, and the status published
        # just below says so (a trial or a purchase showed the old time; inside a sync the engine sets it).
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
