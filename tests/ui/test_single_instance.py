"""One tray per user: a second launch (a real second process) makes the first show its window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ui.single_instance import SingleInstance

REPO = Path(__file__).resolve().parents[2]
SECOND_LAUNCH = """
import sys
from PySide6.QtCore import QCoreApplication
from ui.single_instance import SingleInstance
app = QCoreApplication([])
print("claimed" if SingleInstance(sys.argv[1]).claim() else "deferred")
"""


def launch_second(name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.Popen(
        [sys.executable, "-c", SECOND_LAUNCH, name], env=env, stdout=subprocess.PIPE, text=True
    )


def test_second_launch_asks_the_first_to_show_and_exits(qtbot):
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    first = SingleInstance(name)
    assert first.claim()
    try:
        with qtbot.waitSignal(first.show_requested, timeout=15000):
            second = launch_second(name)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0 and out.strip() == "deferred"
    finally:
        first.release()


CLAIM_AND_HANG = """
import sys
from PySide6.QtCore import QCoreApplication
from ui.single_instance import SingleInstance
app = QCoreApplication([])
instance = SingleInstance(sys.argv[1])
print("claimed" if instance.claim() else "deferred", instance.server.fullServerName(), flush=True)
sys.stdin.read()  # hold the claim until killed
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and socket files are POSIX")
def test_a_stale_socket_from_a_crash_does_not_block_a_new_instance(qtbot):
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    crashed = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, name],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        verdict, socket_path = crashed.stdout.readline().split()
        assert verdict == "claimed"
        os.kill(crashed.pid, signal.SIGKILL)  # a crash: no clean-up runs
        crashed.wait(timeout=30)
        assert Path(socket_path).exists()  # what the crash left behind: a socket file nobody answers on
        fresh = SingleInstance(name)
        try:
            assert fresh.claim()
        finally:
            fresh.release()
    finally:
        if crashed.poll() is None:
            crashed.kill()
            crashed.wait(timeout=30)
        crashed.stdin.close()
        crashed.stdout.close()


def test_after_quit_the_next_launch_becomes_the_instance():
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    first = SingleInstance(name)
    assert first.claim()
    first.release()
    second = launch_second(name)
    out, _ = second.communicate(timeout=30)
    assert out.strip() == "claimed"
