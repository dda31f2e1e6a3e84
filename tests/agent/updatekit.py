"""Builds for the update tests: agent versions made from this source tree, and broken ones.

A version directory holds a copy of `agent/` and `pospal_protocol/` with `pospal_protocol.__version__` set to
the version, and the entry `pospal-agent`, a shell script that runs `python -m agent.cli` on that copy: a real
agent of that version, as a release build would be, without PyInstaller.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "_build.py")


def make_version(dest: Path, version: str) -> Path:
    """A working agent build of `version` in `dest` (created)."""
    dest.mkdir(parents=True)
    for pkg in ("agent", "pospal_protocol"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=_IGNORE)
    init = dest / "pospal_protocol" / "__init__.py"
    text = re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text())
    init.write_text(text)
    _entry(dest, f'PYTHONPATH="$here" exec "{sys.executable}" -m agent.cli "$@"')
    return dest


def make_broken(dest: Path, how: str = "silent") -> Path:
    """A build that starts but never answers (`silent`) or exits at once (`crash`)."""
    dest.mkdir(parents=True)
    _entry(dest, "exec sleep 600" if how == "silent" else "echo 'v3: cannot start' >&2; exit 3")
    return dest


def _entry(dest: Path, line: str) -> None:
    entry = dest / "pospal-agent"
    entry.write_text(f'#!/bin/sh\nhere="$(cd "$(dirname "$0")" && pwd)"; cd "$here"\n{line}\n')
    entry.chmod(0o755)


def zip_dir(src: Path, out: Path) -> Path:
    """The release zip of a version directory (what the publisher signs)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(src).as_posix())
    return out


# -- a publisher and a launcher, as the tests run them ---------------------------------------------------


class Publisher:
    """A TUF repository in `root_dir` (server.updates) served over HTTP on a free loopback port."""

    def __init__(self, root_dir: Path) -> None:
        from datetime import UTC, datetime

        from server.updates import Repository

        self.repo_dir = root_dir / "repo"
        self.offline = root_dir / "keys-offline"
        self.online = root_dir / "keys-online"
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.repo = Repository(self.repo_dir, [self.offline, self.online], self.now)
        self.repo.init()
        self.builds = root_dir / "builds"
        self.builds.mkdir()
        self.httpd: Any = None

    @property
    def root(self) -> bytes:
        """The first root: what a build ships."""
        return (self.repo_dir / "metadata" / "1.root.json").read_bytes()

    def publish(self, version: str, build_dir: Path, **release: Any) -> None:
        """Zip `build_dir` and offer it as `version` for Linux."""
        from server.updates import Release

        build = zip_dir(build_dir, self.builds / f"{version}.zip")
        self.repo.add(build, Release(version, "linux", **release))

    def serve(self) -> str:
        """Serve the repository directory; returns its base URL."""
        import functools
        import threading
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Quiet, directory=str(self.repo_dir))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


class Launched:
    """`python -m agent.selfupdate.launcher` on an install dir and a free port (killed with its group at
    `stop`)."""

    def __init__(self, install: Path, port: int, env: dict[str, str], log_path: Path, deadline: float = 20):
        self.install = install
        self.port = port
        self.env = env
        self.log_path = log_path
        self.deadline = deadline
        self.process: subprocess.Popen | None = None

    def start(self, ready_s: float = 30) -> Launched:
        """Start it and wait until the agent it runs answers /v1/health."""
        from tests.processes import new_group_kwargs

        log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "agent.selfupdate.launcher", "--install", str(self.install)]
        command += ["--port", str(self.port), "--deadline", str(self.deadline)]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, **new_group_kwargs()
        )
        log.close()
        end = time.monotonic() + ready_s
        while time.monotonic() < end:
            assert self.process.poll() is None, self.log_path.read_text()
            if self.health() is not None:
                return self
            time.sleep(0.05)
        raise AssertionError(f"no agent answered within {ready_s} s:\n{self.log_path.read_text()}")

    def health(self) -> dict | None:
        """`GET /v1/health`, or None when nothing answers."""
        from agent.selfupdate.launcher import probe

        return probe(self.port, "/v1/health", 2.0)

    def wait_for(self, check: Any, within: float, what: str) -> None:
        """Poll `check()` until true, at most `within` seconds."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen within {within} s:\n{self.log_path.read_text()[-4000:]}")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`pospal-agent ARGS` from this source tree with the launcher's environment."""
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            cwd=REPO,
            env=dict(self.env, POSPAL_INSTALL_DIR=str(self.install)),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        """SIGTERM the launcher's group (it and the agent), then SIGKILL if needed."""
        from tests.processes import signal_group

        if self.process is not None and self.process.poll() is None:
            signal_group(self.process)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(self.process, kill=True)
                self.process.wait(timeout=5)


class Pos:
    """A POS thread asking `GET /v1/license` through `AgentClient` every `every_s`; counts failures and
    the longest time between two answers."""

    def __init__(self, port: int, every_s: float = 0.01) -> None:
        import threading

        self.port = port
        self.every_s = every_s
        self.answers = 0
        self.failures: list[str] = []
        self.longest_gap_s = 0.0
        self.states: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pos:
        """Start asking."""
        self._thread.start()
        return self

    def _run(self) -> None:
        from pospal_client.client import AgentClient

        from agent.errors import LocalApiError

        client = AgentClient(self.port)
        last = time.monotonic()
        while not self._stop.wait(self.every_s):
            try:
                body = client.license()
            except LocalApiError as exc:
                self.failures.append(f"{exc.__class__.__name__}: {exc}")
                continue
            now = time.monotonic()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            last = now
            self.answers += 1
            self.states.append(body.get("license_state"))
        client.close()

    def stop(self) -> Pos:
        """Stop asking (bounded wait)."""
        self._stop.set()
        self._thread.join(timeout=10)
        return self
