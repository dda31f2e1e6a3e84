"""What the server accepts as a fingerprint: known component names, one platform, enough components.

The names are stable API (docs/ARCHITECTURE.md "Fingerprint"). A request naming anything else is
refused, so a copied machine key cannot pad a fingerprint with made-up components to keep a majority
while it walks the binding to another PC. Trial and activation requests must also carry enough of
their platform's components (`MINIMUM`): a request with one component would otherwise look like a new
computer whenever that one value changed. The platform is told by the names: each platform has names
no other one uses; `disk_serial` and `mac` alone say nothing, so they never reach a minimum.

Strong components are the ones that identify the hardware or the installation and that a user cannot
simply set: a MAC address can be changed in a settings dialog and is shared by cloned VMs, so it does
not find an earlier trial.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.errors import InvalidRequest

COMPONENTS: Mapping[str, frozenset[str]] = {
    "windows": frozenset(
        ("machine_guid", "smbios_uuid", "baseboard_serial", "bios_serial", "disk_serial", "mac")
    ),
    "linux": frozenset(("machine_id", "product_uuid", "board_serial", "disk_serial", "mac")),
    "macos": frozenset(("platform_uuid", "serial")),
}
MINIMUM: Mapping[str, int] = {"windows": 3, "linux": 2, "macos": 2}
KNOWN = frozenset().union(*COMPONENTS.values())
WEAK = frozenset(("mac",))
_SHARED = frozenset(("disk_serial", "mac"))


def platform_of(fingerprint: Mapping[str, str]) -> str | None:
    """The platform whose own component names the fingerprint uses, or None when no name tells it.

    Raises `InvalidRequest` for an unknown name or names of two platforms.
    """
    unknown = sorted(set(fingerprint) - KNOWN)
    if unknown:
        raise InvalidRequest(
            f"Unknown fingerprint component {unknown[0]!r}; known ones: {', '.join(sorted(KNOWN))}."
        )
    platforms = {p for name in set(fingerprint) - _SHARED for p, names in COMPONENTS.items() if name in names}
    if len(platforms) > 1:
        raise InvalidRequest("The fingerprint mixes components of different platforms.")
    return platforms.pop() if platforms else None


def check_known(fingerprint: Mapping[str, str]) -> None:
    """Refuse (422) a fingerprint naming an unknown component or mixing platforms (refresh)."""
    platform_of(fingerprint)


def check_complete(fingerprint: Mapping[str, str]) -> str:
    """Refuse (422) a trial/activation fingerprint with fewer than its platform's minimum; return it."""
    platform = platform_of(fingerprint)
    needed = MINIMUM[platform] if platform else max(MINIMUM.values())
    if platform is None or len(fingerprint) < needed:
        raise InvalidRequest(
            f"The fingerprint has {len(fingerprint)} component(s); this needs at least {needed} of "
            f"{', '.join(sorted(COMPONENTS[platform or 'windows']))}. Update the agent, or check that it "
            "may read the computer's hardware identifiers."
        )
    return platform


def strong(fingerprint: Mapping[str, str]) -> dict[str, str]:
    """The components that may find an earlier trial (everything but the user-settable ones)."""
    return {name: value for name, value in fingerprint.items() if name not in WEAK}
