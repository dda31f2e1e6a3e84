"""Agent tests against the real server: a `pospal-server run` process, an in-process uvicorn server on a
shared FakeClock, and `pospal-agent run --headless` processes.

The server-side pieces come from tests/server/conftest.py (`launch_server`, the migrated SQLite template,
`outbox_rows`), so both test trees start servers the same way. Fixtures:

- `server_env`: environment of a server on a fresh SQLite copy with sandbox billing and console mail.
- `real_server`: one `pospal-server run` process (killed at teardown).
- `inproc_server(clock)`: the same app served by uvicorn in a thread on a real port, whose clock follows
  the agent's FakeClock (monotonic part), so days pass for both sides at once; a wall-clock shift on the
  agent (a user setting the PC clock back) does not move the server.
- `agents`: factory of `pospal-agent run --headless` processes on a temp data dir and a free port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.processes import new_group_kwargs, signal_group
from tests.server.conftest import (  # noqa: F401 (sqlite_template is a fixture used through server_env)
    REPO,
    RunningServer,
    free_port,
    launch_server,
    outbox_rows,
    sqlite_template,
)


@pytest.fixture
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment for a server on a fresh SQLite database: sandbox billing, console mail, worker off."""
    db = tmp_path / "server.db"
    shutil.copyfile(request.getfixturevalue("sqlite_template"), db)
    return {
        "POSPAL_DATABASE_URL": f"sqlite:///{db}",
        "POSPAL_SERVER_DATA_DIR": str(tmp_path / "server-data"),
        "POSPAL_SIGNING_KEY_DIR": str(tmp_path / "server-keys"),
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_MAIL_DIR": str(tmp_path / "mail"),
        "POSPAL_OUTBOX_WORKER": "0",
        "POSPAL_SERVER_SECRET": "agent-tests-server-secret",
        "POSPAL_LOG_LEVEL": "WARNING",
    }


def write_trusted_keys(server_url: str, path: Path) -> Path:
    """Fetch the server's JWKS and write it as the agent's POSPAL_TRUSTED_KEYS file (what the demo does)."""
    jwks = requests.get(f"{server_url}/v1/keys", timeout=10).json()
    path.write_text(json.dumps(jwks))
    return path


