"""End to end with real processes: an old POSPal till's files, then the new agent, then `licensed_active`
on the subscription `import-pospal1` brought over from the old server, with no checkout.

`pospal-server run` bills through the Stripe-shaped stub (the imported subscriptions live there), and
each `pospal-agent run --headless` finds the old app's `server_license.enc` in `POSPAL_OLD_APP_DIR`,
sealed the way the old app sealed it for this PC's old hardware id.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.vault.pospal1 import LICENSE_FILE, RESULT_FILE, old_hardware_id, seal_old_license
from server.pospal1 import load_export
from tests.agent.conftest import REPO, write_trusted_keys
from tests.server.conftest import launch_server
from tests.server.stripe_stub import start_stripe_stub, stripe_env
from tests.server.test_pospal1 import EXPORT, _stripe_state

pytestmark = pytest.mark.slow
EMAIL = "owner07@cafe07.gr"


def _old_token() -> str:
    export = load_export(EXPORT)
    try:
        return str(export.execute("SELECT unlock_token FROM customers WHERE id = 7").fetchone()[0])
    finally:
        export.close()


def _old_till(folder: Path, email: str, token: str) -> Path:
    """The old app's data folder on this PC: its license file, and a trial file the agent leaves alone."""
    data = folder / "data"
    data.mkdir(parents=True)
    record = {"customer_email": email, "unlock_token": token, "hardware_id": old_hardware_id()}
    (data / LICENSE_FILE).write_text(seal_old_license({**record, "version": "1.0"}, old_hardware_id()))
    (data / "trial.json").write_text(json.dumps({"first_run_date": "2026-10-01", "signature": "0" * 64}))
    return folder


def _outcome(agent, timeout_s: float = 40) -> str:
    """The agent's recorded take-over outcome, once it has one (bounded wait)."""
    path = agent.data_dir / RESULT_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return str(json.loads(path.read_text())["outcome"])
        assert agent.process.poll() is None, agent.log_path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"no take-over outcome in {timeout_s} s:\n{agent.log_path.read_text()}")


@pytest.fixture
def stub():
    stub, server = start_stripe_stub()
    _stripe_state(stub)
    yield stub
    server.shutdown()
    server.server_close()


def _window(start: datetime, end: datetime) -> str:
    return f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}"


def test_an_old_till_becomes_licensed_once_and_only_inside_the_window(server_env, stub, agents, tmp_path):
    now = datetime.now(UTC)
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
    assert imported.stdout.splitlines()[-1].startswith("41 imported")
    server = launch_server(env, tmp_path / "server.log")
    try:
        keys = write_trusted_keys(server.url, tmp_path / "trusted.json")
        old = _old_till(tmp_path / "old-pospal", EMAIL, _old_token())

        first = agents(server.url, keys)
        first.env["POSPAL_OLD_APP_DIR"] = str(old)
        first.start()
        assert _outcome(first) == "licensed"
        lic = first.license()
        assert (lic["license_state"], lic["licensed"], lic["customer_email"]) == (
            "licensed_active",
            True,
            EMAIL,
        )
        assert (old / "data" / LICENSE_FILE).exists() and (old / "data" / "trial.json").exists()
        assert stub.calls("POST", "/v1/checkout/sessions") == []  # nobody bought again

        # A second PC with the same old files: refused, and it stays as a new PC would be.
        second = agents(server.url, keys)
        second.env["POSPAL_OLD_APP_DIR"] = str(old)
        second.start()
        assert _outcome(second) == "refused:migration_used"
        assert second.license()["license_state"] == "license_missing"

        # A wrong token changes nothing.
        wrong = agents(server.url, keys)
        wrong.env["POSPAL_OLD_APP_DIR"] = str(_old_till(tmp_path / "wrong", "owner08@cafe08.gr", "nope"))
        wrong.start()
        assert _outcome(wrong) == "refused:migration_refused"
        assert wrong.license()["license_state"] == "license_missing"
    finally:
        server.stop()

    # After the window closes, even an unused old token is refused.
    env["POSPAL_MIGRATION_WINDOW"] = _window(now - timedelta(days=20), now - timedelta(days=1))
    closed = launch_server(env, tmp_path / "server-closed.log")
    try:
        late = agents(closed.url, write_trusted_keys(closed.url, tmp_path / "trusted-2.json"))
        late.env["POSPAL_OLD_APP_DIR"] = str(_old_till(tmp_path / "late", "owner09@cafe09.gr", _token_of(9)))
        late.start()
        assert _outcome(late) == "refused:migration_closed"
        assert late.license()["license_state"] == "license_missing"
    finally:
        closed.stop()


def _token_of(row: int) -> str:
    export = load_export(EXPORT)
    try:
        return str(export.execute("SELECT unlock_token FROM customers WHERE id = ?", (row,)).fetchone()[0])
    finally:
        export.close()
