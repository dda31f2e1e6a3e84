"""packaging/linux/install.sh, run for real as root in a private mount namespace (`unshare --mount`): the
unit, sysusers and tmpfiles directories and /var/lib are empty directories of this test there, so nothing
of the host (nor another test's view of it) changes, except the `pospal-agent` account that the real
systemd-sysusers adds to /etc/passwd (removed by `remove --purge`, and by the finalizer).

Only `systemctl` is a stub (no systemd in the container): it records its calls and answers `show -p
Environment` from the installed unit, as systemd would. Where the test interpreter is out of other
accounts' reach (a pyenv under /root), `runuser` gives the account CAP_DAC_READ_SEARCH to load it
(tests/agent/test_linux_launcher.py explains); a real till's venv is readable by the account.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "packaging" / "linux" / "install.sh"
VENV = Path(sys.executable).parent.parent
MOUNTS = ("/etc/systemd/system", "/usr/lib/sysusers.d", "/usr/lib/tmpfiles.d", "/var/lib")

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: the systemd service"),
    pytest.mark.skipif(
        sys.platform.startswith("linux") and os.geteuid() != 0,
        reason="needs root: install.sh adds an account and mounts in its own namespace",
    ),
]

SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$SYSTEMCTL_LOG"
if [ "$1" = show ]; then
  sed -n 's/^Environment=//p' /etc/systemd/system/pospal-agent.service | tr '\\n' ' '
fi
"""

RUNUSER = """#!/bin/bash
# runuser -u ACCOUNT -- COMMAND...: as the real one, with the interpreter's reach when it needs it.
account="$2"; shift 3
exec setpriv --reuid="$account" --regid="$account" --clear-groups $CAPS "$@"
"""


def _reach_caps() -> str:
    probe = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/bin/sh", "-c",
         f"exec {VENV}/bin/pospal-agent --version"],
        cwd="/", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return "" if probe.returncode == 0 else "--inh-caps=+dac_read_search --ambient-caps=+dac_read_search"


class Root:
    """The namespace's directories (kept on disk between runs) and the stubs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.bin = base / "bin"
        self.bin.mkdir()
        for name, text in (("systemctl", SYSTEMCTL), ("runuser", RUNUSER)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        for mount in MOUNTS:
            self.path(mount).mkdir(parents=True)
        os.chmod(base, 0o755)
        os.chmod(self.path("/var/lib"), 0o755)
        self.log = base / "systemctl.log"
        self.caps = _reach_caps()

    def path(self, inside: str) -> Path:
        """Where `inside` (a path in the namespace) is on the host."""
        return self.base / "mnt" / inside.lstrip("/")

    def install_sh(self, *args: str) -> subprocess.CompletedProcess:
        """`install.sh ARGS` in a private mount namespace over this root's directories."""
        binds = " && ".join(f"mount --bind {self.path(m)} {m}" for m in MOUNTS)
        env = dict(os.environ, PATH=f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        env.update(SYSTEMCTL_LOG=str(self.log), CAPS=self.caps)
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c",
             f'{binds} && exec bash "$0" "$@"', str(SCRIPT), *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    def systemctl_calls(self) -> list[str]:
        """What install.sh asked systemd, in order."""
        return self.log.read_text().splitlines() if self.log.exists() else []


def _account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("pospal-agent")
    except KeyError:
        return None


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    """A fresh namespace root; the `pospal-agent` account must not exist yet (it is removed after)."""
    if _account() is not None:
        pytest.fail("a pospal-agent account exists on this host: not touching a real install")
    try:
        yield Root(tmp_path)
    finally:
        if _account() is not None:
            subprocess.run(["userdel", "pospal-agent"], check=False, capture_output=True)


def test_install_status_remove_and_purge_as_the_readme_says(root: Root) -> None:
    done = root.install_sh("install", "--venv", str(VENV))
    assert done.returncode == 0, done.stdout + done.stderr
    account = _account()
    assert account is not None and account.pw_dir == "/var/lib/pospal-agent"
    state = root.path("/var/lib/pospal-agent")
    mode = state.stat()
    assert (mode.st_uid, stat.S_IMODE(mode.st_mode)) == (account.pw_uid, 0o700)
    # The first version: the venv's agent, current, the account's.
    assert (state / "install" / "current").read_text().strip() == "1.0.0"
    entry = state / "install" / "versions" / "1.0.0" / "pospal-agent"
    assert entry.read_text().endswith(f'exec {VENV}/bin/pospal-agent "$@"\n')
    assert entry.stat().st_uid == account.pw_uid
    unit = root.path("/etc/systemd/system/pospal-agent.service").read_text()
    assert f"ExecStart={VENV}/bin/pospal-launcher --install /var/lib/pospal-agent/install" in unit
    assert root.systemctl_calls() == ["daemon-reload", "enable pospal-agent", "restart pospal-agent"]

    status = root.install_sh("status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current"] == "1.0.0"

    again = root.install_sh("install", "--venv", str(VENV))  # after a venv upgrade: same version, kept
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (state / "install" / "versions").iterdir()) == ["1.0.0"]

    removed = root.install_sh("remove")
    assert removed.returncode == 0, removed.stderr
    assert not root.path("/etc/systemd/system/pospal-agent.service").exists()
    assert (state / "install" / "current").exists() and _account() is not None  # kept for a re-install
    assert "disable --now pospal-agent" in root.systemctl_calls()
    assert root.install_sh("status").returncode == 1  # no unit: nothing to ask

    purged = root.install_sh("remove", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not state.exists() and _account() is None
    assert not root.path("/usr/lib/sysusers.d/pospal-agent.conf").exists()
