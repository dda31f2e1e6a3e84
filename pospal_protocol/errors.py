"""Errors of the license protocol, shared by the agent and the server, rooted in one `Error`.

Each error carries a `message` a person can read::

    Error
     ├── ConfigError                  a setting is missing or malformed (names the variable)
     ├── InvalidInput                 a value is malformed (names the field)
     ├── TokenError
     │    ├── KeyInvalid              a JWK / public key is malformed
     │    └── TokenInvalid            signature, alg, kid, claims, nbf or exp rejected (`reason` says which)
     │         ├── MachineMismatch    the token is bound to another machine (fingerprint / machine id)
     │         └── KeySetRejected     a key-set update not signed by an already trusted key
     ├── RequestSignatureInvalid      a machine-signed request does not verify
     ├── OfflineFileInvalid           an activation request / license file is malformed or unsigned
     └── LocalApiError                the agent's local API failed, as a POS client sees it
          ├── AgentUnavailable        no agent answers on the local port (or not within the deadline)
          │    └── AgentStarting      an agent answers but is still starting
          └── AnswerRefused           an answer that fails the POS's checks (`reason`)
               ├── BadProof, OtherMachine, LicenseExpired

`agent.errors` grows this tree with the agent's own errors; the server maps these to HTTP answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# Every error code the license server's API answers with, and its HTTP status: the one map. The server's
# `ApiError` classes take their status from it, and the agent's local API passes a server refusal on to
# the POS with the same status.
HTTP_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "invalid_request": 422,
        "bad_signature": 401,
        "unknown_machine": 401,
        "bad_code": 401,
        "code_expired": 401,
        "owner_proof_required": 403,
        "migration_closed": 403,
        "migration_refused": 401,
        "migration_used": 409,
        "csrf": 403,
        "not_found": 404,
        "no_subscription": 404,
        "replay": 409,
        "seats_full": 409,
        "subscription_exists": 409,
        "checkout_incomplete": 409,
        "quantity_changed": 409,
        "too_large": 413,
        "too_many_attempts": 429,
        "rate_limited": 429,
        "internal": 500,
        "busy": 503,
        "unavailable": 503,
        "billing_unavailable": 503,
    }
)


def http_status(code: str, default: int = 400) -> int:
    """The HTTP status that goes with an error `code` (`default` for a code the map does not know)."""
    return HTTP_STATUS.get(code, default)


class Error(Exception):
    """Root of all protocol (and agent) errors; `message` is a sentence fit for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(Error):
    """A setting from the environment is missing or malformed."""


class InvalidInput(Error):
    """A value given to the agent (an email address, say) is malformed; the message names it."""


class TokenError(Error):
    """Something about tokens or keys is wrong."""


class KeyInvalid(TokenError):
    """A JWK or raw public key is malformed or not Ed25519."""


class TokenInvalid(TokenError):
    """A token (or key-set document) was rejected; `reason` is a short machine-readable cause."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"License token rejected ({reason}).")
        self.reason = reason


class MachineMismatch(TokenInvalid):
    """The token verifies but is bound to a different machine."""


class KeySetRejected(TokenInvalid):
    """A key-set update was not signed by a key the agent already trusts, or is malformed."""


class RequestSignatureInvalid(Error):
    """A machine-signed request is missing headers or its signature does not verify."""


class OfflineFileInvalid(Error):
    """An offline activation request or license file is malformed, or its signature does not verify."""


# -- the local API, as a POS client sees it (pospal_client and agent.errors re-export these) ----------


class LocalApiError(Error):
    """The local agent API answered with an error (`status`, `code`), or not at all."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "local_api_error",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = dict(extra or {})


class AgentUnavailable(LocalApiError):
    """No agent answers on the local port (not installed, not started, crashed, or too slow)."""

    def __init__(self, message: str = "The POSPal License Agent is not running.") -> None:
        super().__init__(message, code="agent_unavailable")


class AgentStarting(AgentUnavailable):
    """Something answers on the port but is not ready to prove its answers yet."""

    def __init__(self, message: str = "The POSPal License Agent is starting.") -> None:
        super().__init__(message)
        self.code = "agent_starting"


class AnswerRefused(LocalApiError):
    """An answer that `verified_license()` does not accept; `reason` says which check failed."""

    default_code = "answer_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, code=self.default_code)
        self.reason = reason


class BadProof(AnswerRefused):
    """The answer is not proven by this PC's agent for this challenge, or its token is not genuine."""

    default_code = "bad_proof"


class OtherMachine(AnswerRefused):
    """The token belongs to another PC, or too few identifiers could be compared to say it is this one."""

    default_code = "other_machine"


class LicenseExpired(AnswerRefused):
    """The token's lease (or its trial, or the subscription) has run out by this PC's clock."""

    default_code = "license_expired"
