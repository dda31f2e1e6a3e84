"""One tray per user: a second launch (a real second process) makes the first show its window."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

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
    return subprocess.Popen([sys.executable, "-c", SECOND_LAUNCH, name], env=env, stdout=subprocess.PIPE,
                            text=True)


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


def test_a_stale_socket_from_a_crash_does_not_block_a_new_instance(qtbot):
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    crashed = SingleInstance(name)
    assert crashed.claim()
    crashed.server.close()  # what a crash leaves: nobody answering on the name
    crashed.server = None
    fresh = SingleInstance(name)
    try:
        assert fresh.claim()
    finally:
        fresh.release()


def test_after_quit_the_next_launch_becomes_the_instance():
    name = f"pospal-test-{uuid.uuid4().hex[:8]}"
    first = SingleInstance(name)
    assert first.claim()
    first.release()
    second = launch_second(name)
    out, _ = second.communicate(timeout=30)
    assert out.strip() == "claimed"
