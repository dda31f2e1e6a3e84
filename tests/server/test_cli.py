"""pospal-server: run as a real process, migrate, keys, backup, and admin show/revoke/extend/remove/resend."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest

from pospal_protocol.clock import SystemClock
from server import cli
from tests.server.conftest import REPO, MachineKey, outbox_rows, token_claims


@pytest.fixture
def env(server_env, monkeypatch):
    for name, value in server_env.items():
        monkeypatch.setenv(name, value)
    return server_env


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_serves_trials_and_refreshes_as_a_real_process(live_server):
    machine = MachineKey(clock=SystemClock())
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        assert machine.start_trial(http).status_code == 200
        response = machine.refresh(http)
        assert response.status_code == 200
        assert token_claims(response.json()["token"])["kind"] == "trial"
        assert http.get("/health").json()["ok"] is True


def test_run_refuses_an_unmigrated_database(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", "--port", "1"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "POSPAL_SERVER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "pospal-server migrate" in result.stderr


def test_demo_auto_migrate_only_creates_a_brand_new_sqlite_file(tmp_path):
    from server.config import Settings
    from server.db import current_revision, head_revision
    from server.errors import ConfigError

    env = {"POSPAL_SERVER_DATA_DIR": str(tmp_path), "POSPAL_OUTBOX_WORKER": "0"}
    with pytest.raises(ConfigError):
        cli.prepare(Settings.from_env(env))  # no flag: refuses, even for a new file
    (tmp_path / "pospal.db").unlink()
    db = cli.prepare(Settings.from_env({**env, "POSPAL_AUTO_MIGRATE": "1"}))
    assert current_revision(db) == head_revision()
    db.dispose()
    other = tmp_path / "other"
    other.mkdir()
    (other / "pospal.db").write_bytes(b"")  # exists but is not migrated: never touched automatically
    with pytest.raises(ConfigError):
        cli.prepare(
            Settings.from_env({**env, "POSPAL_SERVER_DATA_DIR": str(other), "POSPAL_AUTO_MIGRATE": "1"})
        )


def test_migrate_on_an_empty_database(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POSPAL_SERVER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("POSPAL_DATABASE_URL", raising=False)
    code, out, _ = run(capsys, "migrate")
    assert code == 0 and "schema at" in out and "was empty" in out
    code, out, _ = run(capsys, "migrate")
    assert code == 0 and "was empty" not in out


def test_keys_list_and_rotate(env, capsys, tmp_path):
    code, out, _ = run(capsys, "keys", "rotate")
    assert code == 0 and out == ""  # the first key has no predecessor to sign a document
    code, out, _ = run(capsys, "keys", "rotate", "--out", str(tmp_path / "keyset.jwt"))
    assert code == 0 and (tmp_path / "keyset.jwt").read_text().count(".") == 2
    code, out, _ = run(capsys, "keys", "list")
    keys = json.loads(out)
    assert [k["current"] for k in keys] == [True, False]
    assert all(k["private_key_file"] for k in keys)


def test_keys_export_writes_the_jwks_agents_trust(env, capsys, tmp_path):
    from agent.core.anchors import load_trusted_keys

    code, _, err = run(capsys, "keys", "export")
    assert code == 1 and "no signing key yet" in err
    run(capsys, "keys", "rotate")
    run(capsys, "keys", "rotate")
    code, out, _ = run(capsys, "keys", "export")
    printed = json.loads(out)
    listed = json.loads(run(capsys, "keys", "list")[1])
    assert [k["kid"] for k in printed["keys"]] == [k["kid"] for k in listed]  # current + recently retired
    assert all(set(k) == {"kty", "crv", "x", "kid", "use"} for k in printed["keys"])  # no private part
    target = tmp_path / "trusted.json"
    code, _, err = run(capsys, "keys", "export", "--out", str(target))
    assert code == 0 and str(target) in err
    assert json.loads(target.read_text()) == printed
    # What an agent loads as POSPAL_TRUSTED_KEYS.
    assert set(load_trusted_keys(target).kids()) >= {k["kid"] for k in printed["keys"]}


def test_backup_copies_a_live_database_and_the_keys(env, client, make_machine, capsys, tmp_path, db_backend):
    make_machine().start_trial(client)
    target = tmp_path / "backup"
    code, out, err = run(capsys, "backup", str(target))
    assert code == 0, err
    if db_backend == "sqlite":
        with sqlite3.connect(target / "database.sqlite3") as conn:
            assert conn.execute("select count(*) from machines").fetchone() == (1,)
    else:
        assert (target / "database.pgdump").read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert any(p.suffix == ".pem" for p in (target / "keys").iterdir())
    assert run(capsys, "backup", str(target))[0] == 1  # never overwrites
    # (tests/server/test_backup.py restores it into an empty server.)


def test_admin_show_revoke_extend_remove_and_resend(
    env, client, seed_subscription, login_code, make_machine, capsys, database
):
    _, _, license_id = seed_subscription(email="owner@cafe.gr", seats=2)
    machine = make_machine()
    machine.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))

    code, out, _ = run(capsys, "admin", "customer", "show", "OWNER@cafe.gr")
    shown = json.loads(out)
    assert code == 0 and shown["licenses"][0]["machines"][0]["id"] == machine.machine_id
    assert run(capsys, "admin", "customer", "show", "nobody@x.gr")[0] == 1

    before = len(outbox_rows(database, to="owner@cafe.gr"))
    assert run(capsys, "admin", "customer", "resend", "owner@cafe.gr")[0] == 0
    assert len(outbox_rows(database, to="owner@cafe.gr")) == before + 1

    code, out, _ = run(capsys, "admin", "license", "extend", license_id, "--days", "90")
    assert code == 0 and json.loads(out)["license"]["comp_until"]

    assert run(capsys, "admin", "machine", "remove", machine.machine_id)[0] == 0
    assert token_claims(machine.refresh(client).json()["token"])["status"] == "revoked"

    other = make_machine()
    other.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr"))
    code, out, _ = run(capsys, "admin", "license", "revoke", license_id, "--reason", "chargeback")
    assert code == 0
    assert token_claims(other.refresh(client).json()["token"])["status"] == "revoked"
    audit = json.loads(run(capsys, "admin", "license", "show", license_id)[1])["audit"]
    assert {"license.revoked", "license.extended", "machine.removed"} <= {a["action"] for a in audit}


def test_admin_extends_a_trial(env, client, make_machine, capsys):
    machine = make_machine()
    end = token_claims(machine.start_trial(client).json()["token"])
    code, out, _ = run(capsys, "admin", "license", "extend", end["sub"], "--days", "7")
    assert code == 0
    # The trial had not ended, so it now ends 7 days later than it would have (from now, at least).
    assert token_claims(machine.refresh(client).json()["token"])["trial_end"] > end["trial_end"]


def test_config_error_exits_2_naming_every_variable_one_line_each(monkeypatch, capsys):
    monkeypatch.setenv("POSPAL_BILLING", "paypal")
    monkeypatch.setenv("POSPAL_SEAT_IDLE_DAYS", "abc")
    code, _, err = run(capsys, "migrate")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("configuration error: ") for line in lines)
    assert "POSPAL_BILLING" in lines[0] and "POSPAL_SEAT_IDLE_DAYS" in lines[1]
