"""The simulation-only hooks (server/testhooks.py) stay off unless explicitly enabled."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from pospal_protocol.clock import SystemClock
from server.config import Settings
from server.testhooks import FileClock, clock_for, install


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"POSPAL_SERVER_DATA_DIR": str(tmp_path), **env})


def test_file_clock_follows_the_file_and_keeps_the_last_good_value(tmp_path: Path) -> None:
    """The simulated time moves when the file changes; a half-written file never moves it."""
    path = tmp_path / "clock"
    path.write_text("1800000000\n")
    clock = FileClock(path)
    assert clock.now() == datetime.fromtimestamp(1800000000, UTC)
    path.write_text("1800003600.5\n")
    assert clock.now() == datetime.fromtimestamp(1800003600.5, UTC)
    path.write_text("")
    assert clock.now() == datetime.fromtimestamp(1800003600.5, UTC)


def test_hooks_are_off_by_default(tmp_path: Path) -> None:
    """Without POSPAL_ENABLE_TEST_HOOKS=1 the clock is real and /_test/webhook does not exist."""
    clock_file = tmp_path / "clock"
    clock_file.write_text("1800000000")
    settings = _settings(tmp_path, POSPAL_TEST_CLOCK_FILE=str(clock_file))
    assert isinstance(clock_for(settings), SystemClock)
    app = FastAPI()
    install(app, settings)
    assert TestClient(app).post("/_test/webhook", json={"id": "evt"}).status_code == 404


def test_hooks_on_when_enabled(tmp_path: Path) -> None:
    """With the flag, the clock file drives the server's time."""
    clock_file = tmp_path / "clock"
    clock_file.write_text("1800000000")
    settings = _settings(tmp_path, POSPAL_ENABLE_TEST_HOOKS="1", POSPAL_TEST_CLOCK_FILE=str(clock_file))
    assert clock_for(settings).now() == datetime.fromtimestamp(1800000000, UTC)
    assert isinstance(clock_for(settings), FileClock)


def test_the_enabled_webhook_hook_runs_its_handler(server_env, clock, database, mailer) -> None:
    """Mounted with the flag on the real app: its own answers come back (not a 404, not a crash)."""
    from server.app import create_app

    settings = Settings.from_env({**server_env, "POSPAL_ENABLE_TEST_HOOKS": "1"})
    app = create_app(settings, clock=clock, db=database, mailer=mailer, start_worker=False)
    install(app, settings)  # as server.app.app_from_env does
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.post("/_test/webhook", json={"not": "an event"})
        assert (refused.status_code, refused.json()["error"]) == (422, "invalid_request")
        event = {
            "id": "evt_hook_1",
            "type": "charge.refunded",
            "created": 1_800_000_000,
            "data": {"object": {"object": "charge", "id": "ch_1", "customer": None}},
        }
        delivered = client.post("/_test/webhook", json=event)
        assert delivered.status_code == 200 and delivered.json()["received"] is True
        again = client.post("/_test/webhook", json=event)
        assert again.status_code == 200 and again.json()["outcome"] != delivered.json()["outcome"]
