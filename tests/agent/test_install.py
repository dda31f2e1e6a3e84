"""agent/selfupdate/install.py: the first version of an install made from an agent installed another way (the
Linux
service's venv), as `packaging/linux/install.sh` makes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.selfupdate.install import ENTRY, Install, main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="seed writes a POSIX entry script")


def _agent(tmp_path: Path, says: str) -> Path:
    entry = tmp_path / "venv" / "bin" / "pospal-agent"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(f'#!/bin/sh\necho "{says} $*"\n')
    entry.chmod(0o755)
    return entry


def test_seed_makes_a_version_that_runs_the_installed_agent_and_points_current_at_it(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    assert install.seed("1.0.0", _agent(tmp_path, "venv agent")) is True
    assert install.current() == "1.0.0"
    ran = subprocess.run([str(install.entry("1.0.0")), "run", "--headless"], capture_output=True, text=True)
    assert ran.stdout.strip() == "venv agent run --headless"


def test_reseeding_after_an_upgrade_of_the_venv_drops_the_old_seed_that_would_lie(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    entry = _agent(tmp_path, "venv agent")
    install.seed("1.0.0", entry)
    assert install.seed("1.1.0", entry) is True  # the operator upgraded the venv and ran install.sh again
    assert install.installed() == ["1.1.0"] and install.current() == "1.1.0"


def test_a_newer_version_the_till_updated_to_stays_current(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    install.seed("1.0.0", _agent(tmp_path, "venv agent"))
    newer = install.versions / "1.2.0"
    newer.mkdir()
    (newer / ENTRY).write_text("#!/bin/sh\n")
    install.set_current("1.2.0", previous="1.0.0")
    assert install.seed("1.0.0", _agent(tmp_path, "venv agent")) is False  # install.sh run again, same venv
    assert install.current() == "1.2.0"


def test_the_command_line_refuses_an_entry_that_is_not_there(tmp_path: Path, capsys) -> None:
    assert main(["seed", str(tmp_path / "install"), str(tmp_path / "nothing")]) == 1
    assert "not an executable agent entry" in capsys.readouterr().err
    assert main(["seed"]) == 2


def test_a_command_seed_runs_its_command_and_a_newer_seed_of_it_replaces_it(tmp_path: Path) -> None:
    """The Windows service's seed (a command, no entry script): what the launcher starts for it."""
    install = Install(tmp_path / "install")
    command = [sys.executable, "-c", "import sys; print('agent', *sys.argv[1:])"]
    assert install.seed("1.0.0", command, script=False) is True
    assert install.installed() == ["1.0.0"] and not (install.versions / "1.0.0" / ENTRY).exists()
    assert install.command("1.0.0") == command and install.entry("1.0.0") == Path(sys.executable)
    ran = subprocess.run([*install.command("1.0.0"), "run", "--headless"], capture_output=True, text=True)
    assert ran.stdout == "agent run --headless\n"
    assert install.seed("1.0.1", command, script=False) is True  # the installer upgraded Program Files
    assert install.installed() == ["1.0.1"] and install.current() == "1.0.1"


def test_a_command_seed_leaves_a_newer_staged_update_current(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    staged = install.versions / "1.2.0"
    staged.mkdir(parents=True)
    (staged / ENTRY).write_text("#!/bin/sh\n")
    install.set_current("1.2.0", previous=None)
    assert install.seed("1.0.0", [sys.executable], script=False) is False  # an older installer re-run
    assert install.current() == "1.2.0" and install.installed() == ["1.0.0", "1.2.0"]
    assert install.command("1.2.0") == [str(staged / ENTRY)]


def test_a_garbled_seed_is_no_version(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    (install.versions / "1.0.0").mkdir(parents=True)
    (install.versions / "1.0.0" / "seeded-from").write_text("[not json")
    assert install.installed() == [] and install.current() is None
