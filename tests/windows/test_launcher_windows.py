"""The update launcher under Windows Python (in CI under Wine): the listening socket lent to each version
with `socket.share` over the child's stdin, a swap from one version to the next while a POS asks
`GET /v1/license` every 10 ms, and the job object that ends the agent with a killed launcher (else the
orphan would keep the shared port from the service's next start). The agent versions are
tests/windows/fake_agent.py; the real bundle's swap runs in scripts/windows_smoke.sh."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.windows

HERE = Path(__file__).resolve().parent


def _version(install, version: str) -> None:
    install.seed(version, [sys.executable, str(HERE / "fake_agent.py"), version], script=False)


def _get(port: int, path: str, timeout: float = 2.0) -> dict | None:
    from agent.selfupdate.launcher import probe

    return probe(port, path, timeout)


def _until(check, within: float, what: str) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {within} s")


class Pos:
    """A POS asking GET /v1/license every 10 ms on a fresh connection; counts failures and the gap."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers = 0
        self.failures: list[str] = []
        self.longest_s = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/v1/license")
                resp = conn.getresponse()
                body = json.loads(resp.read())
                if resp.status != 200 or body.get("license_state") != "trial_active":
                    self.failures.append(f"{resp.status} {body}")
                self.answers += 1
                now = time.monotonic()
                self.longest_s = max(self.longest_s, now - last)
                last = now
            except (OSError, ValueError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()
            time.sleep(0.01)


def test_a_swap_under_windows_loses_no_answer_and_the_new_version_serves(tmp_path: Path) -> None:
    from agent.selfupdate.install import Install
    from agent.selfupdate.launcher import Launcher

    install = Install(tmp_path / "install")
    _version(install, "1.0.0")
    launcher = Launcher(install, 0, deadline_s=30)
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    pos = Pos(launcher.port)
    try:
        _until(lambda: (_get(launcher.port, "/v1/health") or {}).get("version") == "1.0.0", 60, "1.0.0 up")
        pos.thread.start()
        _until(lambda: pos.answers >= 20, 30, "the POS's first answers")
        _version(install, "1.0.1")  # staged beside it, as the updater stages a download
        install.set_current("1.0.0", previous=None)
        install.set_pending("1.0.1")
        (install.root / "swap-now").write_text("1.0.0")
        _until(lambda: install.last_swap().get("outcome") == "swapped", 60, "the swap")
        _until(lambda: (_get(launcher.port, "/v1/health") or {}).get("version") == "1.0.1", 30, "1.0.1 up")
        before = pos.answers
        _until(lambda: pos.answers >= before + 20, 30, "answers from 1.0.1")
    finally:
        pos.stop.set()
        pos.thread.join(10)
        launcher.stop.set()
        thread.join(30)
    print(f"\nswap under Windows: {pos.answers} answers, longest gap {pos.longest_s * 1000:.0f} ms, "
          f"launcher gap {install.last_swap()['gap_s']} s")  # fmt: skip
    assert pos.failures == []
    assert install.current() == "1.0.1" and install.previous() == "1.0.0" and install.pending() is None


def test_a_killed_launcher_takes_its_agent_with_it_and_frees_the_port(tmp_path: Path) -> None:
    from agent.selfupdate.install import Install

    install = Install(tmp_path / "install")
    _version(install, "1.0.0")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = subprocess.Popen(
        [sys.executable, str(HERE / "run_launcher.py"), "--install", str(install.root), "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _until(lambda: (_get(port, "/v1/health") or {}).get("version") == "1.0.0", 60, "the agent up")
        launcher.kill()  # TerminateProcess: no handler of the launcher's runs
        launcher.wait(30)

        def freed() -> bool:
            with socket.socket() as again:
                try:
                    again.bind(("127.0.0.1", port))
                except OSError:
                    return False
                return True

        _until(freed, 20, "the port freed (the agent ended with its job)")
        assert _get(port, "/v1/health", 0.5) is None
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if launcher.stdout is not None:
            launcher.stdout.close()
        (install.root / "swap-now").write_text("1.0.0")  # should any agent have survived: it exits
