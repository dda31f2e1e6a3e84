"""A small Python client for the agent's local API, for POS apps written in Python.

    from agent.client import AgentClient
    agent = AgentClient()
    agent.wait_ready()                       # at start-up: the agent may start after the POS
    status = agent.verified_license()        # proven by this PC's agent, or an error saying why
    if not status["licensed"]: ...

`license()` is the plain answer (standard library only), which anything listening on the port could give.
`verified_license()` sends a fresh challenge and accepts the answer only when all of this holds:

1. the token verifies against the client's own trusted keys (the bundled, pinned set of a release build;
   tests pass `trusted_keys`), never keys the answer brings;
2. the `proof` is a signature, by the key the token's `cnf.jkt` names, over this challenge and this
   answer (`protocol.proof`): a canned or replayed answer fails here;
3. the token's fingerprint matches this PC (`agent.fingerprint`, probed once per client): a proxy to an
   agent on another PC fails here;
4. by the client's own clock the token's lease has not run out, and what the answer says is no more
   licensed than the token allows.

Otherwise it raises `BadProof`, `OtherMachine` or `LicenseExpired` (all `AnswerRefused`); no agent on the
port raises `AgentUnavailable`, and an agent still starting raises `AgentStarting`. A verified answer is
reused until the token's next state change or `recheck_s` (60 s) passes, whichever is first.

Each thread keeps its own keep-alive connection, so a POS app can poll cheaply from several threads. Every
call has a timeout; an error answer raises `LocalApiError` with the API's `code`.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.errors import (  # noqa: F401 (AnswerRefused is re-exported for POS apps)
    AgentStarting,
    AgentUnavailable,
    AnswerRefused,
    BadProof,
    LicenseExpired,
    LocalApiError,
    OtherMachine,
)

if TYPE_CHECKING:
    from protocol.clock import Clock
    from protocol.tokens import Claims
    from protocol.trust import TrustedKeys

DEFAULT_PORT = 7421
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RECHECK_S = 60.0
# Fields of a challenge answer that are proof, not status.
_PROOF_FIELDS = ("token", "machine_key", "proof")
_NO_NBF_CHECK = datetime(9999, 1, 1, tzinfo=UTC)
# Connections the server may have dropped while idle: these mean "reconnect once", not "agent down".
_STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    http.client.CannotSendRequest,
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
        trusted_keys: TrustedKeys | Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        fingerprinter: Callable[[], Mapping[str, str]] | None = None,
        recheck_s: float = DEFAULT_RECHECK_S,
    ) -> None:
        self.port = port if port is not None else default_port()
        self.host = host
        self.token = token
        self.timeout = timeout
        self.recheck_s = recheck_s
        self._local = threading.local()
        self._trusted_arg = trusted_keys
        self._trusted: TrustedKeys | None = None
        self._clock = clock
        self._fingerprinter = fingerprinter
        self._hashes: dict[str, str] | None = None
        self._claims_cache: tuple[str, Claims] | None = None
        self._verified: _Verified | None = None
        self._verify_lock = threading.Lock()

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

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the agent answers `/v1/health` and is ready to prove its answers.

        Polls with a short backoff (50 ms doubling to 500 ms). Returns the health answer; raises
        `AgentStarting` when an agent answered but was not ready in time, else `AgentUnavailable`.
        """
        # Real time, not the injected clock: this waits for a process, it judges no license.
        deadline = time.monotonic() + timeout
        delay = 0.05
        answered = False
        while True:
            left = deadline - time.monotonic()
            try:
                health = self.request("GET", "/v1/health", timeout=max(0.05, min(self.timeout, left)))
                answered = True
                if health.get("ok") is True and health.get("ready", True) is not False:
                    return health
            except AgentUnavailable:
                pass
            except LocalApiError:
                answered = True  # something answers on the port, but not (yet) a ready agent
            left = deadline - time.monotonic()
            if left <= 0:
                if answered:
                    raise AgentStarting(f"The POSPal License Agent was still starting after {timeout:g} s.")
                raise AgentUnavailable(f"The POSPal License Agent did not start within {timeout:g} s.")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)

    def verified_license(self) -> dict[str, Any]:
        """The license status, proven by this PC's agent (see the module docstring for the checks).

        Raises `BadProof`, `OtherMachine`, `LicenseExpired`, `AgentStarting` or `AgentUnavailable`.
        A verified answer is reused until the token's next state change or `recheck_s` passes.
        """
        clock = self._get_clock()
        cached = self._verified
        if (
            cached is not None
            and clock.monotonic() < cached.recheck_at
            and clock.now().timestamp() < cached.changes_at
        ):
            return dict(cached.status)
        with self._verify_lock:
            from protocol.trust import b64url_encode

            challenge = b64url_encode(secrets.token_bytes(32))
            try:
                answer = self.request("GET", f"/v1/license?challenge={challenge}")
            except AgentUnavailable:
                raise
            except LocalApiError as exc:
                if exc.code == "starting":
                    raise AgentStarting() from exc
                raise
            verified = self._verify(challenge, answer, clock)
            self._verified = verified
            return dict(verified.status)

    def forget_verified(self) -> None:
        """Drop the cached verified answer: the next `verified_license()` asks the agent again."""
        self._verified = None

    def sync(self, token: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """`POST /v1/sync`: sync with the cloud now and return the new status (needs the api-token)."""
        return self.request("POST", "/v1/sync", {}, token=token, timeout=timeout)

    # -- verification ----------------------------------------------------------------------------------

    def _get_clock(self) -> Clock:
        if self._clock is None:
            from protocol.clock import SystemClock

            self._clock = SystemClock()
        return self._clock

    def _trusted_keys(self) -> TrustedKeys:
        if self._trusted is None:
            from protocol.trust import TrustedKeys

            arg = self._trusted_arg
            if arg is None:
                from agent.anchors import bundled_jwks

                # The pinned set this client ships with; nothing from the environment or the answer.
                self._trusted = TrustedKeys.from_jwks(bundled_jwks())
            elif isinstance(arg, TrustedKeys):
                self._trusted = arg
            else:
                self._trusted = TrustedKeys.from_jwks(arg)
        return self._trusted

    def _this_pc(self) -> dict[str, str]:
        """This PC's fingerprint hashes, probed once per client."""
        if self._hashes is None:
            if self._fingerprinter is not None:
                self._hashes = dict(self._fingerprinter())
            else:
                from agent import fingerprint

                self._hashes = fingerprint.current().hashes()
        return self._hashes

    def _claims(self, token: str) -> Claims:
        cached = self._claims_cache
        if cached is not None and cached[0] == token:
            return cached[1]
        from protocol.errors import TokenInvalid
        from protocol.tokens import verify_token

        try:
            # No `nbf` check against this PC's clock: a clock a few minutes slow would refuse every fresh
            # token after a sync, and a token from the future is still genuine. `exp` is checked below.
            claims = verify_token(token, self._trusted_keys(), _NO_NBF_CHECK)
        except TokenInvalid as exc:
            raise BadProof("token", f"The agent's token is not genuine: {exc.message}") from exc
        self._claims_cache = (token, claims)
        return claims

    def _verify(self, challenge: str, answer: dict[str, Any], clock: Clock) -> _Verified:
        from agent import fingerprint
        from agent.state import StatusInputs, compute_status
        from protocol.errors import KeyInvalid
        from protocol.proof import verify_answer
        from protocol.trust import decode_public_key, jwk_thumbprint

        status = {k: v for k, v in answer.items() if k not in _PROOF_FIELDS}
        now = clock.now()
        token = answer.get("token")
        if not isinstance(token, str):
            if answer.get("licensed") is False:
                # Nothing to prove: an agent with no license may say so (a fake one gains nothing).
                return _Verified(status, clock.monotonic(), now.timestamp())
            raise BadProof("no_token", "The answer says licensed but carries no token to prove it.")
        claims = self._claims(token)
        cnf = claims.raw.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if not isinstance(jkt, str):
            raise BadProof("unbound", "The agent's token names no machine key; it gets one at its next sync.")
        try:
            key = decode_public_key(answer.get("machine_key") or "")
        except KeyInvalid as exc:
            raise BadProof("key", "The answer carries no valid machine key.") from exc
        if jwk_thumbprint(key) != jkt:
            raise BadProof("key", "The answer is signed by a key its token does not name.")
        if not verify_answer(key, challenge, answer):
            raise BadProof("proof", "The answer is not signed for this request (forged or replayed).")
        if answer.get("machine_id") not in (None, claims.mid):
            raise BadProof("mismatch", "The answer names another machine than its token.")
        if not fingerprint.match(claims.fp, self._this_pc()).ok:
            raise OtherMachine("fingerprint", "The agent's license belongs to another computer.")
        t = now.timestamp()
        if claims.exp <= t:
            raise LicenseExpired(
                "offline_expired", "The license token has expired: the agent has not synced for too long."
            )
        issued = datetime.fromtimestamp(claims.srv, UTC)
        own = compute_status(
            StatusInputs(
                now=now, claims=claims, last_sync=issued, fingerprint_match=True, machine_id=claims.mid
            )
        )
        if answer.get("licensed") is True and not own.licensed:
            if (
                own.license_state in ("trial_expired", "licensed_cancelled", "licensed_renewal_required")
                or own.reason == "offline_expired"
            ):
                raise LicenseExpired(own.license_state, "The license has run out by this computer's clock.")
            raise BadProof("contradicts", "The answer says licensed but its token does not allow it.")
        return _Verified(status, clock.monotonic() + self.recheck_s, _next_change(claims, t))

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


@dataclass(frozen=True)
class _Verified:
    """A verified answer's status, reused until `recheck_at` (monotonic) or `changes_at` (Unix time)."""

    status: dict[str, Any]
    recheck_at: float
    changes_at: float


def _next_change(claims: Claims, now: float) -> float:
    """The next time the token's own state changes: lease end, trial end, grace or period boundaries."""
    times = (
        claims.exp,
        claims.trial_end,
        claims.payment_grace_end,
        claims.cancel_at,
        claims.period_end,
        claims.srv + claims.policy.grace_s,
    )
    future = [float(t) for t in times if t is not None and t > now]
    return min(future) if future else now


def verify_local_answer(
    challenge: str,
    answer: dict[str, Any],
    *,
    trusted_keys: TrustedKeys | Mapping[str, Any],
    this_pc: Mapping[str, str],
    now: datetime,
) -> dict[str, Any]:
    """The checks of `verified_license()` on one answer already in hand (no network, no cache).

    Returns the status fields, or raises `BadProof`, `OtherMachine` or `LicenseExpired`; the README's
    test vectors are checked with it.
    """
    from protocol.clock import FakeClock

    checker = AgentClient(0, trusted_keys=trusted_keys, clock=FakeClock(now), fingerprinter=lambda: this_pc)
    return dict(checker._verify(challenge, answer, checker._get_clock()).status)


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
