"""The deployment files: the systemd units serve only after migrating, and are hardened."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "SystemCallFilter": "@system-service",
    "CapabilityBoundingSet": "",
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text(encoding="utf-8"))
    return parser


def test_server_and_worker_start_only_after_the_migration() -> None:
    migrate = _unit("pospal-server-migrate.service")
    assert migrate["Service"]["Type"] == "oneshot"
    assert migrate["Service"]["ExecStart"].endswith("pospal-server migrate")
    for name, command in (("pospal-server.service", "run"), ("pospal-server-worker.service", "worker")):
        unit = _unit(name)
        assert "pospal-server-migrate.service" in unit["Unit"]["After"].split()
        assert "pospal-server-migrate.service" in unit["Unit"]["Requires"].split()
        assert unit["Service"]["ExecStart"].endswith(f"pospal-server {command}")


def test_every_unit_is_hardened_and_reads_the_environment_file() -> None:
    for name in ("pospal-server-migrate.service", "pospal-server.service", "pospal-server-worker.service"):
        service = _unit(name)["Service"]
        for key, value in HARDENING.items():
            assert service.get(key) == value, (name, key)
        assert service["User"] == "pospal"
        assert service["StateDirectory"] == "pospal-server"
        assert service["EnvironmentFile"] == "/etc/pospal/server.env"
        assert "AF_PACKET" not in service["RestrictAddressFamilies"]
    assert "u pospal " in (UNITS / "pospal-server.sysusers.conf").read_text(encoding="utf-8")


def test_example_environment_file_sets_the_production_settings() -> None:
    text = (UNITS / "server.env.example").read_text(encoding="utf-8")
    for key in (
        "POSPAL_DATABASE_URL=",
        "POSPAL_PUBLIC_URL=",
        "POSPAL_SIGNING_KEY_DIR=",
        "POSPAL_SERVER_SECRET=",
    ):
        assert key in text


@pytest.mark.skipif(sys.platform != "linux", reason="systemd units are checked on Linux only")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    entry = Path(sys.executable).with_name("pospal-server")
    assert entry.exists(), "the pospal-server entry point is not installed"
    copies = []
    for unit in sorted(UNITS.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(
            unit.read_text(encoding="utf-8").replace("/opt/pospal/venv/bin/pospal-server", str(entry)),
            encoding="utf-8",
        )
        copies.append(str(copy))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *copies], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pospal-server" not in result.stderr, result.stderr


def test_entry_point_lists_the_server_roles() -> None:
    entry = Path(sys.executable).with_name("pospal-server")
    result = subprocess.run([str(entry), "--help"], capture_output=True, text=True, timeout=60, check=True)
    for role in ("run", "migrate", "worker"):
        assert role in result.stdout


ROOT = UNITS.parent.parent


def test_compose_runs_two_servers_behind_caddy_after_the_migration() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"db", "redis", "migrate", "server-1", "server-2", "worker", "caddy"} <= set(services)
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("server-1", "server-2", "worker"):
        after = services[name]["depends_on"]["migrate"]
        assert after["condition"] == "service_completed_successfully", name
        assert "signing-keys:/var/lib/pospal/keys" in services[name]["volumes"]
        assert services[name]["environment"]["POSPAL_SIGNING_KEY_DIR"] == "/var/lib/pospal/keys"
    assert services["worker"]["command"] == ["worker"]
    assert "db-data:/var/lib/postgresql/data" in services["db"]["volumes"]
    assert {"db-data", "signing-keys"} <= set(compose["volumes"])
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text(encoding="utf-8")
    assert "server-1:8000 server-2:8000" in caddyfile
    assert "health_uri /health/ready" in caddyfile  # the proxy sends no traffic to an instance not ready
    # An instance stopping loses no request (scripts/compose_smoke.sh stops one mid-run): the other is tried.
    assert "lb_try_duration" in caddyfile and "request_buffers" in caddyfile and "lb_retry_match" in caddyfile


def test_dockerfile_final_stage_is_non_root_with_healthcheck_and_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = text.split("\nFROM ")[1:]
    assert len(stages) >= 2, "the Dockerfile is not multi-stage"
    assert stages[0].split()[1:3] == ["AS", "builder"]
    assert "--require-hashes -r /tmp/requirements-server.lock" in stages[0]
    final = stages[-1]
    users = [line.split()[1] for line in final.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in final and "/health/live" in final and "curl" not in final
    assert 'ENTRYPOINT ["pospal-server"]' in final
    assert 'CMD ["run", "--host", "0.0.0.0"]' in final
    assert "apt-get" not in final and "gcc" not in final


def _uv() -> list[str]:
    return [sys.executable, "-m", "uv"]


def test_server_lock_is_the_locks_export_without_qt_or_dev_tools() -> None:
    """requirements-server.lock is current (scripts/lock.sh writes it) and holds no PySide6."""
    text = (ROOT / "requirements-server.lock").read_text(encoding="utf-8")
    names = {line.split("==")[0] for line in text.splitlines() if line[:1].isalpha()}
    assert {"fastapi", "uvicorn", "sqlalchemy", "psycopg", "stripe"} <= names
    assert not names & {"pyside6-essentials", "shiboken6", "pytest", "pyinstaller", "localstripe"}
    export = subprocess.run(
        [
            *_uv(),
            "export",
            "--frozen",
            "--no-emit-project",
            "--no-emit-package",
            "pyside6-essentials",
            "--no-emit-package",
            "shiboken6",
            "--format",
            "requirements-txt",
            "--no-header",
            "-q",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert export.stdout == text, "requirements-server.lock is stale: run bash scripts/lock.sh"


@pytest.mark.skipif(sys.platform != "linux", reason="the image is Linux")
def test_a_server_only_install_has_no_qt_and_migrates(tmp_path: Path) -> None:
    """What the Dockerfile's builder does: the server lock (hashes) and the project, no Qt; it serves."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [*_uv(), "pip", "install", "-q", "--python", str(python)]
    subprocess.run(
        [*install, "--require-hashes", "-r", str(ROOT / "requirements-server.lock")],
        check=True,
        timeout=300,
        capture_output=True,
    )
    subprocess.run([*install, "--no-deps", str(ROOT)], check=True, timeout=300, capture_output=True)
    probe = "import importlib.util as u, server.app, server.cli; print(u.find_spec('PySide6'))"
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "None"
    env = {"PATH": "/usr/bin:/bin", "POSPAL_SERVER_DATA_DIR": str(tmp_path / "data")}
    migrate = subprocess.run(
        [str(venv / "bin" / "pospal-server"), "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0 and "schema at" in migrate.stdout, migrate.stderr


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} substitution."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if env.get(name):
            return env[name]
        assert op != ":?", f"compose would refuse: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_]+)(:-|:\?)?([^}]*)\}", one, value)


