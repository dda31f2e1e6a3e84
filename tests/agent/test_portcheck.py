"""Why the agent could not take its port (agent/localapi/portcheck.py), and what `pospal-agent run` does
then."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys

import pytest

from agent.localapi import portcheck
from tests.agent.conftest import REPO


def refused(errno_=errno.EADDRINUSE, winerror=None) -> OSError:
    exc = OSError(errno_, "Address already in use")
    if winerror is not None:
        exc.winerror = winerror
    return exc


def test_another_agent_answering_health_is_named_with_its_version():
    failure = portcheck.explain(7421, refused(), probe=lambda port: {"ok": True, "version": "1.0.0"})
    assert failure.kind == portcheck.AGENT and failure.version == "1.0.0"
    assert "another POSPal agent (1.0.0)" in failure.message


def test_a_windows_excluded_port_range_is_named():
    failure = portcheck.explain(
        7421, refused(errno.EACCES, winerror=10013), probe=lambda port: None, listening=lambda port: False
    )
    assert failure.kind == portcheck.EXCLUDED
    assert "10013" in failure.message and "excludedportrange" in failure.message


def test_access_denied_by_a_program_holding_the_port_exclusively_is_that_program():
    failure = portcheck.explain(
        7421, refused(errno.EACCES, winerror=10013), probe=lambda port: None, listening=lambda port: True
    )
    assert failure.kind == portcheck.OTHER


def test_another_program_is_named():
    failure = portcheck.explain(7421, refused(), probe=lambda port: None)
    assert failure.kind == portcheck.OTHER and "not a POSPal agent" in failure.message


def test_run_on_a_port_another_program_holds_says_so_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "POSPAL_DATA_DIR": str(tmp_path),
            "POSPAL_AGENT_PORT": str(busy.getsockname()[1]),
            "POSPAL_SERVER_URL": "http://127.0.0.1:9",
        }
        out = subprocess.run(
            [sys.executable, "-m", "agent.cli", "run", "--headless"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1
    last = out.stderr.splitlines()[-1]
    assert "another program holds port" in last and "Traceback" not in out.stderr
    assert "another program holds port" in (tmp_path / "agent.log").read_text()


@pytest.mark.slow
def test_a_second_agent_on_the_same_pc_names_the_first(agents, tmp_path):
    first = agents("http://127.0.0.1:9").start()
    out = first.cli("run", "--headless")
    assert out.returncode == 1
    assert "another POSPal agent" in out.stderr.splitlines()[-1]
    assert first.license()["license_state"] == "license_missing"
