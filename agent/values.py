"""The plain value types the agent hands its clients: Checkout, Terminal, AddTerminal, Diagnostics.

They live apart from `agent.control` (the AgentControl protocol and InProcessControl) so that
`agent.core.service`, `agent.localapi.remote` and `agent.control` all import them from here and none of those
modules imports another at run time. Each is a frozen dataclass with its JSON form (the local API body).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.core.state import LicenseStatus


@dataclass(frozen=True)
class Checkout:
    """A Checkout session created for this machine: open `url` in a browser, then wait on `checkout_id`."""

    checkout_id: str
    url: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return asdict(self)


@dataclass(frozen=True)
class Terminal:
    """One activated terminal of the license; times are ISO 8601 UTC strings or None.

    `active` says whether it holds one of the subscription's seats; when not, `reason` says why ("idle":
    unseen for the server's idle days; "seats_exceeded": over the quantity). An active one licensed by
    file says "offline_license"; one the owner removed that still runs its license file says
    "removed_offline_license", and `seat_held_until` says when its seat frees (unless its deactivation file
    is uploaded first).
    """

    machine_id: str
    terminal_name: str | None
    activated_at: str | None
    last_seen: str | None
    this_machine: bool
    active: bool = True
    reason: str | None = None
    seat_held_until: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Terminal:
        """Build from a server or local API JSON object; unknown keys are ignored."""
        return cls(
            machine_id=str(data["machine_id"]),
            terminal_name=data.get("terminal_name"),
            activated_at=data.get("activated_at"),
            last_seen=data.get("last_seen"),
            this_machine=bool(data.get("this_machine", False)),
            active=bool(data.get("active", True)),
            reason=data.get("reason"),
            seat_held_until=data.get("seat_held_until"),
        )


@dataclass(frozen=True)
class AddTerminal:
    """ "Add this terminal": the quantity now and after, and the prorated charge (minor units) made now."""

    quantity_now: int
    quantity_new: int
    amount_due: int
    currency: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AddTerminal:
        """Build from a server or local API JSON object; unknown keys are ignored."""
        return cls(
            quantity_now=int(data["quantity_now"]),
            quantity_new=int(data["quantity_new"]),
            amount_due=int(data.get("amount_due") or 0),
            currency=str(data.get("currency") or "eur"),
        )


@dataclass(frozen=True)
class FingerprintSource:
    """One fingerprint component as diagnostics show it: its name, whether its source worked, its hash."""

    name: str
    ok: bool
    hash: str | None


@dataclass(frozen=True)
class Diagnostics:
    """What support needs: fingerprint sources, the last sync's outcome, where data lives, versions."""

    components: tuple[FingerprintSource, ...]
    last_sync_result: str | None
    data_dir: str
    server_url: str
    version: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        return {
            "components": [asdict(c) for c in self.components],
            "last_sync_result": self.last_sync_result,
            "data_dir": self.data_dir,
            "server_url": self.server_url,
            "version": self.version,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostics:
        """Build from the local API body."""
        return cls(
            components=tuple(
                FingerprintSource(name=str(c["name"]), ok=bool(c["ok"]), hash=c.get("hash"))
                for c in data.get("components", [])
            ),
            last_sync_result=data.get("last_sync_result"),
            data_dir=str(data.get("data_dir", "")),
            server_url=str(data.get("server_url", "")),
            version=str(data.get("version", "")),
            extra=dict(data.get("extra") or {}),
        )

    def support_report(self) -> str:
        """A plain-text report a person can copy into a support email (hashes only, no raw values)."""
        lines = [
            f"POSPal License Agent {self.version}",
            f"server: {self.server_url}",
            f"data dir: {self.data_dir}",
            f"last sync: {self.last_sync_result or 'never'}",
            "fingerprint:",
        ]
        lines += [f"  {c.name}: {'ok' if c.ok else 'unavailable'} {c.hash or '-'}" for c in self.components]
        lines += [f"{k}: {v}" for k, v in sorted(self.extra.items())]
        return "\n".join(lines)


# What `subscribe` calls on every status change (from a background thread).
StatusCallback = Callable[["LicenseStatus"], None]
