"""A real license server and a real agent (this PC's own fingerprint) for the POS clients' tests.

`client_world` is one `pospal-server run` and one `pospal-agent run --headless` on a trial, probing the
real hardware, so a POS client in another process or language (a fresh venv with only pospal-client,
Node) sees its own PC's fingerprint in the token. `jwks` is the server's key set at start, what a POS
build bundles. Module-scoped: each test module that asks gets its own world.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import AgentProcess, write_trusted_keys
from tests.agent.tokenkit import Authority
from tests.processes import new_group_kwargs, signal_group
from tests.server.conftest import REPO, RunningServer, free_port, launch_server, sqlite_template  # noqa: F401


@dataclass
class ClientWorld:
    """The server (a test may restart it: keep `server` current), its key set at start (a JSON file too),
    the agent, and a scratch directory."""

    server: RunningServer
    jwks: dict
    trusted_path: Path
    agent: AgentProcess
    tmp: Path
    authority: Authority = field(default_factory=Authority)  # the offline key-set keys in `jwks`

    def api_token(self) -> str:
        """The agent's bearer token for POST calls."""
        return (self.agent.data_dir / "api-token").read_text().strip()

    def sync(self) -> dict:
        """`POST /v1/sync` on the agent; returns the new status."""
        resp = requests.post(
            f"http://127.0.0.1:{self.agent.port}/v1/sync",
            json={},
            headers={"Authorization": f"Bearer {self.api_token()}"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        return resp.json()


def server_env(tmp: Path) -> dict[str, str]:
    """A sandbox server's settings in `tmp`."""
    return {
        "POSPAL_DATABASE_URL": f"sqlite:///{tmp / 'server.db'}",
        "POSPAL_SERVER_DATA_DIR": str(tmp / "server-data"),
        "POSPAL_SIGNING_KEY_DIR": str(tmp / "server-keys"),
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_MAIL_DIR": str(tmp / "mail"),
        "POSPAL_OUTBOX_WORKER": "0",
        "POSPAL_SERVER_SECRET": "pos-client-tests",
        "POSPAL_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def client_world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[ClientWorld]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("clients")
    shutil.copyfile(sqlite_template, tmp / "server.db")
    server = launch_server(server_env(tmp), tmp / "server.log")
    agent = None
    world = None
    try:
        trusted = write_trusted_keys(server.url, tmp / "trusted-keys.json")
        authority = Authority()
        trusted.write_text(json.dumps(authority.anchors(json.loads(trusted.read_text()))))
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
        env.update(
            PYTHONPATH=str(REPO),
            POSPAL_SERVER_URL=server.url,
            POSPAL_AGENT_PORT=str(free_port()),
            POSPAL_DATA_DIR=str(tmp / "agent-data"),
            POSPAL_TRUSTED_KEYS=str(trusted),
            BROWSER="true",
        )
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        agent = AgentProcess(int(env["POSPAL_AGENT_PORT"]), env, tmp / "agent-data", tmp / "agent.log")
        agent.start()
        world = ClientWorld(server, json.loads(trusted.read_text()), trusted, agent, tmp, authority)
        resp = requests.post(
            f"http://127.0.0.1:{agent.port}/v1/trial",
            json={},
            headers={"Authorization": f"Bearer {world.api_token()}"},
            timeout=30,
        )
        assert resp.status_code == 200 and resp.json()["licensed"] is True, resp.text
        yield world
    finally:
        if agent is not None:
            agent.stop()
        (world.server if world is not None else server).stop()  # a test may have restarted it


@pytest.fixture
def impostor() -> Iterator:
    """Factory: `python -m tests.agent.impostor MODE ARG` on a free port; returns the port. Killed after."""
    procs: list[subprocess.Popen] = []

    def start(mode: str, arg: str) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.agent.impostor", mode, arg, str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            **new_group_kwargs(),
        )
        procs.append(proc)
        wait_listening(port)
        return port

    yield start
    for proc in procs:
        signal_group(proc, kill=True)
        proc.wait(10)


def wait_listening(port: int, seconds: float = 20) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")