@pytest.fixture
def real_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[RunningServer]:
    """A real `pospal-server run` process on SQLite with sandbox billing."""
    server = launch_server(server_env, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def restart_server(server: RunningServer, log_path: Path) -> RunningServer:
    """Start the server again on the same port, database and keys."""
    port = int(server.url.rsplit(":", 1)[1])
    env = {k: v for k, v in server.env.items() if k.startswith("POSPAL_")}
    return launch_server(env, log_path, port=port)


def admin(server: RunningServer, *args: str) -> dict[str, Any]:
    """Run `pospal-server admin ...` against the server's database; returns its JSON output."""
    out = subprocess.run(
        [sys.executable, "-m", "server.cli", "admin", *args],
        cwd=REPO,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


# ------------------------------------------------------------------------------- sandbox interactions


def pay(checkout_url: str, action: str = "pay") -> None:
    """Press a button of the sandbox checkout page: the form POST the page's button sends."""
    resp = requests.post(checkout_url, data={"action": action}, allow_redirects=False, timeout=10)
    assert resp.status_code == 303, resp.text


def buy(
    svc: Any,
    email: str,
    restaurant_name: str,
    pay: Callable[[str], object] = pay,
    quantity: int = 1,
    poll_s: float = 0.05,
) -> Any:
    """What the window does to buy: create the Checkout, let the buyer `pay(url)`, wait, activate.

    `svc` is an AgentService; returns its status after the wait.
    """
    checkout = svc.start_checkout(email, restaurant_name, quantity)
    pay(checkout.url)
    return svc.wait_checkout(checkout.checkout_id, threading.Event(), poll_s)


def subscription_action(checkout_url: str, action: str) -> None:
    """Press a subscription button (e.g. "fail_renewal") on the sandbox checkout page after paying."""
    page = requests.get(checkout_url, timeout=10).text
    match = re.search(r'name="subscription_id" value="([^"]+)"', page)
    assert match, "the sandbox page shows no subscription"
    resp = requests.post(
        checkout_url,
        data={"action": action, "subscription_id": match.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    assert resp.status_code == 303, resp.text


def emailed_code(db_url: str, email: str) -> str:
    """The newest activation code queued for `email` (the console mailer would print it)."""
    from server.db import Database

    db = Database(db_url, pool_size=1)
    try:
        rows = outbox_rows(db, to=email, template="activation_code")
    finally:
        db.dispose()
    assert rows, f"no code email for {email}"
    return str(rows[-1].context["code"])


# ------------------------------------------------------------------------------------ in-process server


class ServerTime:
    """The server's clock in in-process tests: the agent FakeClock's start plus its monotonic time."""

    def __init__(self, agent_clock: Any) -> None:
        self._clock = agent_clock
        self._start = agent_clock.now()
        self._mono0 = agent_clock.monotonic()

    def now(self):
        """Server now."""
        return self._start + timedelta(seconds=self._clock.monotonic() - self._mono0)


@dataclass
class InProcessServer:
    """uvicorn serving `create_app` in a thread on a real port."""

    url: str
    env: dict[str, str]
    server: Any
    thread: threading.Thread
    app: Any

    def stop(self) -> None:
        """Stop serving (connections are refused afterwards)."""
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def inproc_server(server_env: dict[str, str]) -> Iterator[Callable[[Any], InProcessServer]]:
    """Factory: serve the app in-process on a free port with its clock following `agent_clock`."""
    import uvicorn

    from server.app import create_app
    from server.config import Settings
    from server.db import Database

    started: list[InProcessServer] = []
    dbs: list[Database] = []

    def start(agent_clock: Any) -> InProcessServer:
        port = free_port()
        env = {**server_env, "POSPAL_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        db = Database(env["POSPAL_DATABASE_URL"], pool_size=5)
        dbs.append(db)
        app = create_app(Settings.from_env(env), clock=ServerTime(agent_clock), db=db, start_worker=False)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, name="inproc-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "in-process server did not start"
            time.sleep(0.02)
        running = InProcessServer(f"http://127.0.0.1:{port}", env, server, thread, app)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
    for db in dbs:
        db.dispose()


# ---------------------------------------------------------------------------------------- agent processes


@dataclass
class AgentProcess:
    """A `pospal-agent run --headless` process and the environment its CLI commands use."""

    port: int
    env: dict[str, str]
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self, ready_s: float = 20) -> AgentProcess:
        """Start the agent and wait until /v1/health answers."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--headless"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            **new_group_kwargs(),
        )
        log.close()
        deadline = time.monotonic() + ready_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if self.get("/v1/health").status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"agent did not answer within {ready_s} s:\n{self.log_path.read_text()}")

    def get(self, path: str) -> requests.Response:
        """GET from the local API."""
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def license(self) -> dict[str, Any]:
        """`GET /v1/license` as JSON."""
        return self.get("/v1/license").json()

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `pospal-agent ARGS` with this agent's environment."""
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen_cli(self, *args: str) -> subprocess.Popen:
        """Start `pospal-agent ARGS` without waiting (stdout/stderr piped)."""
        return subprocess.Popen(
            [sys.executable, "-m", "agent.cli", *args],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.process is not None and self.process.poll() is None:
            signal_group(self.process)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(self.process, kill=True)
                self.process.wait(timeout=5)
        return None if self.process is None else self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up (a power cut, as far as the agent can tell)."""
        if self.process is not None and self.process.poll() is None:
            signal_group(self.process, kill=True)
            self.process.wait(timeout=5)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: `agents(server_url, trusted_keys)` -> an (unstarted) AgentProcess; all stopped after."""
    made: list[AgentProcess] = []

    def make(server_url: str, trusted_keys: Path | None = None) -> AgentProcess:
        data = tmp_path / f"agent-{len(made)}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
        env.update(
            PYTHONPATH=str(REPO),
            POSPAL_SERVER_URL=server_url,
            POSPAL_AGENT_PORT=str(port),
            POSPAL_DATA_DIR=str(data),
            BROWSER="true",
        )
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        if trusted_keys is not None:
            env["POSPAL_TRUSTED_KEYS"] = str(trusted_keys)
        agent = AgentProcess(port, env, data, tmp_path / f"agent-{len(made)}.log")
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()
