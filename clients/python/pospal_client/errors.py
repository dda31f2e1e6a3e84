"""The errors a POS gets from `pospal_client`: the protocol kernel's local-API errors (one tree).

    pospal_protocol.errors.Error
     └── LocalApiError                the agent's local API failed (`status`, `code`, `extra`)
          ├── AgentUnavailable        no agent answers on the local port (or not within the deadline)
          │    └── AgentStarting      an agent answers but is still starting: wait a moment
          └── AnswerRefused           an answer that fails verified_license()'s checks (`reason`)
               ├── BadProof           not proven by this machine's key for this challenge (forged,
               │                      replayed, edited, too large, signed by an untrusted key)
               ├── OtherMachine       the token is bound to another PC, or too little could be compared
               └── LicenseExpired     the token's lease (or its trial, subscription) has run out

They are defined in `pospal_protocol.errors`, which this distribution ships; `agent.errors` re-exports the
same classes, so the agent's tree and the POS's are one.
"""

from pospal_protocol.errors import (
    AgentStarting,
    AgentUnavailable,
    AnswerRefused,
    BadProof,
    LicenseExpired,
    LocalApiError,
    OtherMachine,
)

__all__ = [
    "AgentStarting",
    "AgentUnavailable",
    "AnswerRefused",
    "BadProof",
    "LicenseExpired",
    "LocalApiError",
    "OtherMachine",
]
