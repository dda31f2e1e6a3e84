"""Flask integration: guard the routes that take money with the agent's proven answer, leave the rest alone.

    from pospal_client.flask import PosPalLicense
    license = PosPalLicense(app, guard=["checkout", "pay"])   # endpoint names, checked before_request

    @app.post("/refund")
    @license.required                                         # or per view
    def refund(): ...

A guarded request runs only when `AgentClient.can_sell()` says so; otherwise it gets `402` with
`{"error": "not_licensed", "message": ...}` (the agent's message when it gave one). Every other route
(the menu, the kitchen screen, reports) runs as always, whatever the agent says. Templates get
`pospal_license`, the banner data: `licensed` (may sell now), `proven` (by this PC's agent), `state`
(`license_state`, or `agent_unavailable`, `agent_starting`, `answer_refused`) and `message`.

When the agent is down or starting, the rule is `can_sell()`'s, chosen so that the agent never blocks a
sale for long and never for ever: the last proven answer keeps deciding until its token's next change
(its lease end at the latest), so an agent restart or crash does not stop a licensed till; with no
proven answer yet, "starting" sells for the client's first `starting_limit_s` (60 s), covering the
agent starting after the POS at login, and then no longer; no agent at all with no proof is no sale. A
refused answer (a fake agent on the port, a replayed or edited answer, a relay from another PC) never
sells.

Configuration (`app.config`): `POSPAL_AGENT_PORT` (else POSPAL_AGENT_PORT from the environment, or
7421), `POSPAL_TRUSTED_KEYS` (a JWKS dict pinning the POS's own trusted keys; default: the client's
roots), `POSPAL_TRUST_FILE` (where learned key-set updates are kept). Or pass `client=` yourself.
Needs the `flask` extra: `pip install "pospal-client[flask]"`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask, current_app, jsonify, request

from pospal_client.client import AgentClient
from pospal_client.errors import AgentStarting, AgentUnavailable, AnswerRefused, LocalApiError

F = TypeVar("F", bound=Callable[..., Any])
EXTENSION = "pospal_license"
REFUSED_STATUS = 402


class PosPalLicense:
    """The Flask extension (see the module docstring); `init_app` for the application-factory pattern."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        guard: Iterable[str] = (),
        client: AgentClient | None = None,
    ) -> None:
        self.guarded = set(guard)
        self._client = client
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the guard (before_request), the template banner and the extension on `app`."""
        app.extensions[EXTENSION] = self
        if self._client is None:
            trusted = app.config.get("POSPAL_TRUSTED_KEYS")
            kwargs: dict[str, Any] = {"trusted_keys": trusted}
            if "POSPAL_TRUST_FILE" in app.config:
                kwargs["trust_file"] = app.config["POSPAL_TRUST_FILE"]
            self._client = AgentClient(app.config.get("POSPAL_AGENT_PORT"), **kwargs)
        app.before_request(self._before_request)
        app.context_processor(lambda: {"pospal_license": self.banner()})

    @property
    def client(self) -> AgentClient:
        """The `AgentClient` this extension asks."""
        if self._client is None:
            raise RuntimeError("PosPalLicense is not bound to an app: call init_app(app) first")
        return self._client

    def can_sell(self) -> bool:
        """Whether a guarded route may run now (`AgentClient.can_sell()`)."""
        return self.client.can_sell()

    def required(self, view: F) -> F:
        """Decorator: guard one view, whatever its endpoint name."""

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not self.can_sell():
                return self._refusal()
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    def banner(self) -> dict[str, Any]:
        """The license banner for templates: `licensed`, `proven`, `state` and `message`."""
        client = self.client
        try:
            status = client.verified_license()
            return {
                "licensed": client.can_sell(),
                "proven": True,
                "state": status.get("license_state"),
                "message": status.get("message"),
            }
        except AnswerRefused as exc:
            return {"licensed": False, "proven": False, "state": "answer_refused", "message": exc.message}
        except AgentStarting as exc:
            state, message = "agent_starting", exc.message
        except (AgentUnavailable, LocalApiError) as exc:
            state, message = "agent_unavailable", exc.message
        proven = client.last_proven()
        if proven is not None:
            message = str(proven.get("message") or message)
        return {"licensed": client.can_sell(), "proven": False, "state": state, "message": message}

    def _before_request(self) -> Any:
        if request.endpoint in self.guarded and not self.can_sell():
            return self._refusal()
        return None

    def _refusal(self) -> Any:
        banner = self.banner()
        body = {"error": "not_licensed", "message": banner["message"] or "This till is not licensed."}
        return jsonify(body), REFUSED_STATUS


def get_license() -> PosPalLicense:
    """The extension bound to the current app."""
    return current_app.extensions[EXTENSION]