def test_compose_passes_every_setting_a_production_server_needs() -> None:
    """The servers' environment, with a .env of the production secrets, loads as a production Settings."""
    yaml = pytest.importorskip("yaml")
    from server.config import Settings

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    dotenv = {
        "POSTGRES_PASSWORD": "pw",
        "POSPAL_SERVER_SECRET": "s" * 32,
        "POSPAL_DOMAIN": "license.example.com",
        "STRIPE_SECRET_KEY": "sk_live_x",
        "STRIPE_WEBHOOK_SECRET": "whsec_x",
        "STRIPE_PRICE_ID": "price_x",
        "SMTP_URL": "smtps://user:pw@smtp.example.com:465",
    }
    for name in ("server-1", "server-2", "worker", "migrate"):
        env = {k: _interpolate(str(v), dotenv) for k, v in compose["services"][name]["environment"].items()}
        settings = Settings.from_env(env)
        assert (settings.environment, settings.billing, settings.email) == ("production", "stripe", "smtp")
        assert settings.public_url == "https://license.example.com"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


@pytest.mark.skipif(sys.platform != "linux", reason="the stand-ins are Linux images")
def test_postgres_stand_in_initialises_with_the_settings_compose_passes(tmp_path: Path) -> None:
    """scripts/compose_smoke.sh runs compose.yaml's db on deploy/standins/postgres: its entrypoint makes
    the user, password and database compose.yaml names (initdb and postgres stubbed: what they are asked)."""
    yaml = pytest.importorskip("yaml")
    db = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]["db"]
    env_names = set(db["environment"])
    entrypoint = ROOT / "deploy" / "standins" / "postgres" / "entrypoint.sh"
    # Every variable compose.yaml gives the db is one the stand-in reads (else the smoke is not the file).
    assert env_names <= {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}
    bin_dir, data, log = tmp_path / "bin", tmp_path / "data", tmp_path / "log"
    bin_dir.mkdir()
    _stub(bin_dir, "id", "echo 999")  # not root: the stand-in's drop to user postgres is skipped
    _stub(
        bin_dir,
        "initdb",
        f'echo "initdb $*" >>{log}\n'
        f'for a; do case "$a" in --pwfile=*) cat "${{a#--pwfile=}}" >>{log};; esac; done\n'
        f"mkdir -p {data} && echo 15 >{data}/PG_VERSION\n"
        f": >{data}/postgresql.conf && : >{data}/pg_hba.conf",
    )
    _stub(bin_dir, "postgres", f'echo postgres "$@" >>{log}; [ "$1" = --single ] && cat >>{log}; true')
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PGDATA": str(data),
        "POSTGRES_USER": "pospal",
        "POSTGRES_DB": "pospal",
        "POSTGRES_PASSWORD": "pw-from-dotenv",
    }
    result = subprocess.run(
        ["sh", str(entrypoint), "postgres"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text(encoding="utf-8").splitlines()
    assert calls[0].startswith("initdb ") and "--username=pospal" in calls[0].split()
    assert "--auth-host=scram-sha-256" in calls[0].split()
    assert calls[1] == "pw-from-dotenv"  # the password file initdb was given
    assert calls[2].startswith("postgres --single") and calls[3] == 'CREATE DATABASE "pospal"'
    assert calls[-1] == "postgres"  # then the server itself, in the foreground
    assert "listen_addresses = '*'" in (data / "postgresql.conf").read_text(encoding="utf-8")
    assert "host all all all scram-sha-256" in (data / "pg_hba.conf").read_text(encoding="utf-8")
    # A second start on the same volume keeps the database: no second initdb.
    log.unlink()
    subprocess.run(["sh", str(entrypoint), "postgres"], env=env, timeout=30, check=True, capture_output=True)
    assert log.read_text(encoding="utf-8").splitlines() == ["postgres"]


def test_compose_smoke_stands_in_for_exactly_the_images_compose_pulls() -> None:
    """scripts/compose_smoke.sh tags a stand-in under each registry image compose.yaml names, no other."""
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]
    pulled = {s["image"] for s in services.values() if "build" not in s}
    script = (ROOT / "scripts" / "compose_smoke.sh").read_text(encoding="utf-8")
    built = set(re.findall(r"^build docker\.io/library/(\S+) ", script, flags=re.MULTILINE))
    assert built == pulled
    for image in pulled:
        assert (ROOT / "deploy" / "standins" / image.split(":")[0] / "Containerfile").is_file()
