"""packaging/linux: the agent's systemd system unit runs it under pospal-launcher and its own account,
hardened, with its data, marks and versions in StateDirectory and the trays' socket in RuntimeDirectory;
systemd-analyze verifies it. (tests/agent/test_linux_launcher.py runs that layout with real processes.)"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LINUX = Path(__file__).resolve().parent.parent / "packaging" / "linux"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
}


def _service() -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((LINUX / "pospal-agent.service").read_text(encoding="utf-8"))
    return dict(parser["Service"])


def test_the_agent_runs_under_the_launcher_as_its_own_account_from_boot() -> None:
    service = _service()
    assert service["User"] == service["Group"] == "pospal-agent"
    # The versions live in the state directory, which the account writes and no till user enters.
    assert service["ExecStart"].endswith("/bin/pospal-launcher --install /var/lib/pospal-agent/install")
    assert service["KillMode"] == "mixed"  # the launcher stops the agent it runs, not systemd beside it
    assert service["Restart"] == "on-failure"
    sysusers = (LINUX / "pospal-agent.sysusers.conf").read_text(encoding="utf-8")
    # The account's home is the state directory: the release build's marks (agent/vault/marks.py) live there.
    assert "u pospal-agent - " in sysusers and sysusers.rstrip().endswith("/var/lib/pospal-agent")


def test_data_and_marks_only_the_service_enters_and_the_socket_directory_others_may_only_read() -> None:
    service = _service()
    assert service["StateDirectory"] == "pospal-agent" and service["StateDirectoryMode"] == "0700"
    env = service["Environment"]  # configparser keeps the last Environment= line; check the file too
    text = (LINUX / "pospal-agent.service").read_text(encoding="utf-8")
    assert "Environment=POSPAL_DATA_DIR=/var/lib/pospal-agent/data" in text
    assert "Environment=HOME=/var/lib/pospal-agent" in text
    assert env == "POSPAL_RUNTIME_DIR=/run/pospal-agent"
    assert service["RuntimeDirectory"] == "pospal-agent" and service["RuntimeDirectoryMode"] == "0755"


def test_the_unit_is_hardened() -> None:
    service = _service()
    for key, value in HARDENING.items():
        assert service.get(key) == value, key


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    entry = Path(sys.executable).with_name("pospal-launcher")
    assert entry.exists(), "the pospal-launcher entry point is not installed (bash scripts/install.sh)"
    copy = tmp_path / "pospal-agent.service"
    text = (LINUX / "pospal-agent.service").read_text(encoding="utf-8")
    copy.write_text(text.replace("/opt/pospal-agent/venv/bin/pospal-launcher", str(entry)), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pospal-agent" not in result.stderr, result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="Linux only: the release marks go to the account's home")
@pytest.mark.parametrize("release", [True, False])
def test_the_marks_land_in_the_state_directory_only_the_service_writes(monkeypatch, release: bool) -> None:
    from agent import flavour
    from agent.vault import marks

    sysusers = (LINUX / "pospal-agent.sysusers.conf").read_text(encoding="utf-8")
    home = Path(sysusers.split()[-1])
    state = Path("/var/lib") / _service()["StateDirectory"]
    monkeypatch.setattr(flavour, "is_release", lambda: release)
    monkeypatch.setattr(marks, "_home", lambda: home)
    store = marks.default_store(state / "data")  # POSPAL_DATA_DIR in the unit
    assert isinstance(store, marks.FileMarkStore)
    assert store.path.is_relative_to(state) and not store.path.is_relative_to(state / "data")


def test_the_state_directory_exists_before_the_first_start_as_the_unit_makes_it() -> None:
    """install.sh seeds the first version as the account before systemd ever starts the unit."""
    rows = [line.split() for line in (LINUX / "pospal-agent.tmpfiles.conf").read_text().splitlines()]
    rows = [r for r in rows if r and not r[0].startswith("#")]
    state = "/var/lib/" + _service()["StateDirectory"]
    assert ["d", state, "0700", "pospal-agent", "pospal-agent", "-"] in rows
    assert ["d", state + "/install", "0700", "pospal-agent", "pospal-agent", "-"] in rows


def test_install_sh_is_valid_bash_and_seeds_from_the_venv_it_installs() -> None:
    script = LINUX / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    text = script.read_text(encoding="utf-8")
    assert '-m agent.selfupdate.install seed "$install_dir" "$venv/bin/pospal-agent"' in text
    assert 'install_dir="$state/install"' in text and "state=/var/lib/pospal-agent" in text
