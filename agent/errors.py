"""Every error the agent raises, rooted in one `Error` (the protocol kernel's, `pospal_protocol.errors`).

Each error carries a `message` a person can read (the UI shows it as is)::

    Error
     ├── ConfigError                  a setting is missing or malformed (names the variable)
     ├── InvalidInput                 a value given to the agent is malformed (names the field)
     │    └── LicenseFileRefused      an offline license file was refused (`code` says why)
     ├── TokenError
     │    ├── KeyInvalid              a JWK / public key is malformed
     │    └── TokenInvalid            signature, alg, kid, claims, nbf or exp rejected (`reason` says which)
     │         ├── MachineMismatch    the token is bound to another machine (fingerprint / machine id)
     │         └── KeySetRejected     a key-set update not signed by an already trusted key
     ├── RequestSignatureInvalid      a machine-signed request does not verify
     ├── OfflineFileInvalid           an activation request / license file is malformed or unsigned
     ├── StoreError                   the data directory or cache cannot be written
     │    └── KeyStoreError           the machine key cannot be stored or read
     ├── TransportError               talking to the cloud failed
     │    ├── Offline                 no answer (network down, DNS, timeout, 5xx)
     │    └── ServerRefused           the server answered with an error body (`code`, `extra`)
     └── LocalApiError                the local agent API failed (`status`, `code`, `extra`;
     pospal_protocol.errors)
          ├── AgentUnavailable        no agent answers on the local port
          │    └── AgentStarting      an agent answers but is still starting: wait a moment
          ├── NotGenuineService       the tray's channel is served by another account than the service
          └── AnswerRefused           an answer that fails verified_license()'s checks (`reason`)
               ├── BadProof           not proven by this machine's key for this challenge (forged, replayed)
               ├── OtherMachine       the token is bound to another PC (a proxy to another machine)
               └── LicenseExpired     the token's lease (or its trial, subscription) has run out
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pospal_protocol.errors import (  # noqa: F401  (re-exported: the agent's tree grows the protocol's)
    AgentStarting,
    AgentUnavailable,
    AnswerRefused,
    BadProof,
    ConfigError,
    Error,
    InvalidInput,
    KeyInvalid,
    KeySetRejected,
    LicenseExpired,
    LocalApiError,
    MachineMismatch,
    OfflineFileInvalid,
    OtherMachine,
    RequestSignatureInvalid,
    TokenError,
    TokenInvalid,
)


class LicenseFileRefused(InvalidInput):
    """An offline license file was refused and nothing changed; `code` is one of `unreadable`,
    `invalid`, `other_machine`, `expired`, `older`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreError(Error):
    """The data directory or the cache cannot be written."""


class KeyStoreError(StoreError):
    """The machine key cannot be stored or read (keyring and file both failed)."""


class TransportError(Error):
    """Talking to the cloud server failed."""


class Offline(TransportError):
    """The server could not be reached (network down, DNS, timeout or a 5xx answer)."""


class ServerRefused(TransportError):
    """The server answered with an error body: `code` (e.g. `seats_full`), `message` and `extra` fields."""

    def __init__(self, code: str, message: str, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.extra = dict(extra or {})


class NotGenuineService(LocalApiError):
    """The tray's channel (socket, pipe) is held by an account that is not the license service's: nothing
    is sent to it (`agent.link.unixchannel`, `agent.link.winpipe`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Another program pretends to be the POSPal License service: {detail}.")
        self.code = "not_genuine_service"
        self.detail = detail
