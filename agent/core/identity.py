"""This machine's identity, as part of `AgentService`: fingerprint, clone check, machine-signed bodies.

`IdentityMixin` probes the fingerprint (at once, or in the background with the last run's cached hashes
meanwhile), probes again with backoff while sources are unreadable (`fingerprint.Reprobe`), reports a
changed OS id under the same machine key (a cloned image), says all of that in Diagnostics, and builds
what identifies this machine: the request bodies with the public key and fingerprint hashes, the
`MachineIdentity` that signs them, and the key that signs the local API's challenge answers.

It is a mixin, not a separate object, because these methods share the service's one lock and state dict,
and the flows and the sync call them on the service. It uses these attributes of `AgentService`:
`_data`, `_lock`, `_claims`, `_trusted`, `key_store`, `settings`, `engine`, `transport`, `load_status`,
`terminal_name`, `language`, `_save()`, `refresh_status()`; its own state is set up by `_init_identity()`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import messages
from agent.cloud.sync import SyncEngine
from agent.cloud.transport import CloudTransport, MachineIdentity
from agent.config import AgentSettings
from agent.errors import Error, ServerRefused
from agent.values import Diagnostics, FingerprintSource
from agent.vault import store
from pospal_protocol import __version__, fingerprint
from pospal_protocol.trust import TrustedKeys, encode_public_key

if TYPE_CHECKING:
    from agent.core.state import LicenseStatus
    from pospal_protocol.tokens import Claims

log = logging.getLogger(__name__)


def key_tag(key: Ed25519PrivateKey) -> str:
    """Four hex digits of the machine public key's SHA-256: the default terminal name's suffix."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:4].upper()


class IdentityMixin:
    """Part of `AgentService`: the fingerprint, the clone check, Diagnostics and the machine-signed bodies."""

    _data: dict[str, Any]
    _lock: threading.RLock
    _claims: Claims | None
    _trusted: TrustedKeys
    key_store: store.MachineKeyStore
    settings: AgentSettings
    engine: SyncEngine
    transport: CloudTransport
    load_status: store.LoadStatus
    _key_tag: str | None

    if TYPE_CHECKING:

        @property
        def terminal_name(self) -> str: ...

        @property
        def language(self) -> str: ...

        def _save(self) -> None: ...

        def refresh_status(self) -> LicenseStatus: ...

    def _init_identity(
        self, fingerprinter: Callable[[], fingerprint.Fingerprint], probe_in_background: bool
    ) -> None:
        self._fingerprinter = fingerprinter
        # The probes can take seconds (PowerShell/CIM on Windows). In the background, the first status
        # uses the hashes cached at the last run, so the POS gets its answer at once.
        self._probe_in_background = probe_in_background
        self._fp_lock = threading.Lock()
        self._fingerprint: fingerprint.Fingerprint | None = None
        # A probe that failed is unknown: the license is kept and the probes run again, with backoff.
        self._reprobe = fingerprint.Reprobe(self._reprobe_once)
        self._clone_suspected = False

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

    def keyset_chain(self) -> list[str]:
        """The key-set updates this agent accepted (signed documents), which its challenged answers carry."""
        updates = self._data.get("keyset_updates")
        return [u for u in updates if isinstance(u, str)] if isinstance(updates, list) else []

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
                # agent/vault/pospal1.py: why the old POSPal app's license was not moved here, if it was not.
                "old_app_move": self._data.get("pospal1_notice"),
                **self._identity_diagnostics(fp),
                **(self.transport.describe_network() if hasattr(self.transport, "describe_network") else {}),
            },
        )

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
            log.info(
                "fingerprint: %d of %d sources read; unavailable: %s",
                fp.working_count(),
                len(fp.components),
                ", ".join(f"{k} ({v})" for k, v in fp.problems().items()),
            )
        if bound and not result.decided:
            log.warning(
                "fingerprint: only %d of the %d bound components could be read; the license is "
                "kept and the sources are probed again in the background",
                result.compared,
                len(bound),
            )
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
            log.warning(
                "%s changed since this PC's machine key was made (same key, same machine id): "
                "a cloned disk image or copied agent data?",
                anchor.name,
            )
        self._clone_suspected = changed

    def _identity_diagnostics(self, fp: fingerprint.Fingerprint) -> dict[str, Any]:
        claims = self._claims
        out: dict[str, Any] = {}
        if fp.problems():
            out["fingerprint_unavailable"] = ", ".join(f"{k} ({v})" for k, v in fp.problems().items())
        if claims is not None:
            r = fingerprint.match(claims.fp, fp.hashes())
            verdict = (
                ("same machine" if r.ok else "machine changed")
                if r.decided
                else "undecided: too few components readable, license kept"
            )
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

    def _machine_body(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        # Known from here on: the default name (host name and this tag) tells two tills of one image apart.
        self._key_tag = key_tag(key)
        return {
            "fingerprint": self._hashes(),
            "machine_public_key": encode_public_key(key.public_key()),
            "terminal_name": self.terminal_name,
        }

    def _trial_body(self, key: Ed25519PrivateKey) -> dict[str, Any]:
        body = self._machine_body(key)
        with self._lock:
            provisional = self._data.get("provisional_trial_started")
            email = self._data.get("trial_email")
            old_trial = self._data.get(
                "pospal1_hardware_id"
            )  # agent/vault/pospal1.py: an old trial on this PC
        if old_trial:
            body["pospal1_hardware_id"] = old_trial
        if provisional is not None:
            body["provisional_started_at"] = provisional
        if email:
            body["email"] = email
        body["locale"] = self.language
        return body

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
