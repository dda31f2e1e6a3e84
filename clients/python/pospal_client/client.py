"""`AgentClient`: a POS app's client of the POSPal License Agent's local API, verifying its answer.

    from pospal_client import AgentClient
    agent = AgentClient()
    agent.wait_ready()                       # at start-up: the agent may start after the POS
    status = agent.verified_license()        # proven by this PC's agent, or an error saying why
    if agent.can_sell(): ...                 # the POS's one question, with the rules below

`license()` is the plain answer, which anything listening on the port could give. `verified_license()`
sends a fresh challenge and accepts the answer only when all of this holds:

1. the token verifies against the client's own trusted keys (`pospal_client.trust`: its roots, plus key-set
   updates chained to them, which the answer may bring and the client persists), never a key the answer
   brings by itself;
2. the `proof` is a signature, by the key the token's `cnf.jkt` names, over this challenge and this
   answer (`pospal_protocol.proof`): a canned, replayed or edited answer fails here;
3. the token's fingerprint proves this PC (`pospal_protocol.fingerprint.proves_same_machine`, hashes probed
once
   per client): a relay to an agent on another PC fails here, also one on another OS, where too few
   components can be compared to decide;
4. by the client's own clock the token's lease has not run out, and what the answer says is no more
   licensed than the token allows (`pospal_protocol.tokens.why_not_licensed`).

Otherwise it raises `BadProof`, `OtherMachine` or `LicenseExpired` (all `AnswerRefused`); no agent on the
port raises `AgentUnavailable`, and an agent still starting raises `AgentStarting`. A verified answer is
reused until the token's next state change or `recheck_s` (60 s) passes, whichever is first.

Every call has one total deadline (`timeout`, 2 s), for connecting, sending and every read; an answer to
a challenge over 256 KiB (any other over 16 MiB) is refused unread. Each thread keeps its own keep-alive
connection and no lock is held across the network, so one stuck call never holds up another thread.
Within that deadline a call is retried transparently (`pospal_client.retry`) when the agent answers
`503 busy` (a flood of connections) or `503 updating` (an update swapping versions), after the
`Retry-After` it asks for, and when a fresh connection is refused or reset while an agent that answered
before swaps versions; a retry that cannot finish before the deadline is not started, and the caller
gets the last error. `503 starting` is not retried: it raises `AgentStarting` at once (rules below).

`can_sell()` never blocks a sale because of the agent for long, and never for ever:

- a proven answer decides (`licensed`);
- an agent that is starting, or not there at all: the last proven answer decides until its own next
  change (its lease end at the latest); with none, and only while this client has never had an answer
  proven, "starting" may sell for `starting_limit_s` (60 s) from the first such answer, so a till is
  not stopped at Windows login, and then no longer (the count never restarts);
- any other error answer counts as no agent;
- a refused answer (forged, relayed, replayed, expired) never sells.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pospal_client import retry, wire
from pospal_client.errors import (
    AgentStarting,
    AgentUnavailable,
    BadProof,
    LicenseExpired,
    LocalApiError,
    OtherMachine,
)
from pospal_client.trust import TrustStore, default_roots, default_trust_file
from pospal_protocol.clock import Clock, SystemClock
from pospal_protocol.errors import KeyInvalid, TokenInvalid
from pospal_protocol.proof import verify_answer
from pospal_protocol.tokens import Claims, verify_token, why_not_licensed
from pospal_protocol.trust import TrustedKeys, b64url_encode, decode_public_key, jwk_thumbprint

DEFAULT_PORT = 7421
DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RECHECK_S = 60.0
DEFAULT_STARTING_LIMIT_S = 60.0
# A challenge answer is a status, a token (at most 16 KiB) and a few key-set updates: 256 KiB is ample.
MAX_ANSWER_BYTES = 256 * 1024
# Any other answer (the tray's terminal lists, say) is capped too, more loosely.
MAX_OTHER_ANSWER_BYTES = 16 * 1024 * 1024
# Fields of a challenge answer that are proof, not status.
_PROOF_FIELDS = ("token", "machine_key", "proof", "keyset_updates")
_NO_NBF_CHECK = datetime(9999, 1, 1, tzinfo=UTC)
_TRUST_FILE_DEFAULT = object()


def default_port() -> int:
    """The agent's port: POSPAL_AGENT_PORT or 7421."""
    try:
        return int(os.environ.get("POSPAL_AGENT_PORT", DEFAULT_PORT))
    except ValueError:
        return DEFAULT_PORT


