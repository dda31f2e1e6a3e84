"""Whether the system service (packaging/linux/pospal-agent.service) serves this PC, seen from a user's
`pospal-agent run`.

With the service installed, a user's own `pospal-agent run` (a desktop autostart entry, a shortcut) must
not start a second license core: most of the time the port is the service's and it would only attach its
tray, but during a service restart 7421 is free for a moment, and a user's core that took it then would
keep the POS on the user's account until the next reboot. So such a run is only the tray.

The service counts as installed when its unit file is in one of systemd's unit directories, or when the
tray channel's runtime directory belongs to another account (the service made it; systemd removes it while
the service is stopped, which is why the unit file is looked for too). This is a courtesy to the service,
not a defence: the till user cannot bind the port while the launcher holds it, whatever runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from agent.link.unixchannel import DEFAULT_RUNTIME_DIR

UNIT = "pospal-agent.service"
ACCOUNT = "pospal-agent"
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)


def _account_uid() -> int | None:
    if sys.platform == "win32":
        return None
    import pwd

    try:
        return pwd.getpwnam(ACCOUNT).pw_uid
    except KeyError:
        return None


def serves_for_others(runtime_dir: Path | None, unit_dirs: Iterable[Path] = UNIT_DIRS) -> bool:
    """True when the service serves this PC and this process is not the service's account."""
    if sys.platform == "win32":
        return False
    uid = os.geteuid()
    if uid == _account_uid():
        return False
    if any((d / UNIT).is_file() for d in unit_dirs):
        return True
    try:
        owner = (runtime_dir or DEFAULT_RUNTIME_DIR).stat().st_uid
    except OSError:
        return False
    return owner != uid
