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

Endpoints (POST bodies are JSON objects; all POSTs and `GET /v1/diagnostics` need the bearer token):

    GET  /v1/license            LicenseStatus.to_dict()
    GET  /v1/health             {"ok": true, "version"}
    GET  /v1/diagnostics        Diagnostics.to_dict()
    POST /v1/sync               {} -> status; on failure the error body also carries "status"
    POST /v1/trial              {email?} -> status (email: the trial-ending reminder goes there)
    POST /v1/codes              {email, purpose} -> 202 {"sent": true}
    POST /v1/activate           {email, code} -> status
    POST /v1/checkout           {email, restaurant_name, quantity?} -> {checkout_id, url}
    POST /v1/checkout/wait      {checkout_id, poll_s?, timeout_s?} -> {"complete": bool, "status": status}
    POST /v1/portal             {} -> {url}
    POST /v1/terminals          {email?, code?} -> {"terminals": [Terminal.to_dict()]}
    POST /v1/terminals/remove   {machine_id, email?, code?} -> {"ok": true}
    POST /v1/deactivate         {} -> status

`LocalApi` holds the routes and what they answer; the wire (request parsing, the guards, bodies, JSON
errors) is `agent.httpd`.

Errors are `{"error": code, "message": text, ...}`: the guards' own codes, `offline` (503), or the
server's refusal passed on with its code (e.g. `seats_full`, 409, with `terminals`).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import __version__, errors
from agent.httpd import ApiError, RequestHandler, Server, dumps, error_for, response

if TYPE_CHECKING:
    from agent.control import AgentControl

# A wait on a checkout is bounded so a forgotten request cannot pin a thread for ever.
CHECKOUT_WAIT_DEFAULT_S = 900.0
CHECKOUT_WAIT_MAX_S = 3600.0

Handler = Callable[[dict[str, Any]], tuple[int, Any]]


@dataclass
class Route:
    """One endpoint: `handler(body) -> (status, json_obj)`; `auth` says whether it needs the bearer token."""

    handler: Handler
    auth: bool


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
    ) -> None:
        self.control = control
        self._poll_interval = poll_interval
        self._api_token = api_token.encode("ascii")
        self.allowed_origins = frozenset(o.rstrip("/") for o in allowed_origins if o)
        self.version = version
        self._httpd = Server(("127.0.0.1", port), RequestHandler)
        self._httpd.api = self
        self.port = int(self._httpd.server_address[1])
        self.valid_hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._license_body = b"{}"
        self._license_response = b""
        self._health_response = response(200, dumps({"ok": True, "version": version}))
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "/v1/license"): Route(self._get_license, auth=False),
            ("GET", "/v1/health"): Route(self._get_health, auth=False),
            ("GET", "/v1/diagnostics"): Route(self._get_diagnostics, auth=True),
            ("POST", "/v1/sync"): Route(self._post_sync, auth=True),
            ("POST", "/v1/trial"): Route(self._post_trial, auth=True),
            ("POST", "/v1/codes"): Route(self._post_codes, auth=True),
            ("POST", "/v1/activate"): Route(self._post_activate, auth=True),
            ("POST", "/v1/checkout"): Route(self._post_checkout, auth=True),
            ("POST", "/v1/checkout/wait"): Route(self._post_checkout_wait, auth=True),
            ("POST", "/v1/portal"): Route(self._post_portal, auth=True),
            ("POST", "/v1/terminals"): Route(self._post_terminals, auth=True),
            ("POST", "/v1/terminals/remove"): Route(self._post_terminals_remove, auth=True),
            ("POST", "/v1/deactivate"): Route(self._post_deactivate, auth=True),
        }
        self.publish(control.status())

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> LocalApi:
        """Serve in a daemon thread and follow the agent's status changes; returns self."""
        self._unsubscribe = self.control.subscribe(self.publish)
        self.publish(self.control.status())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(self._poll_interval,), name="pospal-local-api",
            daemon=True,
        )
        self._thread.start()
        return self

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
        # One reference assignment each: readers see the old or the new answer, never a mix.
        self._license_body = body
        self._license_response = response(200, body)

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
        return 200, {"ok": True, "version": self.version}

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
        if purpose not in ("activate", "portal", "terminals"):
            raise ApiError(422, "invalid_request", "purpose must be activate, portal or terminals.")
        self.control.request_code(_req_str(body, "email"), purpose)
        return 202, {"sent": True}

    def _post_activate(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.activate(_req_str(body, "email"), _req_str(body, "code")).to_dict()

    def _post_checkout(self, body: dict[str, Any]) -> tuple[int, Any]:
        quantity = body.get("quantity", 1)
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 100:
            raise ApiError(422, "invalid_request", "quantity must be a whole number from 1 to 100.")
        checkout = self.control.start_checkout(
            _req_str(body, "email"), _opt_str(body, "restaurant_name") or "", quantity
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

    def _post_terminals(self, body: dict[str, Any]) -> tuple[int, Any]:
        terminals = self.control.list_terminals(_opt_str(body, "email"), _opt_str(body, "code"))
        return 200, {"terminals": [t.to_dict() for t in terminals]}

    def _post_terminals_remove(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.control.remove_terminal(
            _req_str(body, "machine_id"), _opt_str(body, "email"), _opt_str(body, "code")
        )
        return 200, {"ok": True}

    def _post_deactivate(self, _body: dict[str, Any]) -> tuple[int, Any]:
        return 200, self.control.deactivate().to_dict()


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