@dataclass(frozen=True)
class _Verified:
    """A verified answer's status, reused until `recheck_at` (monotonic) or `changes_at` (Unix time)."""

    status: dict[str, Any]
    recheck_at: float
    changes_at: float


class AgentClient:
    """Client of one agent's local API at `127.0.0.1:port`; `token` is needed for POST calls only.

    `trusted_keys` replaces the default roots (see `pospal_client.trust`); `trust_file` is where learned
    key-set updates are kept (default: the user's local data directory; None: memory only).
    `fingerprinter` returns this PC's component hashes (default: `pospal_protocol.fingerprint.current()`).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        host: str = "127.0.0.1",
        trusted_keys: TrustedKeys | Mapping[str, Any] | None = None,
        trust_file: str | os.PathLike[str] | None | object = _TRUST_FILE_DEFAULT,
        clock: Clock | None = None,
        fingerprinter: Callable[[], Mapping[str, str]] | None = None,
        recheck_s: float = DEFAULT_RECHECK_S,
        starting_limit_s: float = DEFAULT_STARTING_LIMIT_S,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.port = port if port is not None else default_port()
        self.host = host
        self.token = token
        self.timeout = timeout
        self.recheck_s = recheck_s
        self.starting_limit_s = starting_limit_s
        self.max_answer_bytes = max_answer_bytes
        self._local = threading.local()
        self._trusted_arg = trusted_keys
        self._trust_file_arg = trust_file
        self._trust: TrustStore | None = None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._fingerprinter = fingerprinter
        self._hashes: dict[str, str] | None = None
        self._claims_cache: tuple[str, Claims] | None = None
        self._verified: _Verified | None = None
        self._last_proven: _Verified | None = None
        self._starting_since: float | None = None
        self._proven_once = False
        # Whether the agent answered this client's last exchange: a refused connection then is a swap.
        self._reached = False
        self._lock = threading.Lock()

    # -- the POS app's calls ---------------------------------------------------------------------------

    def license(self) -> dict[str, Any]:
        """`GET /v1/license`: the current license status, unproven (anything on the port could say it)."""
        return self.request("GET", "/v1/license")

    def health(self) -> dict[str, Any]:
        """`GET /v1/health`: `{"ok": true, "version": ..., "ready": ...}`."""
        return self.request("GET", "/v1/health")

    def is_licensed(self) -> bool:
        """The plain answer's `licensed`, False when no agent answers (old integrations; unproven)."""
        try:
            return bool(self.license().get("licensed"))
        except LocalApiError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the agent answers `/v1/health` and is ready to prove its answers.

        Returns within `timeout` (each poll has its own total deadline inside it), polling with a short
        backoff (50 ms doubling to 500 ms). Returns the health answer; raises `AgentStarting` when an
        agent answered but was not ready in time, else `AgentUnavailable`.
        """
        # Real time, not the injected clock: this waits for a process, it judges no license.
        deadline = time.monotonic() + timeout
        delay = 0.05
        answered = False
        while True:
            left = deadline - time.monotonic()
            if left > 0:
                try:
                    health = self.request("GET", "/v1/health", timeout=min(self.timeout, left))
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
        """
        clock = self._clock
        cached = self._verified
        if cached is not None and _fresh(cached, clock):
            return dict(cached.status)
        challenge = b64url_encode(secrets.token_bytes(32))
        try:
            path = f"/v1/license?challenge={challenge}"
            answer = self.request("GET", path, max_bytes=self.max_answer_bytes)
        except AgentUnavailable:
            raise
        except LocalApiError as exc:
            if exc.code in ("starting", "agent_starting"):
                with self._lock:
                    if self._starting_since is None:
                        self._starting_since = clock.monotonic()
                raise AgentStarting() from exc
            if exc.code == "answer_too_large":
                raise BadProof("too_large", "The answer is larger than any genuine agent's.") from exc
            raise
        verified = self._verify(challenge, answer, clock)
        with self._lock:
            self._verified = verified
            self._last_proven = verified
            self._proven_once = True
        return dict(verified.status)

    def can_sell(self) -> bool:
        """Whether the POS may take an order now (the rules are in the module docstring)."""
        from pospal_client.errors import AnswerRefused

        try:
            return bool(self.verified_license().get("licensed"))
        except AgentStarting:
            proven = self._proven_still()
            if proven is not None:
                return proven
            since = self._starting_since
            if self._proven_once or since is None:
                return False
            return self._clock.monotonic() - since < self.starting_limit_s
        except AnswerRefused:
            return False
        except LocalApiError:
            # No agent, or an error answer (not a proof either way): the last proof, while it holds.
            return bool(self._proven_still())

    def last_proven(self) -> dict[str, Any] | None:
        """The last verified answer while it still holds (until its token's next change), else None."""
        proven = self._last_proven
        if proven is None or self._clock.now().timestamp() >= proven.changes_at:
            return None
        return dict(proven.status)

    def forget_verified(self) -> None:
        """Drop the cached verified answer: the next `verified_license()` asks the agent again."""
        self._verified = None

    def sync(self, token: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """`POST /v1/sync`: sync with the cloud now and return the new status (needs the api-token)."""
        return self.request("POST", "/v1/sync", {}, token=token, timeout=timeout)

    def trusted_kids(self) -> list[str]:
        """The kids this client trusts now (roots plus learned updates)."""
        return self._trust_store().keys.kids()

    # -- verification ----------------------------------------------------------------------------------

    def _proven_still(self) -> bool | None:
        status = self.last_proven()
        return None if status is None else bool(status.get("licensed"))

    def _trust_store(self) -> TrustStore:
        if self._trust is None:
            arg = self._trusted_arg
            if arg is None:
                roots = default_roots()
            elif isinstance(arg, TrustedKeys):
                roots = arg
            else:
                roots = TrustedKeys.from_jwks(arg)
            path_arg = self._trust_file_arg
            if path_arg is _TRUST_FILE_DEFAULT:
                path: Path | None = default_trust_file()
            elif path_arg is None:
                path = None
            else:
                path = Path(path_arg)  # type: ignore[arg-type]
            self._trust = TrustStore(roots, path)
        return self._trust

    def _this_pc(self, refresh: bool = False) -> dict[str, str]:
        """This PC's fingerprint hashes, probed once per client (again when `refresh`)."""
        if self._hashes is None or refresh:
            if self._fingerprinter is not None:
                self._hashes = dict(self._fingerprinter())
            else:
                from pospal_protocol import fingerprint

                self._hashes = fingerprint.current(refresh=refresh).hashes()
        return self._hashes

    def _claims(self, token: str, chain: object) -> Claims:
        cached = self._claims_cache
        if cached is not None and cached[0] == token:
            return cached[1]
        store = self._trust_store()
        if isinstance(chain, list) and chain:
            store.learn(chain)
        try:
            # No `nbf` check against this PC's clock: a clock a few minutes slow would refuse every fresh
            # token after a sync, and a token from the future is still genuine. `exp` is checked below.
            claims = verify_token(token, store.keys, _NO_NBF_CHECK)
        except TokenInvalid as exc:
            raise BadProof("token", f"The agent's token is not genuine: {exc.message}") from exc
        self._claims_cache = (token, claims)
        return claims

    def _verify(self, challenge: str, answer: dict[str, Any], clock: Clock) -> _Verified:
        from pospal_protocol.fingerprint import proves_same_machine

        status = {k: v for k, v in answer.items() if k not in _PROOF_FIELDS}
        now = clock.now().timestamp()
        token = answer.get("token")
        if not isinstance(token, str):
            if answer.get("licensed") is False:
                # Nothing to prove: an agent with no license may say so (a fake one gains nothing).
                return _Verified(status, clock.monotonic(), now)
            raise BadProof("no_token", "The answer says licensed but carries no token to prove it.")
        claims = self._claims(token, answer.get("keyset_updates"))
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
        if not proves_same_machine(claims.fp, self._this_pc()):
            # A probe may have failed just now: probe once more before refusing (unless injected).
            if self._fingerprinter is not None or not proves_same_machine(claims.fp, self._this_pc(True)):
                raise OtherMachine(
                    "fingerprint",
                    "The agent's license belongs to another computer, or too little of this one could be "
                    "read to tell.",
                )
        if claims.exp <= now:
            raise LicenseExpired(
                "offline_expired", "The license token has expired: the agent has not synced for too long."
            )
        refusal = why_not_licensed(claims, now)
        if answer.get("licensed") is True and refusal is not None:
            if refusal == "revoked":
                raise BadProof("contradicts", "The answer says licensed but its token is revoked.")
            raise LicenseExpired(refusal, "The license has run out by this computer's clock.")
        return _Verified(status, clock.monotonic() + self.recheck_s, _next_change(claims, now))

    # -- plumbing --------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON answer, all within `timeout` (total).

        `503 busy`/`updating` answers and a swap's refused or reset connections are retried inside that
        deadline (see the module docstring). Raises `AgentUnavailable` (no answer in time, refused, reset)
        or `LocalApiError` (an error answer, with the API's `code`; `answer_too_large` past `max_bytes`,
        default 16 MiB).
        """
        payload = b"" if body is None else json.dumps(body).encode("utf-8")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: application/json"]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        bearer = token or self.token
        if bearer:
            lines.append(f"Authorization: Bearer {bearer}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        wait = self.timeout if timeout is None else timeout
        limit = MAX_OTHER_ANSWER_BYTES if max_bytes is None else max_bytes
        # Real time, not the injected clock: this bounds the call, it judges no license.
        deadline = time.monotonic() + wait
        budget = retry.Budget(deadline)
        conn = self._connection()
        resent = False
        while True:
            # A kept-alive connection the agent closed while idle never got the request: resend once, at
            # once, on a fresh connection. A fresh connection refused, reset or closed unanswered is an
            # agent swapping versions when one answered before (retried within the deadline; a GET only,
            # unless it was refused and so never sent), else an agent that is not there.
            reused = conn.is_open
            budget.begin()
            try:
                answer = conn.exchange(request, deadline, limit)
            except (wire.Closed, BrokenPipeError, ConnectionResetError) as exc:
                if reused and not resent:
                    resent = True
                    continue
                if method == "GET" and self._reached and budget.retry_gap():
                    continue
                self._reached = False
                if isinstance(exc, wire.Closed):
                    raise AgentUnavailable("The POSPal License Agent closed the connection.") from exc
                raise AgentUnavailable() from exc
            except ConnectionRefusedError as exc:
                if self._reached and budget.retry_gap():
                    continue
                self._reached = False
                raise AgentUnavailable() from exc
            except (wire.Timeout, TimeoutError) as exc:
                raise AgentUnavailable("The POSPal License Agent did not answer in time.") from exc
            except wire.Cut as exc:
                raise AgentUnavailable("The POSPal License Agent stopped in mid-answer.") from exc
            except wire.TooLarge as exc:
                raise LocalApiError("The agent's answer is too large.", code="answer_too_large") from exc
            except wire.Malformed as exc:
                raise LocalApiError(f"The agent sent a malformed answer: {exc}.") from exc
            except OSError as exc:
                raise AgentUnavailable() from exc
            self._reached = True
            status = answer.status
            try:
                data = json.loads(answer.body) if answer.body else {}
            except ValueError as exc:
                raise LocalApiError("The agent sent an answer that is not JSON.", status=status) from exc
            if status == 503 and isinstance(data, dict) and data.get("error") in retry.RETRY_CODES:
                # busy (too many connections) or updating (a swap): it asked us to come back, and did
                # not act on the request.
                if budget.retry(retry.retry_after(answer.headers, data)):
                    continue
            break
        if status >= 400:
            data = data if isinstance(data, dict) else {}
            code = str(data.get("error") or "local_api_error")
            message = str(data.get("message") or f"The agent answered HTTP {status}.")
            extra = {k: v for k, v in data.items() if k not in ("error", "message")}
            raise LocalApiError(message, status=status, code=code, extra=extra)
        if not isinstance(data, dict):
            raise LocalApiError("The agent sent an unexpected answer.", status=status)
        return data

    def _connection(self) -> wire.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = wire.Connection(self.host, self.port)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


def _fresh(cached: _Verified, clock: Clock) -> bool:
    return clock.monotonic() < cached.recheck_at and clock.now().timestamp() < cached.changes_at


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
    from pospal_protocol.clock import FakeClock

    checker = AgentClient(
        0, trusted_keys=trusted_keys, trust_file=None, clock=FakeClock(now), fingerprinter=lambda: this_pc
    )
    return dict(checker._verify(challenge, answer, checker._clock).status)


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
