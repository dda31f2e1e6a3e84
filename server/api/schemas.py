"""Request and response bodies of the core API, as pydantic models (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from pospal_protocol import text
from pospal_protocol.emails import EMAIL_PATTERN, MAX_LENGTH

# No control characters anywhere: PostgreSQL text cannot hold NUL, and nothing legitimate needs them.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=3,
        max_length=MAX_LENGTH,
        pattern=EMAIL_PATTERN,
    ),
    AfterValidator(text.check),
]
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=12, pattern=r"^[0-9 -]+$")
]
PublicKey = Annotated[str, StringConstraints(min_length=40, max_length=64, pattern=r"^[A-Za-z0-9_\-+/=]+$")]
# A name a person typed: text only, no C1, bidi or other format characters either (pospal_protocol.text).
TerminalName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=100, pattern=_PRINTABLE),
    AfterValidator(text.check),
]
RestaurantName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(text.check)
]
ComponentName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
ComponentHash = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[0-9a-fA-F]+$")]
Fingerprint = Annotated[dict[ComponentName, ComponentHash], Field(max_length=16)]
Kid = Annotated[str, StringConstraints(max_length=64, pattern=_PRINTABLE)]
Locale = Literal["en", "el"]
MachineId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=_PRINTABLE)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TrialRequest(_Body):
    """Start (or resume) the trial of this machine."""

    fingerprint: Fingerprint
    machine_public_key: PublicKey
    terminal_name: TerminalName | None = None
    provisional_started_at: datetime | None = None
    known_kids: Annotated[list[Kid], Field(max_length=32)] = []
    # Optional: where to send the reminder 3 days before the trial ends (the latest one given wins).
    email: Email | None = None
    locale: Locale | None = None
    # An old POSPal till with an old trial file: the old app's hardware id of this PC (sha256 hex), so an
    # imported trial still running (`pospal1_trials`) keeps its remaining days.
    pospal1_hardware_id: Annotated[str, Field(pattern="^[0-9a-f]{64}$")] | None = None

    @field_validator("provisional_started_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("provisional_started_at needs a time zone (use ...Z)")
        return value


class TokenAnswer(BaseModel):
    """A signed token, and a key-set document when the agent needs new trusted keys."""

    token: str
    keyset: str | None = None


class CodeRequest(_Body):
    """Ask for a 6-digit code by email."""

    email: Email
    purpose: Literal["activate", "portal", "terminals", "owner"]
    locale: Locale | None = None


class CodeAnswer(BaseModel):
    """Always the same answer, whether or not the email is a customer's."""

    sent: bool = True


class ActivationRequest(_Body):
    """Bind this machine to the customer's license, proven by an emailed code or a finished checkout."""

    email: Email
    code: Code | None = None
    checkout_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_PRINTABLE)] | None = (
        None
    )
    fingerprint: Fingerprint
    machine_public_key: PublicKey
    terminal_name: TerminalName | None = None
    known_kids: Annotated[list[Kid], Field(max_length=32)] = []


class ActivationAnswer(TokenAnswer):
    """The license token and the ids the agent stores."""

    machine_id: str
    license_id: str


class RefreshRequest(_Body):
    """A signed refresh: the machine's current fingerprint and the key ids it trusts."""

    fingerprint: Fingerprint = {}
    known_kids: Annotated[list[Kid], Field(max_length=32)] = []


class OkAnswer(BaseModel):
    """Done."""

    ok: bool = True


class EmptyRequest(_Body):
    """No fields."""


class ProofRequest(_Body):
    """Email plus code, for callers that are not a signed machine."""

    email: Email | None = None
    code: Code | None = None


class Terminal(BaseModel):
    """One terminal of a license."""

    machine_id: str
    terminal_name: str | None
    activated_at: datetime
    last_seen: datetime | None
    this_machine: bool
    # Whether it holds a seat now; when not, `reason` says why: "idle" (unseen for POSPAL_SEAT_IDLE_DAYS)
    # or "seats_exceeded"; an active one may say "offline_license" (licensed by file).
    active: bool = True
    reason: str | None = None
    # A terminal licensed by file keeps its seat until its file ends, even once removed (reason
    # "removed_offline_license"): it cannot be told, and sells until then.
    seat_held_until: datetime | None = None
    # The agent version it last reported in a refresh (`server/fleet.py`); None before its first one.
    agent_version: str | None = None


class TerminalsAnswer(BaseModel):
    """The license's terminals (not removed), active ones first; `seats` is the subscription's quantity."""

    terminals: list[Terminal]
    seats: int | None = None


class RemoveTerminalRequest(ProofRequest):
    """Free the seat of one terminal."""

    machine_id: MachineId


class RemoveAnswer(OkAnswer):
    """Removed. `seat_held_until`: a terminal licensed by file keeps its seat until its file ends (it sells
    on until then) unless its deactivation file is uploaded on `/offline`; `message` says so."""

    seat_held_until: datetime | None = None
    message: str | None = None


class RenameTerminalRequest(ProofRequest):
    """Give one terminal of the license a new name (issue 27)."""

    machine_id: MachineId
    terminal_name: Annotated[TerminalName, StringConstraints(min_length=1)]


class KeepTerminalsRequest(ProofRequest):
    """The owner's choice of the terminals that keep their seats (at most the quantity)."""

    machine_ids: Annotated[list[MachineId], Field(min_length=1, max_length=100)]


class OwnerProofRequest(_Body):
    """Prove the owner's email on this machine (signed by it): owner actions for 15 minutes."""

    email: Email
    code: Code
    machine_public_key: PublicKey | None = None


class OwnerProofAnswer(BaseModel):
    """Owner actions from this machine are allowed until `expires_at`."""

    ok: bool = True
    expires_at: datetime


class PortalRequest(ProofRequest):
    """Open the billing portal; `return_url` must be on this server or an allowed origin."""

    return_url: Annotated[str, StringConstraints(max_length=2000, pattern=_PRINTABLE)] | None = None
    # The agent's language: the portal opens in it (Stripe's `locale`); absent, the browser's.
    locale: Locale | None = None


class PortalAnswer(BaseModel):
    """A one-time portal URL."""

    url: str
