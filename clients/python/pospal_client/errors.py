"""The errors a POS gets from `pospal_client`, rooted in the protocol kernel's `Error` (one tree).

    protocol.errors.Error
     └── LocalApiError                the agent's local API failed (`status`, `code`, `extra`)
          ├── AgentUnavailable        no agent answers on the local port (or not within the deadline)
          │    └── AgentStarting      an agent answers but is still starting: wait a moment
          └── AnswerRefused           an answer that fails verified_license()'s checks (`reason`)
               ├── BadProof           not proven by this machine's key for this challenge (forged,
               │                      replayed, edited, too large, signed by an untrusted key)
               ├── OtherMachine       the token is bound to another PC, or too little could be compared
               └── LicenseExpired     the token's lease (or its trial, subscription) has run out

`agent.errors` re-exports these, so the agent's own tree and the POS's are the same classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import Error


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
