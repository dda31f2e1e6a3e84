"""The local HTTP API on 127.0.0.1 that POS apps (and a separate tray process) read the license from.

Guards run before routing, in this order, so no handler ever sees a rejected request (the shape of
tailscale's `localapi.ServeHTTP`):

1. Host must be `127.0.0.1:PORT` or `localhost:PORT` (DNS rebinding)          -> 403 forbidden_host
2. Origin must be absent or listed in POSPAL_AGENT_ALLOWED_ORIGINS            -> 403 forbidden_origin
3. Referer must be absent (or match an allowed Origin, which browsers send)   -> 403 forbidden_referer
4. POST (and GET /v1/diagnostics) needs `Authorization: Bearer <api-token>`   -> 401 unauthorized
5. Route and method                                                           -> 404 / 405
6. Body: Content-Length required, <= 64 KiB, application/json, a JSON object  -> 411 / 413 / 415 / 400

`GET /v1/license` answers from a pre-serialised response swapped in on every status change, so it never
touches the network or takes a lock. A listed origin gets CORS on that endpoint only. Every answer is
JSON and carries `X-Content-Type-Options: nosniff`.

`GET /v1/license?challenge=<16-64 random bytes, base64url>` answers the same fields plus `token` (the
current server-signed JWS), `machine_key` (the machine's public key, which the token's `cnf.jkt` names)
and `proof`, the machine key's signature over the challenge and the answer's hash (`pospal_protocol.proof`),
and, once the server has rotated its key, `keyset_updates`: the signed key-set documents the agent
verified, so a POS that ships older keys can follow them (`pospal_client.trust`).
The hash is computed when the status changes, so a challenge costs one Ed25519 signature. Until the
machine key is loaded (a background thread at start) it answers 503 `starting`, and `/v1/health` says
`"ready": false`. A POS verifies it with `pospal_client.AgentClient.verified_license()`.

Endpoints (POST bodies are JSON objects; all POSTs and `GET /v1/diagnostics` need the bearer token):

    GET  /v1/license            LicenseStatus.to_dict()
    GET  /v1/license?challenge= LicenseStatus.to_dict() + {token, machine_key, proof, keyset_updates?}
    GET  /v1/health             {"ok": true, "version", "ready"}
    GET  /v1/diagnostics        Diagnostics.to_dict()
    POST /v1/sync               {} -> status; on failure the error body also carries "status"
    POST /v1/trial              {email?} -> status (email: the trial-ending reminder goes there)
    POST /v1/codes              {email, purpose} -> 202 {"sent": true}
    POST /v1/activate           {email, code} -> status
    POST /v1/checkout           {email, restaurant_name, quantity?} -> {checkout_id, url}
    POST /v1/checkout/wait      {checkout_id, poll_s?, timeout_s?} -> {"complete": bool, "status": status}
    POST /v1/portal             {} -> {url}
    POST /v1/subscription/pause {resumes_at?} -> status: pause for the season (the owner's)
    POST /v1/subscription/resume {} -> status
    POST /v1/terminals          {email?, code?} -> {"terminals": [Terminal.to_dict()]}
    POST /v1/terminals/remove   {machine_id, email?, code?} -> {"ok": true}
    POST /v1/terminals/keep     {machine_ids} -> {"terminals": [...]}: the owner's choice of who keeps a seat
    POST /v1/terminals/rename   {name, machine_id?, email?, code?} -> {"terminals": [...], "status"}: this PC,
                                or (the owner) another terminal
    POST /v1/terminals/add      {email, confirm?, expected_quantity?} -> AddTerminal + {"status"}
    POST /v1/owner              {email, code} -> {"ok": true}: the owner's proof on this PC (15 minutes)
    POST /v1/deactivate         {} -> status
    GET  /v1/language           {"language"}: the agent's language
    POST /v1/language           {language} -> {"language", "status"} (the window's choice, persisted)
    POST /v1/offline/request    {} -> {"file", "file_name"}: the activation request file (activation by file)
    POST /v1/offline/license    {file} -> status: import a license file (422 with nothing changed if refused)
    POST /v1/offline/deactivate {} -> {"file", "file_name"}: give the license file up (the license is
                                forgotten); the deactivation file frees its seat on the server's /offline
    GET  /v1/update             UpdateStatus.to_dict(): running, staged, last check, last swap or rollback
    POST /v1/update/check       {} -> UpdateStatus: check now (stages what is offered); a failed check is
                                its `check_outcome`, never an error (an update never blocks licensing)

`GET /v1/license?lang=el|en` (or `Accept-Language`) answers in that language, not changing the agent's.

`LocalApi` holds the routes and what they answer; the wire (request parsing, the guards, bodies, JSON
errors) is `agent.localapi.httpd`; its sockets are `agent.localapi.httploop`.

Errors are `{"error": code, "message": text, ...}`: the guards' own codes, `offline` (503), or the
server's refusal passed on with its code (e.g. `seats_full`, 409, with `terminals`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import errors
from agent.localapi.httpd import ApiError, Request, dumps, error_for, response
from agent.localapi.httploop import Server
from pospal_protocol import __version__
from pospal_protocol.proof import canonical_json, parse_challenge, sign_answer
from pospal_protocol.trust import encode_public_key

if TYPE_CHECKING:
    from agent.control import AgentControl

# A wait on a checkout is bounded so a forgotten request cannot pin a thread for ever.
CHECKOUT_WAIT_DEFAULT_S = 900.0
CHECKOUT_WAIT_MAX_S = 3600.0

Handler = Callable[[dict[str, Any]], tuple[int, Any]]
# What signs local answers: () -> (current token or None, machine key or None). `AgentService.proof_material`.
Prover = Callable[[], tuple[str | None, Ed25519PrivateKey | None]]

log = logging.getLogger(__name__)


@dataclass
class Route:
    """One endpoint: `handler(body) -> (status, json_obj)`; `auth` says whether it needs the bearer token;
    `blocking` routes (they may wait on the network) run on the worker pool, the others on the loop."""

    handler: Handler
    auth: bool
    blocking: bool = True


@dataclass(frozen=True)
class _Signed:
    """The challenge answer of one status: its JSON without the closing brace, and its digest."""

    prefix: bytes
    digest: str
    key: Ed25519PrivateKey | None


class LocalApi:
    """The local API server: owns the listening socket, the guard chain and the route table.

    `routes` maps `(method, path)` to a `Route`; tests swap handlers to prove guards run first.
    """

    def __init__(
        self,
        control: AgentControl,
        *,
        api_token: str,
        port: int = 7421,
        allowed_origins: Iterable[str] = (),
        version: str = __version__,
        poll_interval: float = 0.5,
        prover: Prover | None = None,
        keyset_chain: Callable[[], list[str]] | None = None,
    ) -> None:
        self.control = control
        self._prover = prover
        self._keyset_chain = keyset_chain
        # Set once the machine key is loaded (in the background: a keyring may be slow to answer).
        self.ready = threading.Event()
        self._signed: dict[str, _Signed] | None = None
        self._status_dicts: dict[str, dict[str, Any]] = {}
        self._poll_interval = poll_interval
        self._api_token = api_token.encode("ascii")
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins if o)
        self.version = version
        self._httpd = Server(("127.0.0.1", port), self, blocking=self._is_blocking)
        self.port = int(self._httpd.server_address[1])
        self.valid_hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._license_body = b"{}"
        self._license_by_lang: dict[str, bytes] = {}
        self._license_response = b""
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/v1/license"): Route(self._get_license, auth=False, blocking=False),
            ("GET", "/v1/health"): Route(self._get_health, auth=False, blocking=False),
            ("GET", "/v1/diagnostics"): Route(self._get_diagnostics, auth=True),
            ("POST", "/v1/sync"): Route(self._post_sync, auth=True),
            ("POST", "/v1/trial"): Route(self._post_trial, auth=True),
            ("POST", "/v1/codes"): Route(self._post_codes, auth=True),
            ("POST", "/v1/activate"): Route(self._post_activate, auth=True),
            ("POST", "/v1/checkout"): Route(self._post_checkout, auth=True),
            ("POST", "/v1/checkout/wait"): Route(self._post_checkout_wait, auth=True),
            ("POST", "/v1/portal"): Route(self._post_portal, auth=True),
            ("POST", "/v1/subscription/pause"): Route(self._post_pause, auth=True),
            ("POST", "/v1/subscription/resume"): Route(self._post_resume, auth=True),
            ("POST", "/v1/terminals"): Route(self._post_terminals, auth=True),
            ("POST", "/v1/terminals/remove"): Route(self._post_terminals_remove, auth=True),
            ("POST", "/v1/terminals/keep"): Route(self._post_terminals_keep, auth=True),
            ("POST", "/v1/terminals/rename"): Route(self._post_terminals_rename, auth=True),
            ("POST", "/v1/terminals/add"): Route(self._post_terminals_add, auth=True),
            ("POST", "/v1/owner"): Route(self._post_owner, auth=True),
            ("POST", "/v1/deactivate"): Route(self._post_deactivate, auth=True),
            ("GET", "/v1/language"): Route(self._get_language, auth=True),
            ("POST", "/v1/language"): Route(self._post_language, auth=True),
            ("POST", "/v1/offline/request"): Route(self._post_offline_request, auth=True),
            ("POST", "/v1/offline/license"): Route(self._post_offline_license, auth=True),
            ("POST", "/v1/offline/deactivate"): Route(self._post_offline_deactivate, auth=True),
            ("GET", "/v1/update"): Route(self._get_update, auth=True),
            ("POST", "/v1/update/check"): Route(self._post_update_check, auth=True),
        }
        self.publish(control.status())

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> LocalApi:
        """Serve in a daemon thread and follow the agent's status changes; returns self."""
        self._unsubscribe = self.control.subscribe(self.publish)
        self.publish(self.control.status())
        threading.Thread(target=self._load_prover, name="pospal-api-key", daemon=True).start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(self._poll_interval,),
            name="pospal-local-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def hand_over(self, within_s: float = 1.0) -> bool:
        """Stop accepting and finish the accepted connections (`httploop.Server.hand_over`), before the
        agent exits for a swap; True when none is left within `within_s`."""
        return bool(self._thread) and self._httpd.hand_over(within_s)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        if self._thread:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def publish(self, status: Any) -> None:
        """Swap in the pre-serialised `GET /v1/license` answer for `status` (called on every change)."""
        body = dumps(status.to_dict())
        # The same answer in each language a POS may ask for (`?lang=`, Accept-Language), made now so
        # asking costs nothing either.
        by_lang = {lang: dumps(status.to_dict(lang)) for lang, _text in getattr(status, "translations", ())}
        # One reference assignment each: readers see the old or the new answer, never a mix.
        self._license_by_lang = by_lang
        self._license_body = body
        self._license_response = response(200, body)
        # The challenge answers' bodies, by language ("" is the agent's), signed when asked.
        translations = getattr(status, "translations", ())
        self._status_dicts = {"": status.to_dict(), **{lg: status.to_dict(lg) for lg, _ in translations}}
        if self.ready.is_set():
            self._signed = self._sign_all()

    # -- signed answers --------------------------------------------------------------------------------

    def _load_prover(self) -> None:
        try:
            self._signed = self._sign_all()
        finally:
            self.ready.set()

    def _sign_all(self) -> dict[str, _Signed]:
        """Everything of a challenge answer that does not depend on the challenge, per language."""
        token: str | None = None
        key: Ed25519PrivateKey | None = None
        if self._prover is not None:
            try:
                token, key = self._prover()
            except Exception:  # a keyring that fails: answers stay unproven, never crash the API
                log.exception("cannot load the machine key for signed answers")
        if token is None or key is None:
            token, key = None, None
        machine_key = encode_public_key(key.public_key()) if key is not None else None
        # The key-set updates the agent verified, so a POS built with older keys follows a rotation by
        # the same rule (`pospal_protocol.trust.TrustedKeys.apply_chain`); absent when there are none.
        chain = list(self._keyset_chain() or []) if self._keyset_chain is not None and token else []
        signed = {}
        for lang, status in self._status_dicts.items():
            answer = {**status, "token": token, "machine_key": machine_key}
            if chain:
                answer["keyset_updates"] = chain
            digest = hashlib.sha256(canonical_json(answer)).hexdigest()
            signed[lang] = _Signed(dumps(answer)[:-1], digest, key)
        return signed

    def challenge_response(self, query: str, cors: str = "", lang: str | None = None) -> bytes:
        """The answer to `GET /v1/license?challenge=...`: the status (`message` in `lang`, else the
        agent's language), token, machine key and proof."""
        values = parse_qs(query, keep_blank_values=True).get("challenge")
        if not values or len(values) != 1:
            raise ApiError(400, "bad_challenge", "Send one challenge: 16 to 64 random bytes, base64url.")
        challenge = values[0]
        try:
            parse_challenge(challenge)
        except ValueError as exc:
            raise ApiError(
                400,
                "bad_challenge",
                "The challenge must be 16 to 64 random bytes, base64url without padding.",
            ) from exc
        by_lang = self._signed
        if by_lang is None or not self.ready.is_set():
            raise ApiError(
                503, "starting", "The agent is starting; ask again in a moment.", {"retry_after": 1}
            )
        signed = by_lang.get(lang or "") or by_lang[""]
        proof = sign_answer(signed.key, challenge, signed.digest) if signed.key is not None else None
        return response(200, signed.prefix + b',"proof":' + dumps(proof) + b"}", cors)

    def _is_blocking(self, req: Request) -> bool:
        route = self.routes.get((req.method, req.path))
        return route is not None and route.blocking

    def license_answer(self, lang: str | None, cors: str = "") -> bytes:
        """The whole `GET /v1/license` answer with `message` in `lang` (None: the agent's language)."""
        body = self._license_by_lang.get(lang or "") or self._license_body
        if body is self._license_body and not cors:
            return self._license_response
        return response(200, body, cors)

    # -- helpers used by the request handler -----------------------------------------------------------

    def token_ok(self, header: str | None) -> bool:
        """Whether an Authorization header carries this agent's bearer token (constant-time compare)."""
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode("ascii", "replace"), self._api_token)

    # -- handlers --------------------------------------------------------------------------------------

    def _get_license(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self._license_body

    def _get_health(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"ok": True, "version": self.version, "ready": self.ready.is_set()}

    def _get_diagnostics(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.diagnostics().to_dict()

    def _post_sync(self, _body: dict[str, Any]) -> tuple[int, Any]:
        try:
            return 200, self.control.sync_now().to_dict()
        except errors.Error as exc:
            # The POS app still gets the status it can keep working with, next to the reason.
            err = error_for(exc)
            err.extra["status"] = self.control.status().to_dict()
            raise err from exc

    def _post_trial(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.start_trial(_opt_str(body, "email")).to_dict()

    def _post_codes(self, body: dict[str, Any]) -> tuple[int, Any]:
        purpose = _opt_str(body, "purpose") or "activate"
        if purpose not in ("activate", "owner", "portal", "terminals"):
            raise ApiError(422, "invalid_request", "purpose must be activate, owner, portal or terminals.")
        self.control.request_code(_req_str(body, "email"), purpose)
        return 202, {"sent": True}

    def _post_activate(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.activate(_req_str(body, "email"), _req_str(body, "code")).to_dict()

    def _post_checkout(self, body: dict[str, Any]) -> tuple[int, Any]:
        quantity = body.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
            raise ApiError(422, "invalid_request", "quantity must be a whole number from 1 to 100.")
        checkout = self.control.start_checkout(
            _req_str(body, "email"),
            _opt_str(body, "restaurant_name") or "",
            quantity,
            body.get("new_subscription") is True,
        )
        return 200, checkout.to_dict()

    def _post_checkout_wait(self, body: dict[str, Any]) -> tuple[int, Any]:
        timeout = _opt_num(body, "timeout_s", CHECKOUT_WAIT_DEFAULT_S)
        poll = _opt_num(body, "poll_s", 2.0)
        cancel = threading.Event()
        timer = threading.Timer(min(max(timeout, 0.0), CHECKOUT_WAIT_MAX_S), cancel.set)
        timer.daemon = True
        timer.start()
        try:
            status = self.control.wait_checkout(_req_str(body, "checkout_id"), cancel, max(poll, 0.05))
            # The wait only returns before its timeout when the checkout completed and activated.
            complete = not cancel.is_set()
        finally:
            timer.cancel()
        return 200, {"complete": complete, "status": status.to_dict()}

    def _post_portal(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"url": self.control.portal_url()}

    def _post_pause(self, body: dict[str, Any]) -> tuple[int, Any]:
        raw = _opt_str(body, "resumes_at")
        resumes_at = None
        if raw:
            try:
                resumes_at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(422, "invalid_request", "resumes_at must be an ISO 8601 time.") from None
            if resumes_at.tzinfo is None:
                raise ApiError(422, "invalid_request", "resumes_at needs a time zone (use ...Z).")
        return 200, self.control.pause_subscription(resumes_at).to_dict()

    def _post_resume(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.resume_subscription().to_dict()

    def _post_terminals(self, body: dict[str, Any]) -> tuple[int, Any]:
        terminals = self.control.list_terminals(_opt_str(body, "email"), _opt_str(body, "code"))
        return 200, {"terminals": [t.to_dict() for t in terminals]}

    def _post_terminals_remove(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.control.remove_terminal(
            _req_str(body, "machine_id"), _opt_str(body, "email"), _opt_str(body, "code")
        )
        return 200, {"ok": True}

    def _post_terminals_rename(self, body: dict[str, Any]) -> tuple[int, Any]:
        terminals = self.control.rename_terminal(
            _req_str(body, "name"),
            _opt_str(body, "machine_id"),
            _opt_str(body, "email"),
            _opt_str(body, "code"),
        )
        return 200, {"terminals": [t.to_dict() for t in terminals], "status": self.control.status().to_dict()}

    def _post_terminals_keep(self, body: dict[str, Any]) -> tuple[int, Any]:
        ids = body.get("machine_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ApiError(422, "invalid_request", "'machine_ids' must be a list of terminal ids.")
        return 200, {"terminals": [t.to_dict() for t in self.control.keep_terminals(ids)]}

    def _post_terminals_add(self, body: dict[str, Any]) -> tuple[int, Any]:
        expected = body.get("expected_quantity")
        if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
            raise ApiError(422, "invalid_request", "'expected_quantity' must be a number.")
        added = self.control.add_terminal(_req_str(body, "email"), body.get("confirm") is True, expected)
        return 200, {**added.to_dict(), "status": self.control.status().to_dict()}

    def _post_owner(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.control.prove_owner(_req_str(body, "email"), _req_str(body, "code"))
        return 200, {"ok": True}

    def _post_deactivate(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.deactivate().to_dict()

    def _get_language(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, {"language": self.control.language()}

    def _post_language(self, body: dict[str, Any]) -> tuple[int, Any]:
        status = self.control.set_language(_req_str(body, "language"))
        return 200, {"language": self.control.language(), "status": status.to_dict()}

    def _post_offline_request(self, _body: dict[str, Any]) -> tuple[int, Any]:
        from pospal_protocol.offline import REQUEST_FILE_NAME

        return 200, {"file": self.control.offline_request().decode("utf-8"), "file_name": REQUEST_FILE_NAME}

    def _post_offline_deactivate(self, _body: dict[str, Any]) -> tuple[int, Any]:
        from pospal_protocol.offline import DEACTIVATION_FILE_NAME

        try:
            data = self.control.offline_deactivation()
        except errors.LicenseFileRefused as exc:
            raise ApiError(422, f"license_file_{exc.code}", exc.message) from exc
        return 200, {"file": data.decode("utf-8"), "file_name": DEACTIVATION_FILE_NAME}

    def _get_update(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.update_status().to_dict()

    def _post_update_check(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.check_updates().to_dict()

    def _post_offline_license(self, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            return 200, self.control.import_offline_license(_req_str(body, "file").encode("utf-8")).to_dict()
        except errors.LicenseFileRefused as exc:
            # Its own code, so a tray over this API shows the reason, not a generic "invalid request".
            raise ApiError(422, f"license_file_{exc.code}", exc.message) from exc


def _req_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, "invalid_request", f"'{key}' is required.")
    return value.strip()


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "invalid_request", f"'{key}' must be a string.")
    return value.strip() or None


def _opt_num(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ApiError(422, "invalid_request", f"'{key}' must be a number.")
    return float(value)
