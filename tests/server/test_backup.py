"""The restore drill: back up, lose the database and the keys, restore, and the same agents refresh.

`pospal-server backup DIR` then `restore DIR` (server.backup), on SQLite and on PostgreSQL (pg_dump and
pg_restore into a new, empty database): the customers, machines and signing keys come back, and the
machines that refreshed before refresh again with tokens signed by the same key.
"""

from __future__ import annotations

import json
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from server import cli
from server.app import create_app
from server.config import Settings
from server.db import Database
from server.models import Customer, Machine, SigningKey
from tests.server.conftest import PG_URL, token_claims


def _cli(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _inventory(url: str) -> tuple[list[str], list[str], list[str]]:
    """Customers' e-mails, machine ids and signing key ids in the database at `url`."""
    db = Database(url, pool_size=1)
    try:
        with db.transaction() as session:
            return (
                sorted(session.scalars(select(Customer.email))),
                sorted(session.scalars(select(Machine.id))),
                sorted(session.scalars(select(SigningKey.kid))),
            )
    finally:
        db.dispose()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema): where a lost database is restored."""
    assert PG_URL
    name = f"pospal_restore_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_restore_drill_brings_back_customers_machines_and_keys(
    request,
    server_env,
    db_backend,
    client,
    seed_subscription,
    login_code,
    make_machine,
    clock,
    mailer,
    monkeypatch,
    capsys,
    tmp_path,
):
    seed_subscription(email="owner@cafe.gr", seats=2)
    paid = make_machine()
    assert paid.activate(client, "owner@cafe.gr", login_code(client, "owner@cafe.gr")).status_code == 200
    trial = make_machine()
    assert trial.start_trial(client).status_code == 200
    before = {m.machine_id: token_claims(m.refresh(client).json()["token"]) for m in (paid, trial)}
    kid = client.get("/v1/keys").json()["keys"][0]["kid"]
    inventory = _inventory(server_env["POSPAL_DATABASE_URL"])
    assert inventory[0] == ["owner@cafe.gr"] and len(inventory[1]) == 2

    target = tmp_path / "backup-1"
    code, out, err = _cli(monkeypatch, capsys, server_env, "backup", str(target))
    assert code == 0, err
    assert "backed up" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    manifest = json.loads((target / "manifest.json").read_text())
    assert f"{kid}.pem" in manifest["key_files"]
    assert _cli(monkeypatch, capsys, server_env, "backup", str(target))[0] == 1  # never overwrites

    # The disaster: the key directory is gone, and the database is garbage (SQLite) or gone (PostgreSQL).
    shutil.rmtree(server_env["POSPAL_SIGNING_KEY_DIR"])
    env = dict(server_env)
    if db_backend == "sqlite":
        path = Path(make_url(server_env["POSPAL_DATABASE_URL"]).database or "")
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        path.write_bytes(b"this is not a database")
    else:
        env["POSPAL_DATABASE_URL"] = request.getfixturevalue("empty_pg_url")

    code, out, err = _cli(monkeypatch, capsys, env, "restore", str(target))
    assert code == 0, err
    assert "restored" in out
    if db_backend == "sqlite":
        assert path.with_name(path.name + ".pre-restore-1").read_bytes() == b"this is not a database"
    assert _inventory(env["POSPAL_DATABASE_URL"]) == inventory
    key_dir = Path(env["POSPAL_SIGNING_KEY_DIR"])
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((key_dir / f"{kid}.pem").stat().st_mode) == 0o600

    # A fresh server on the restored database and keys answers the same machines, signed by the same key.
    settings = Settings.from_env(env)
    db = Database(settings.database_url, pool_size=2)
    try:
        app = create_app(settings, clock=clock, db=db, mailer=mailer, start_worker=False)
        with TestClient(app, raise_server_exceptions=False) as restored:
            assert restored.get("/v1/keys").json()["keys"][0]["kid"] == kid
            for machine in (paid, trial):
                response = machine.refresh(restored)
                assert response.status_code == 200, response.text
                claims = token_claims(response.json()["token"])
                old = before[machine.machine_id]
                assert (claims["mid"], claims["kind"], claims["sub"]) == (old["mid"], old["kind"], old["sub"])
                assert claims["status"] == old["status"]
    finally:
        db.dispose()


def test_restore_refuses_a_directory_that_is_not_a_backup(server_env, monkeypatch, capsys, tmp_path):
    (tmp_path / "nothing").mkdir()
    code, _, err = _cli(monkeypatch, capsys, server_env, "restore", str(tmp_path / "nothing"))
    assert code == 1 and "is not a pospal-server backup" in err
