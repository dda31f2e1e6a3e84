"""The POS can trust the agent's answer (issue 19), shown with real processes.

One `pospal-server run` process, two `pospal-agent run --headless` processes on two pretend computers
(`tests.agent.fake_machine`: "till-a", where the POS runs, and "till-b"), both on a trial, and impostors
from `tests.agent.impostor`. The POS is `AgentClient.verified_license()` with the server's keys as its
trusted set (what a release build bundles) and till-a's fingerprint:

- a fake agent answering `licensed: true`            -> BadProof
- a replay of a genuine answer captured earlier      -> BadProof (the proof covers another challenge)
- a proxy to the genuine agent on till-b             -> OtherMachine
- the genuine agent, read by a clock 15 days ahead   -> LicenseExpired
- the genuine agent                                  -> licensed
- the POS started 3 s before the agent               -> wait_ready + verified_license: licensed, no
                                                        "not licensed" on the way
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from pospal_client.client import AgentClient

from agent.errors import BadProof, LicenseExpired, OtherMachine
from pospal_protocol.clock import FakeClock, SystemClock
from pospal_protocol.trust import b64url_encode
from tests.agent import fake_machine
from tests.agent.conftest import AgentProcess, write_trusted_keys
from tests.processes import new_group_kwargs, signal_group
from tests.server.conftest import REPO, RunningServer, free_port, launch_server


@dataclass
class World:
    server: RunningServer
    jwks: dict
    till_a: AgentProcess
    till_b: AgentProcess
    tmp: Path

    def pos(self, port: int, **kw) -> AgentClient:
        """The POS on till-a, asking the agent (or whatever listens) on `port`."""
        return AgentClient(
            port, trusted_keys=self.jwks, fingerprinter=lambda: fake_machine.hashes("till-a"), **kw
        )


def _agent(tmp: Path, name: str, server_url: str, trusted: Path, site: Path) -> AgentProcess:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
    env.update(
        PYTHONPATH=f"{site}{os.pathsep}{REPO}",
        POSPAL_SERVER_URL=server_url,
        POSPAL_AGENT_PORT=str(port),
        POSPAL_DATA_DIR=str(tmp / f"data-{name}"),
        POSPAL_TRUSTED_KEYS=str(trusted),
        BROWSER="true",
        **{fake_machine.ENV: name},
    )
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return AgentProcess(port, env, tmp / f"data-{name}", tmp / f"agent-{name}.log")


def _start_trial(agent: AgentProcess) -> None:
    token = (agent.data_dir / "api-token").read_text().strip()
    resp = requests.post(
        f"http://127.0.0.1:{agent.port}/v1/trial",
        json={},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["license_state"] == "trial_active", resp.text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path):
    tmp = tmp_path_factory.mktemp("verified")
    db = tmp / "server.db"
    shutil.copyfile(sqlite_template, db)
    env = {
        "POSPAL_DATABASE_URL": f"sqlite:///{db}",
        "POSPAL_SERVER_DATA_DIR": str(tmp / "server-data"),
        "POSPAL_SIGNING_KEY_DIR": str(tmp / "server-keys"),
        "POSPAL_BILLING": "sandbox",
        "POSPAL_EMAIL": "console",
        "POSPAL_MAIL_DIR": str(tmp / "mail"),
        "POSPAL_OUTBOX_WORKER": "0",
        "POSPAL_SERVER_SECRET": "verified-license-tests",
        "POSPAL_LOG_LEVEL": "WARNING",
    }
    server = launch_server(env, tmp / "server.log")
    agents: list[AgentProcess] = []
    try:
        trusted = write_trusted_keys(server.url, tmp / "trusted.json")
        site = fake_machine.sitecustomize_dir(tmp / "site")
        for name in ("till-a", "till-b"):
            agent = _agent(tmp, name, server.url, trusted, site)
            agents.append(agent)
            agent.start()
            _start_trial(agent)
        yield World(server, json.loads(trusted.read_text()), agents[0], agents[1], tmp)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
def impostor(world):
    """Factory: start `python -m tests.agent.impostor MODE ARG PORT`; returns its port. Killed after."""
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
        AgentClient(port, timeout=1).wait_ready(20) if mode == "proxy" else _wait_listening(port)
        return port

    yield start
    for proc in procs:
        signal_group(proc, kill=True)
        proc.wait(10)


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("the impostor did not start")


def test_the_genuine_agent_is_accepted(world):
    status = world.pos(world.till_a.port).verified_license()
    assert status["licensed"] is True and status["license_state"] == "trial_active"


def test_a_fake_agent_answering_licensed_is_refused(world, impostor, tmp_path):
    canned = tmp_path / "licensed.json"
    canned.write_text(
        json.dumps(
            {
                "license_state": "licensed_active",
                "licensed": True,
                "reason": None,
                "days_left": 3650,
                "plan": "pospal-monthly",
            }
        )
    )
    port = impostor("answer", str(canned))
    pos = world.pos(port)
    assert pos.license()["licensed"] is True  # the unverified call believes it
    with pytest.raises(BadProof):
        pos.verified_license()


def test_a_replayed_genuine_answer_is_refused(world, impostor, tmp_path):
    challenge = b64url_encode(secrets.token_bytes(32))
    genuine = world.pos(world.till_a.port).request("GET", f"/v1/license?challenge={challenge}")
    assert genuine["licensed"] is True and genuine["proof"]
    saved = tmp_path / "captured.json"
    saved.write_text(json.dumps(genuine))
    with pytest.raises(BadProof) as info:
        world.pos(impostor("answer", str(saved))).verified_license()
    assert info.value.reason == "proof"


def test_a_proxy_to_a_genuine_agent_on_another_machine_is_refused(world, impostor):
    port = impostor("proxy", str(world.till_b.port))
    pos = world.pos(port)
    assert pos.license()["licensed"] is True  # till-b's agent is genuine and licensed...
    with pytest.raises(OtherMachine):
        pos.verified_license()  # ...but for another computer


def test_an_expired_token_is_refused(world):
    late = FakeClock(SystemClock().now() + timedelta(days=15))
    with pytest.raises(LicenseExpired):
        world.pos(world.till_a.port, clock=late).verified_license()


def test_pos_started_before_the_agent_waits_and_is_licensed(world):
    """At login the POS may start first: it waits for the agent instead of telling staff "not licensed"."""
    world.till_a.stop()
    seen: list[object] = []

    def pos_app() -> None:
        pos = world.pos(world.till_a.port)
        try:
            pos.wait_ready(timeout=30)
            seen.append(pos.verified_license())
        except Exception as exc:  # recorded: the assertion below names it
            seen.append(exc)

    thread = threading.Thread(target=pos_app)
    thread.start()
    time.sleep(3)  # the agent starts 3 s after the POS
    assert thread.is_alive() and seen == []  # still waiting, nothing decided yet
    world.till_a.start()
    thread.join(40)
    assert len(seen) == 1 and isinstance(seen[0], dict), seen
    assert seen[0]["licensed"] is True
