"""End to end with real processes: a beach bar pauses for the winter and resumes, against the Stripe
stand-in, with the till's state at each step; and a pause whose date has passed ends by itself.

The till is an old POSPal till moved with its unlock token (as in test_pospal1_e2e), so the whole way
from the old server to a paused season runs on real `pospal-server run` and `pospal-agent run`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.agent.conftest import REPO, write_trusted_keys
from tests.agent.test_pospal1_e2e import EMAIL, _old_till, _old_token, _outcome, _window
from tests.server.conftest import launch_server
from tests.server.stripe_stub import start_stripe_stub, stripe_env
from tests.server.test_pospal1 import EXPORT, _stripe_state

pytestmark = pytest.mark.slow


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    _stripe_state(stub)
    yield stub
    server.shutdown()
    server.server_close()


def _owner_code(server, db_path) -> str:
    assert requests.post(f"{server.url}/v1/codes", json={"email": EMAIL, "purpose": "owner"}, timeout=10).ok
    conn = sqlite3.connect(db_path)
    try:
        (context,) = conn.execute(
            "SELECT context FROM outbox WHERE to_email = ? AND template = 'activation_code' ORDER BY id DESC",
            (EMAIL,),
        ).fetchone()
    finally:
        conn.close()
    return str(json.loads(context)["code"])


def _codes_sent(db_path) -> int:
    conn = sqlite3.connect(db_path)
    try:
        query = "SELECT count(*) FROM outbox WHERE to_email = ? AND template = 'activation_code'"
        return int(conn.execute(query, (EMAIL,)).fetchone()[0])
    finally:
        conn.close()


def _latest_code(db_path) -> str:
    conn = sqlite3.connect(db_path)
    try:
        (context,) = conn.execute(
            "SELECT context FROM outbox WHERE to_email = ? AND template = 'activation_code' ORDER BY id DESC",
            (EMAIL,),
        ).fetchone()
    finally:
        conn.close()
    return str(json.loads(context)["code"])


def _cli_as_owner(agent, db_path, *args: str) -> subprocess.CompletedProcess:
    """`pospal-agent ARGS`, typing the owner's e-mailed code when it asks (as the owner would)."""
    before = _codes_sent(db_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env=agent.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _codes_sent(db_path) == before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        stdout, stderr = proc.communicate(_latest_code(db_path) + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _local(agent, path: str, body: dict) -> requests.Response:
    token = (agent.data_dir / "api-token").read_text().strip()
    return requests.post(
        f"http://127.0.0.1:{agent.port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _pause(server, db_path, resumes_at: datetime | None) -> dict:
    body = {"email": EMAIL, "code": _owner_code(server, db_path)}
    if resumes_at is not None:
        body["resumes_at"] = resumes_at.isoformat()
    answer = requests.post(f"{server.url}/v1/subscription/pause", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _synced(agent) -> dict:
    out = agent.cli("sync")
    assert out.returncode in (0, 1), out.stderr
    return agent.license()


def test_pause_for_the_winter_resume_in_spring_and_an_expired_pause(server_env, stub, agents, tmp_path):
    now = datetime.now(UTC)
    db_path = server_env["POSPAL_DATABASE_URL"].removeprefix("sqlite:///")
    env = {
        **server_env,
        **stripe_env(stub.url),
        "POSPAL_MIGRATION_WINDOW": _window(now - timedelta(days=1), now + timedelta(days=10)),
    }
    imported = subprocess.run(
        [sys.executable, "-m", "server.cli", "import-pospal1", str(EXPORT)],
        cwd=REPO,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    server = launch_server(env, tmp_path / "server.log")
    try:
        till = agents(server.url, write_trusted_keys(server.url, tmp_path / "trusted.json"))
        till.env["POSPAL_OLD_APP_DIR"] = str(_old_till(tmp_path / "old", EMAIL, _old_token()))
        till.start()
        assert _outcome(till) == "licensed"
        before = till.license()
        assert before["license_state"] == "licensed_active"

        # November: the owner pauses at the till until April (`pospal-agent pause`, the owner's code).
        # Stripe collects nothing; the till stops taking orders at once.
        spring = (now + timedelta(days=150)).date()
        out = _cli_as_owner(till, db_path, "pause", "--until", spring.isoformat())
        assert out.returncode == 0 and out.stdout.startswith("licensed_cancelled"), out.stderr
        assert stub.subscriptions["sub_1Old0007"]["pause_collection"]["behavior"] == "void"
        paused = till.license()
        assert (paused["license_state"], paused["reason"], paused["licensed"]) == (
            "licensed_cancelled",
            "paused",
            False,
        )
        assert "paused for the season, until" in paused["message"]
        next_sync = datetime.fromisoformat(paused["next_sync"].replace("Z", "+00:00"))
        assert next_sync - datetime.now(UTC) <= timedelta(seconds=70)  # a resume is seen within a minute

        # April, early: the owner resumes from the tray (its local API: the owner's proof, then resume).
        code = _owner_code(server, db_path)
        assert _local(till, "/v1/owner", {"email": EMAIL, "code": code}).status_code == 200
        resumed = _local(till, "/v1/subscription/resume", {})
        assert resumed.status_code == 200 and resumed.json()["license_state"] == "licensed_active"
        after = till.license()
        assert (after["license_state"], after["machine_id"]) == ("licensed_active", before["machine_id"])

        # A pause whose date has passed ends by itself: no webhook, no owner.
        assert _pause(server, db_path, datetime.now(UTC) + timedelta(seconds=3))["paused"] is True
        assert _synced(till)["reason"] == "paused"
        deadline = time.monotonic() + 20
        state = "licensed_cancelled"
        while state != "licensed_active" and time.monotonic() < deadline:
            time.sleep(1)
            state = _synced(till)["license_state"]
        assert state == "licensed_active"
    finally:
        server.stop()
