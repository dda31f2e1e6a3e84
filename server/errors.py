"""Server error tree. Every error the server raises on purpose is an `Error`.

Error
├── ConfigError            a setting is missing or malformed (names the variable)
├── SigningError           signing keys missing, unreadable or inconsistent
├── BillingError           the billing provider failed or answered nonsense
│   └── WebhookSignatureInvalid  a webhook's signature is missing, wrong or too old
├── MailError              an email could not be sent
│   ├── MailTemporaryError the provider may accept it later (unreachable, timeout, 5xx, 429)
│   ├── MailConfigError    our mail settings are wrong (credentials, sender); waits for the operator
│   └── MailRejected       the provider will never accept it (bad address, invalid payload)
├── TemplateError          an unknown email template or a missing context key
└── ApiError               answered to clients as {"error", "message", ...extra} with `status`
    ├── InvalidRequest     422 invalid_request
    ├── BadSignature       401 bad_signature
    ├── UnknownMachine     401 unknown_machine
    ├── Replay             409 replay
    ├── BadCode            401 bad_code
    ├── CodeExpired        401 code_expired
    ├── TooManyAttempts    429 too_many_attempts
    ├── RateLimited        429 rate_limited (+ retry_after)
    ├── SeatsFull          409 seats_full (+ terminals)
    ├── NotFound           404 not_found
    ├── NoSubscription     404 no_subscription
    ├── ServerBusy         503 busy (+ retry_after)
    └── DatabaseUnavailable 503 unavailable (+ retry_after)
"""

from __future__ import annotations

from typing import Any

from pospal_protocol.errors import HTTP_STATUS, http_status


class Error(Exception):
    """Root of every error the server raises on purpose."""


class ConfigError(Error):
    """A setting is missing or malformed; the message names the environment variable.

    `problems` holds one line per problem when several were found at once (`Settings.from_env` reads
    every setting before it raises), so `pospal-server check` and `run` can name each on its own line.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = problems or (message,)


class SigningError(Error):
    """Signing keys are missing, unreadable or do not match the database."""


class BillingError(Error):
    """The billing provider failed or answered something we cannot use."""


class ImportRefused(Error):
    """An import file (`pospal-server import-pospal1`) cannot be read at all; nothing was written."""


class NotAdopted(BillingError):
    """A provider subscription that is not POSPal's (another price, not made by our checkout)."""


class WebhookSignatureInvalid(BillingError):
    """A billing webhook's signature header is missing, does not match, or is too old."""


class MailError(Error):
    """An email could not be handed to the provider."""


class MailTemporaryError(MailError):
    """Sending failed in a way that may work later; the outbox retries with backoff.

    `retry_after` (seconds) is the provider's own `Retry-After`, which the outbox waits at least.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MailConfigError(MailError):
    """The provider refused our configuration (credentials, sender, TLS): no message can go out.

    The outbox keeps the message pending and alerts the operator; it goes out once the setting is fixed.
    """


class MailRejected(MailError):
    """The provider refused the message for good; the outbox marks it failed."""


class TemplateError(Error):
    """An email template is unknown, or its context lacks a key it needs."""


class ApiError(Error):
    """An error answered to the client as JSON: ``{"error": code, "message": message, **extra}``.

    A subclass names its `code`; its HTTP `status` comes from `pospal_protocol.errors.HTTP_STATUS`, the one
    map of codes to statuses (a code missing from it is a programming error, caught at import).
    """

    status: int = 400
    code: str = "bad_request"
    default_message: str = "The request was refused."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code not in HTTP_STATUS:
                raise TypeError(f"{cls.__name__}: {cls.code!r} is not in pospal_protocol.errors.HTTP_STATUS")
            if "status" in cls.__dict__ and cls.status != HTTP_STATUS[cls.code]:
                raise TypeError(f"{cls.__name__}: status {cls.status} is not HTTP_STATUS[{cls.code!r}]")
            cls.status = HTTP_STATUS[cls.code]

    def __init__(
        self, message: str | None = None, *, status: int | None = None, code: str | None = None, **extra: Any
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
            self.status = http_status(code, self.status)
        if status is not None:
            self.status = status
        self.extra = extra
        self.headers: dict[str, str] = {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        """Return the JSON body sent to the client."""
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(ApiError):
    """The request body or headers are malformed."""

    code, default_message = "invalid_request", "The request is not valid."


class BadSignature(ApiError):
    """A machine signature is missing or does not verify."""

    code, default_message = "bad_signature", "The request signature does not verify."


class UnknownMachine(ApiError):
    """The machine id in a signed request is not known."""

    code, default_message = "unknown_machine", "This machine is not known to the server."


class Replay(ApiError):
    """A signed request reused a nonce or carried a timestamp outside the window."""

    code, default_message = "replay", "This request was already used or is too old."


class BadCode(ApiError):
    """The emailed code is wrong, or there is no live code for this email."""

    code, default_message = "bad_code", "The code is not correct."


class CodeExpired(ApiError):
    """The emailed code has expired."""

    code, default_message = "code_expired", "The code has expired. Ask for a new one."


class TooManyAttempts(ApiError):
    """Too many wrong guesses for one code."""

    code, default_message = "too_many_attempts", "Too many wrong codes. Ask for a new one."


class RateLimited(ApiError):
    """Too many requests; `retry_after` says how many seconds to wait."""

    code, default_message = "rate_limited", "Too many requests. Try again later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, retry_after=int(retry_after))
        self.headers = {"Retry-After": str(int(retry_after))}


class SeatsFull(ApiError):
    """Every seat of the subscription is taken; `terminals` lists the active ones."""

    code = "seats_full"
    default_message = "All terminals of this subscription are in use. Remove one or add a terminal."

    def __init__(self, terminals: list[dict[str, Any]], message: str | None = None) -> None:
        super().__init__(message, terminals=terminals)


class NotFound(ApiError):
    """The thing asked for does not exist."""

    code, default_message = "not_found", "Not found."


class NoSubscription(ApiError):
    """The customer has no subscription to act on."""

    code, default_message = "no_subscription", "There is no subscription for this email."


class ServerBusy(ApiError):
    """The database stayed locked for longer than the busy timeout; the client should retry shortly."""

    code, default_message = "busy", "The server is busy. Try again in a moment."

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=int(retry_after))
        self.headers = {"Retry-After": str(int(retry_after))}


class DatabaseUnavailable(ApiError):
    """The database did not answer (down, restarting, unreachable); agents retry after `retry_after`."""

    code = "unavailable"
    default_message = "The license server cannot reach its database. Try again in a moment."

    def __init__(self, message: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=int(retry_after))
        self.headers = {"Retry-After": str(int(retry_after))}
