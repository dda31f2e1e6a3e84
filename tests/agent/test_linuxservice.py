"""agent/host/linuxservice.py and `pospal-agent run` beside the Linux system service: a user's own run (a
desktop autostart entry) is only the tray, so it never takes port 7421 while the service restarts.
(tests/agent/test_linux_launcher.py shows it with real accounts and processes.)"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from agent import cli
from agent.host import linuxservice

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the Linux system service")


@pytest.fixture
def no_account(monkeypatch) -> None:
    monkeypatch.setattr(linuxservice, "_account_uid", lambda: None)


def test_an_installed_unit_file_means_the_service_serves_even_while_it_is_stopped(
    tmp_path: Path, no_account
) -> None:
    units = tmp_path / "system"
    units.mkdir()
    assert not linuxservice.serves_for_others(tmp_path / "no-run-dir", [units])
    (units / "pospal-agent.service").write_text("[Service]\n")
    assert linuxservice.serves_for_others(tmp_path / "no-run-dir", [units])


def test_a_runtime_directory_of_another_account_means_the_service_serves(
    tmp_path: Path, monkeypatch, no_account
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert not linuxservice.serves_for_others(run, [])  # this account's own: a developer's agent
    monkeypatch.setattr(linuxservice.os, "geteuid", lambda: os.stat(run).st_uid + 1)
    assert linuxservice.serves_for_others(run, [])


def test_the_service_account_itself_is_never_sent_to_the_tray(tmp_path: Path, monkeypatch) -> None:
    units = tmp_path / "system"
    units.mkdir()
    (units / "pospal-agent.service").write_text("[Service]\n")
    monkeypatch.setattr(linuxservice, "_account_uid", os.geteuid)
    assert not linuxservice.serves_for_others(tmp_path, [units])


class FakeTray:
    """The tray supervisor: records its start; its Quit is already chosen."""

    def __init__(self) -> None:
        self.started = self.stopped = False
        self.quit = threading.Event()
        self.quit.set()

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def beside_the_service(monkeypatch) -> FakeTray:
    """The service is installed; any license core started here is a failure."""
    monkeypatch.setattr(linuxservice, "serves_for_others", lambda runtime_dir: True)
    monkeypatch.delenv("POSPAL_LISTEN_FD", raising=False)
    monkeypatch.delenv("POSPAL_LISTEN_SOCKET", raising=False)

    def no_core(*_args, **_kwargs):
        raise AssertionError("a second license core was started beside the service")

    monkeypatch.setattr(cli, "_serve", no_core)
    monkeypatch.setattr(cli, "_prepare", no_core)
    tray = FakeTray()
    monkeypatch.setattr(cli, "_tray_supervisor", lambda settings: tray)
    return tray


def test_a_users_run_with_a_display_is_only_the_tray(beside_the_service: FakeTray, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_has_display", lambda: True)
    assert cli.main(["run"]) == 0
    assert beside_the_service.started and beside_the_service.stopped


def test_a_users_run_without_a_display_runs_nothing(
    beside_the_service: FakeTray, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(cli, "_has_display", lambda: False)
    assert cli.main(["run"]) == 0
    assert "the POSPal License service serves this PC" in capsys.readouterr().err
    assert not beside_the_service.started


def test_a_users_headless_run_is_refused(beside_the_service: FakeTray, capsys) -> None:
    assert cli.main(["run", "--headless"]) == 1
    assert "compete for its port" in capsys.readouterr().err
