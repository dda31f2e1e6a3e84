"""What the tray sees of signed updates: `UpdateStatus`, and `UpdateDesk`, which answers it and checks now.

The running agent (`agent.selfupdate.launched`) owns an `agent.selfupdate.updater.Updater`; `UpdateDesk` wraps
it for `AgentControl.update_status()` and `check_updates()` (the tray's "Check for updates"). The status is
read from the install directory (`agent.selfupdate.install`: current, pending, failed versions, the launcher's
last swap) and the updater's last check. An update never blocks licensing: a failed check is an outcome with
its words (`check_outcome == "failed"`, `check_detail`), never an exception, and an agent that was not started
by the launcher (no install directory, or a build with no update root) answers `enabled=False`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import Error
from pospal_protocol import __version__

if TYPE_CHECKING:
    from agent.selfupdate.updater import Updater

log = logging.getLogger(__name__)

# The outcomes of a check (`UpdateStatus.check_outcome`).
UP_TO_DATE = "up_to_date"
STAGED = "staged"
FAILED = "failed"


@dataclass(frozen=True)
class UpdateStatus:
    """The agent's update state; times are ISO 8601 UTC strings or None.

    `enabled`: this agent checks for updates (started by the launcher, with an update root). `pending`:
    a verified version staged for the next idle moment. `check_*`: the last check (None: none yet), with
    the staged version or the failure's words in `check_detail`. `last_swap_*`: the launcher's last swap
    ("swapped", "rolled_back" or "fell_back", with its reason). `failed`: versions never offered again.
    """

    enabled: bool
    current: str
    pending: str | None = None
    check_outcome: str | None = None
    checked_at: str | None = None
    check_detail: str | None = None
    last_swap_outcome: str | None = None
    last_swap_from: str | None = None
    last_swap_to: str | None = None
    last_swap_reason: str | None = None
    failed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the local API body)."""
        body = asdict(self)
        body["failed"] = list(self.failed)
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpdateStatus:
        """Build from a local API JSON object; unknown keys are ignored."""

        def opt(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            enabled=bool(data.get("enabled", False)),
            current=str(data.get("current") or ""),
            pending=opt("pending"),
            check_outcome=opt("check_outcome"),
            checked_at=opt("checked_at"),
            check_detail=opt("check_detail"),
            last_swap_outcome=opt("last_swap_outcome"),
            last_swap_from=opt("last_swap_from"),
            last_swap_to=opt("last_swap_to"),
            last_swap_reason=opt("last_swap_reason"),
            failed=tuple(str(v) for v in data.get("failed") or ()),
        )


def off(current: str = __version__) -> UpdateStatus:
    """The status of an agent that does not update itself (not started by the launcher)."""
    return UpdateStatus(enabled=False, current=current)


class UpdateDesk:
    """`update_status` and `check_updates` over the running agent's `Updater` (see the module docstring)."""

    def __init__(self, updater: Updater) -> None:
        self._updater = updater

    def status(self) -> UpdateStatus:
        """The install's pointers, the launcher's last swap and the updater's last check."""
        u = self._updater
        install = u.install
        swap = install.last_swap()
        check = u.last_check

        def opt(value: Any) -> str | None:
            return None if value is None or value == "" else str(value)

        pending = install.pending()
        return UpdateStatus(
            enabled=u.enabled,
            current=u.current,
            pending=pending if pending != u.current else None,
            check_outcome=check[0] if check else None,
            checked_at=check[1].isoformat() if check else None,
            check_detail=check[2] if check else None,
            last_swap_outcome=opt(swap.get("outcome")),
            last_swap_from=opt(swap.get("from")),
            last_swap_to=opt(swap.get("to")),
            last_swap_reason=opt(swap.get("reason")),
            failed=tuple(sorted(install.failed())),
        )

    def check_now(self) -> UpdateStatus:
        """Check (and stage what is offered) now; a failure is recorded as the check's outcome."""
        u = self._updater
        if u.enabled:
            try:
                u.check_and_stage()
            except Error as exc:
                u.note_failure(exc.message)
                log.warning("update check (on demand) failed: %s", exc.message)
            except Exception as exc:  # a bug in a check must never reach the license service or the tray
                u.note_failure(type(exc).__name__)
                log.exception("update check (on demand) failed unexpectedly")
        return self.status()
