"""The update cycle's rules without processes: when a swap may happen, how a build is staged, the
schedule's waits, the settings, and the install directory's pointers."""

from __future__ import annotations

import random
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.selfupdate.install import ENTRY, Install
from agent.selfupdate.updater import JITTER, RETRY_S, SwapPolicy, Updater, UpdateSettings, stage
from agent.selfupdate.updates import UpdateError
from pospal_protocol.clock import FakeClock


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 7, hour, minute)


def test_a_swap_waits_for_an_idle_pos_or_the_night_window() -> None:
    policy = SwapPolicy(idle_s=300, window=(120, 300))
    assert not policy.allows(10, at(12))  # lunch rush: requests every few seconds
    assert policy.allows(301, at(12))  # the till has been quiet for five minutes
    assert policy.allows(0, at(2, 30))  # inside 02:00-05:00, even with a POS polling
    assert not policy.allows(0, at(5, 0))


def test_a_night_window_may_cross_midnight_or_be_off() -> None:
    late = SwapPolicy(idle_s=300, window=(23 * 60, 60))
    assert late.allows(0, at(23, 30)) and late.allows(0, at(0, 30))
    assert not late.allows(0, at(12))
    assert not SwapPolicy(idle_s=300, window=None).allows(0, at(3))


def test_settings_from_the_environment() -> None:
    s = UpdateSettings.from_env(
        "https://lic.example",
        {"POSPAL_UPDATE_IDLE_S": "60", "POSPAL_UPDATE_WINDOW": "01:30-04:00"},
    )
    assert s == UpdateSettings(url="https://lic.example/updates", idle_s=60.0, window=(90, 240))
    assert UpdateSettings.from_env("https://x", {"POSPAL_UPDATE_WINDOW": "off"}).window is None
    with pytest.raises(ConfigError, match="POSPAL_UPDATE_WINDOW"):
        UpdateSettings.from_env("https://x", {"POSPAL_UPDATE_WINDOW": "night"})


def test_checks_are_daily_with_jitter_and_hourly_after_a_failure(tmp_path: Path) -> None:
    updater = Updater(Install(tmp_path), None, terminal=lambda: "m_a", rng=random.Random(1))
    waits = [updater.next_wait(failed=False) for _ in range(200)]
    assert min(waits) >= 86400 * (1 - JITTER) and max(waits) <= 86400 * (1 + JITTER)
    assert max(waits) - min(waits) > 3600  # a fleet spreads out instead of checking in lock-step
    assert updater.next_wait(failed=True) == RETRY_S


def _zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_a_staged_build_appears_whole_beside_the_running_one(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    build = _zip(tmp_path / "b.zip", {ENTRY: "#!/bin/sh\n", "agent/x.py": "pass\n"})
    final = stage(install, build, "1.1.0")
    assert (final / ENTRY).exists() and (final / "agent" / "x.py").exists()
    assert install.installed() == ["1.1.0"]
    assert not [p for p in install.versions.iterdir() if p.name.startswith(".staging")]


def test_a_build_without_the_entry_is_not_staged(tmp_path: Path) -> None:
    install = Install(tmp_path / "install")
    with pytest.raises(UpdateError, match=ENTRY):
        stage(install, _zip(tmp_path / "b.zip", {"README": "no program here"}), "1.1.0")
    assert install.installed() == []


def _version(install: Install, v: str) -> None:
    d = install.versions / v
    d.mkdir(parents=True)
    (d / ENTRY).write_text("")


def test_pointers_and_failed_versions(tmp_path: Path) -> None:
    install = Install(tmp_path)
    _version(install, "1.0.0")
    _version(install, "1.1.0")
    assert install.current() == "1.1.0"  # no pointer yet: the newest installed
    install.set_current("1.0.0", previous=None)
    assert install.current() == "1.0.0"
    install.set_pending("1.1.0")
    assert install.pending() == "1.1.0"
    install.mark_failed("1.1.0", "did not answer")
    assert install.pending() is None  # a failed version is never swapped to again
    (tmp_path / "current").write_text("../../etc\n")
    assert install.current() == "1.1.0"  # a pointer that is not a version is ignored


def test_swap_due_only_with_a_pending_version_and_the_policy(tmp_path: Path) -> None:
    install = Install(tmp_path)
    _version(install, "1.1.0")
    clock = FakeClock()
    settings = UpdateSettings(idle_s=300, window=None)
    updater = Updater(install, None, terminal=lambda: "m_a", settings=settings, clock=clock, current="1.0.0")
    assert not updater.swap_due(idle_s=1000)
    install.set_pending("1.1.0")
    clock.advance(2)
    assert not updater.swap_due(idle_s=5)
    assert updater.swap_due(idle_s=1000)
