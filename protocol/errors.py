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
     └── OfflineFileInvalid           an activation request / license file is malformed or unsigned

`agent.errors` grows this tree with the agent's own errors; the server maps these to HTTP answers.
"""

from __future__ import annotations


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
