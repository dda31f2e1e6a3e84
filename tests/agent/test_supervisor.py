"""The tray in its own process (agent/link/supervisor.py, `pospal-agent run`): a child that aborts is
restarted
with backoff, a bounded number of times, and the local API answers the POS throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from agent.link import supervisor
from agent.link.supervisor import ChildSupervisor, describe_exit
from tests.agent.conftest import REPO, free_port

ABORT = [sys.executable, "-c", "import os; os.abort()"]
QUIT = [sys.executable, "-c", "raise SystemExit(0)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_an_aborting_child_is_restarted_with_backoff_then_given_up(tmp_path):
    waits = []
    sup = ChildSupervisor(ABORT, delays=(0.01, 0.02), max_failures=3, log_path=tmp_path / "tray.log")
    original = sup._stop.wait
    sup._stop.wait = lambda t: waits.append(t) or original(t)
    sup.start()
    assert sup.gave_up.wait(60)
    assert sup.starts == 3 and not sup.quit.is_set()
    assert waits == [0.01, 0.02], "backoff grows between restarts"
    if os.name == "posix":
        assert sup.exits == [-signal.SIGABRT] * 3


def test_a_child_that_quits_is_not_restarted():
    sup = ChildSupervisor(QUIT, delays=(0.01,)).start()
    assert sup.quit.wait(30)
    sup._thread.join(10)
    assert sup.starts == 1 and not sup.gave_up.is_set()


def test_stop_ends_the_child():
    sup = ChildSupervisor(SLEEP).start()
    for _ in range(200):
        if sup.pid:
            break
        time.sleep(0.05)
    pid = sup.pid
    assert pid
    sup.stop(timeout=10)
    assert not sup.running and sup.pid is None


def test_a_child_that_ran_long_enough_restarts_the_failure_count():
    now = iter(range(0, 10_000, 200))  # every child "ran" 200 s: healthy each time
    sup = ChildSupervisor(ABORT, delays=(0.0,), max_failures=2, healthy_s=120, monotonic=lambda: next(now))
    original = sup._stop.wait
    sup._stop.wait = lambda t: sup.starts >= 4 or original(t)
    sup.start()
    sup._thread.join(60)
    assert sup.starts == 4 and not sup.gave_up.is_set()


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-6, "killed by SIGABRT"),
        (3, "abort() (exit code 3)"),
        (0xC0000409, "fail-fast / abort (0xC0000409)"),
        (0xC0000135, "a DLL was not found (0xC0000135)"),
        (7, "exit code 7"),
    ],
)
def test_exit_reasons_are_readable(code, text):
    assert describe_exit(code) == text


def test_the_tray_command_never_imports_the_ui_in_the_agent_process():
    argv = supervisor.tray_command()
    assert argv[-2:] == ["run", "--tray-only"]


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_a_qt_abort_in_the_tray_never_stops_the_license_answer(tmp_path):
    """`pospal-agent run` with a display whose Qt platform plugin does not exist: Qt aborts in the tray
    child (as it does under Wine, or without ICU on Windows 10 1809); the agent answers throughout and
    restarts the tray with backoff."""
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSPAL_", "QT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        POSPAL_AGENT_PORT=str(port),
        POSPAL_DATA_DIR=str(data),
        POSPAL_SERVER_URL="http://127.0.0.1:9",
        DISPLAY=":99",
        QT_QPA_PLATFORM="no-such-plugin",
    )
    log = tmp_path / "agent.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        answers = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                r = requests.get(f"http://127.0.0.1:{port}/v1/license", timeout=5)
                answers.append(r.json()["license_state"])
            except requests.ConnectionError:
                pass
            if log.read_text().count("tray died (killed by SIGABRT)") >= 2:
                break
            time.sleep(0.1)
        text = log.read_text()
        assert text.count("tray died (killed by SIGABRT)") >= 2, text
        assert "restarting in 1 s" in text and "restarting in 2 s" in text
        r = requests.get(f"http://127.0.0.1:{port}/v1/license", timeout=5)
        assert r.status_code == 200 and r.json()["license_state"] == "license_missing"
        assert answers and set(answers) == {"license_missing"}
        assert "platform plugin" in (data / "tray.log").read_text().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_a_child_without_a_ui_is_not_restarted():
    sup = ChildSupervisor([sys.executable, "-c", f"raise SystemExit({supervisor.EXIT_NO_UI})"]).start()
    assert sup.gave_up.wait(30)
    assert sup.starts == 1 and not sup.quit.is_set()


def test_tray_only_without_a_ui_exits_with_the_no_ui_code(tmp_path, monkeypatch):
    from agent import cli

    monkeypatch.setattr(cli, "_tray_loader", lambda: (_ for _ in ()).throw(ImportError("no PySide6")))
    monkeypatch.setenv("POSPAL_DATA_DIR", str(tmp_path))
    assert cli.main(["run", "--tray-only"]) == supervisor.EXIT_NO_UI
