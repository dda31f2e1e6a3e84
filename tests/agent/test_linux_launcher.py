"""The Linux system service as packaging/linux lays it out, with real accounts and processes, without
systemd: the unit's own ExecStart= and Environment= lines (paths mapped into a temporary root) run as the
service's account with setpriv, on a state directory made as its tmpfiles conf makes it, with the first
version seeded from the installed agent as install.sh seeds it (`python -m agent.selfupdate.install seed`).

It shows: the agent answers `GET /v1/license` under `pospal-launcher`; `pospal-agent update apply` as the
service's account (what `install.sh update` runs) stages a newer build from a local TUF repository and the
launcher swaps to it with the license unchanged; the till user can neither write the versions nor the
pointers; and while the service restarts, the till user's own `pospal-agent run` (a desktop autostart)
leaves port 7421 to the service. Needs root (CI runs as root), like tests/agent/test_till_user.py.

Where the test interpreter is out of other accounts' reach (a pyenv under /root), the service's processes
and the till user's `pospal-agent run` get CAP_DAC_READ_SEARCH to load it (test_till_user.py does the same
for the service); the till user's attacks (tests/agent/attacker.py) never get any capability.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.selfupdate.install import Install
from agent.selfupdate.launcher import probe
from tests.agent.updatekit import Publisher, make_version
from tests.processes import new_group_kwargs, signal_group
from tests.server.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
LINUX = REPO / "packaging" / "linux"
ATTACKER = Path(__file__).with_name("attacker.py")
VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: the systemd unit's model"),
    pytest.mark.skipif(
        sys.platform.startswith("linux") and os.geteuid() != 0,
        reason="needs root to make the service's and the till user's accounts",
    ),
]


def _useradd(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", "-d", "/nonexistent", name], check=True
        )
        return True


@dataclass
class Till:
    """The accounts and the directories, as systemd and install.sh make them under `base`."""

    service: str
    till: str
    base: Path
    port: int

    @property
    def state(self) -> Path:
        """/var/lib/pospal-agent: StateDirectory, 0700, the service's."""
        return self.base / "var" / "lib" / "pospal-agent"

    @property
    def run(self) -> Path:
        """/run/pospal-agent: RuntimeDirectory, 0755, the service's."""
        return self.base / "run" / "pospal-agent"

    @property
    def install(self) -> Install:
        """The launcher's install directory."""
        return Install(self.state / "install")

    def as_service(self) -> list[str]:
        """setpriv to the service's account (with the interpreter's reach when it needs it)."""
        return _drop(self.service)

    def mapped(self, text: str) -> str:
        """A unit path in this test's root: the state and runtime dirs under `base`, the venv this one."""
        text = text.replace("/opt/pospal-agent/venv/bin/", f"{VENV_BIN}/")
        text = text.replace("/var/lib/pospal-agent", str(self.state))
        return text.replace("/run/pospal-agent", str(self.run))


def _drop(account: str) -> list[str]:
    drop = ["setpriv", f"--reuid={account}", f"--regid={account}", "--clear-groups"]
    # Through a shell, as the seeded version's entry execs the venv's agent (a direct exec may be let
    # through where a child's is not).
    entry = shlex.quote(str(VENV_BIN / "pospal-agent"))
    reach = subprocess.run(
        [*drop, "/bin/sh", "-c", f"exec {entry} --version"],
        cwd="/",
        capture_output=True,
        timeout=60,
        check=False,
    )
    if reach.returncode != 0:
        drop += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return drop


def _unit() -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart= command line and its Environment= lines, as systemd reads them."""
    command: list[str] = []
    env: dict[str, str] = {}
    for line in (LINUX / "pospal-agent.service").read_text(encoding="utf-8").splitlines():
        if line.startswith("ExecStart="):
            command = shlex.split(line.removeprefix("ExecStart="))
        elif line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            env[name] = value
    return command, env


def _tmpfiles(till: Till) -> None:
    """packaging/linux/pospal-agent.tmpfiles.conf's directories, made as systemd-tmpfiles makes them."""
    pw = pwd.getpwnam(till.service)
    for line in (LINUX / "pospal-agent.tmpfiles.conf").read_text(encoding="utf-8").splitlines():
        if not line.startswith("d "):
            continue
        _, path, mode, _user, _group, _age = line.split()
        directory = Path(till.mapped(path))
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, pw.pw_uid, pw.pw_gid)
        os.chmod(directory, int(mode, 8))
    till.run.mkdir(parents=True)  # RuntimeDirectory=, RuntimeDirectoryMode=0755
    os.chown(till.run, pw.pw_uid, pw.pw_gid)
    os.chmod(till.run, 0o755)


@pytest.fixture(scope="module")
def publisher() -> Iterator[Publisher]:
    """A TUF repository served on loopback, readable by the service's account."""
    root = Path(tempfile.mkdtemp(prefix="pospal-pub-", dir="/tmp"))
    pub = Publisher(root)
    try:
        yield pub
    finally:
        pub.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def till(publisher: Publisher) -> Iterator[Till]:
    """Two throwaway accounts and the service's directories; the first version seeded as install.sh does."""
    tag = os.getpid() % 100000
    base = Path(tempfile.mkdtemp(prefix="pospal-svc-", dir="/tmp"))
    os.chmod(base, 0o755)
    made = Till(f"pospal-lsvc-{tag}", f"pospal-ltill-{tag}", base, free_port())
    created = [name for name in (made.service, made.till) if _useradd(name)]
    try:
        _tmpfiles(made)
        seed = subprocess.run(
            [*made.as_service(), sys.executable, "-m", "agent.selfupdate.install", "seed",
             str(made.state / "install"), str(VENV_BIN / "pospal-agent")],
            cwd="/", capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert seed.returncode == 0, seed.stderr
        (base / "update-root.json").write_bytes(publisher.root)
        os.chmod(base / "update-root.json", 0o644)
        yield made
    finally:
        for name in created:
            subprocess.run(["userdel", name], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _service_env(till: Till, publisher_url: str) -> dict[str, str]:
    """The unit's environment in this root, plus the site's settings and this test's update repository."""
    _command, unit_env = _unit()
    env = {name: till.mapped(value) for name, value in unit_env.items()}
    env.update(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        POSPAL_AGENT_PORT=str(till.port),
        POSPAL_SERVER_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens: offline, provisional trial
        POSPAL_UPDATE_ROOT=str(till.base / "update-root.json"),
        POSPAL_UPDATE_URL=publisher_url,
        POSPAL_UPDATE_IDLE_S="0",
        POSPAL_UPDATE_WINDOW="off",
        POSPAL_UPDATE_FIRST_CHECK_S="3600",  # the test asks for the update itself, as install.sh update does
    )
    return env


@dataclass
class Service:
    """The unit's ExecStart (pospal-launcher) running as the service's account."""

    till: Till
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, ready_s: float = 60) -> Service:
        """Start it as systemd would, and wait for its agent's /v1/health."""
        command, _env = _unit()
        argv = [*self.till.as_service(), *(self.till.mapped(word) for word in command)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd="/", env=self.env, stdout=out, stderr=out, **new_group_kwargs()
            )
        end = time.monotonic() + ready_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")
            if self.health() is not None:
                return self
            time.sleep(0.05)
        raise AssertionError(f"the service never answered:\n{self.log.read_text(errors='replace')[-4000:]}")

    def health(self) -> dict | None:
        """GET /v1/health on the service's port."""
        return probe(self.till.port, "/v1/health", 2.0)

    def stop_as_systemd(self) -> int:
        """KillMode=mixed: SIGTERM to the launcher alone, which stops its agent; its exit code."""
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(20)

    def kill(self) -> None:
        """Whatever is left of its group."""
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc, kill=True)
            self.proc.wait(10)

    def agent(self, *args: str) -> subprocess.CompletedProcess:
        """`pospal-agent ARGS` from the venv as the service's account with the unit's environment (what
        install.sh's update and status run)."""
        env = dict(self.env, POSPAL_INSTALL_DIR=str(self.till.install.root))
        return subprocess.run(
            [*self.till.as_service(), str(VENV_BIN / "pospal-agent"), *args],
            cwd="/", env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip


def _wait(check, within: float, what: str, log: Path) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{what} did not happen within {within} s:\n{log.read_text(errors='replace')[-4000:]}"
    )


def _as_till(till: Till, *args: str) -> dict:
    """One attacker action as the till user (no capability); its JSON outcome."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3")
    assert python, "no system python3 for the till user's steps"
    result = subprocess.run(
        ["runuser", "-u", till.till, "--", python, "-I", str(ATTACKER), *args],
        capture_output=True, text=True, timeout=30, check=False, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def service(till: Till, publisher: Publisher) -> Iterator[Service]:
    """The service running version 1.0.0 (seeded), with a provisional trial started."""
    running = Service(till, _service_env(till, publisher.serve()), till.base / "service.log").start()
    try:
        trial = running.agent("trial")
        assert trial.returncode == 0, trial.stderr
        yield running
    finally:
        running.kill()


def test_the_unit_runs_the_seeded_version_under_the_launcher_and_it_answers_the_pos(service: Service) -> None:
    assert (service.health() or {}).get("version") == "1.0.0"
    answer = probe(service.till.port, "/v1/license", 2.0)
    assert answer is not None and answer["license_state"] == "trial_active"
    install = service.till.install
    assert install.current() == "1.0.0"
    assert install.entry("1.0.0").read_text().endswith(f'exec {VENV_BIN / "pospal-agent"} "$@"\n')
    owner = pwd.getpwuid(install.versions.stat().st_uid).pw_name
    assert owner == service.till.service  # the account writes its versions, systemd's state dir holds them


def test_the_till_user_cannot_write_the_versions_nor_the_pointers(service: Service) -> None:
    install = service.till.install
    assert _as_till(service.till, "mkdir", str(install.versions / "6.6.6")) == {
        "ok": False,
        "errno": "EACCES",
    }
    for path in (install.entry("1.0.0"), install.root / "current", install.root / "pending"):
        assert _as_till(service.till, "write", str(path)) == {"ok": False, "errno": "EACCES"}, path
    assert _as_till(service.till, "delete", str(install.entry("1.0.0")))["ok"] is False
    assert install.entry("1.0.0").read_text().startswith("#!/bin/sh\nexec ")
    assert not (install.versions / "6.6.6").exists() and not (install.root / "pending").exists()


def test_an_update_from_the_signed_repository_swaps_the_service_to_it(
    service: Service, publisher: Publisher, tmp_path: Path
) -> None:
    before = probe(service.till.port, "/v1/license", 2.0)
    publisher.publish("1.1.0", make_version(tmp_path / "build-1.1.0", "1.1.0"))
    applied = service.agent("update", "apply")
    assert applied.returncode == 0, applied.stderr + service.log.read_text(errors="replace")[-3000:]
    assert "staged 1.1.0" in applied.stdout
    install = service.till.install
    _wait(lambda: (install.root / "launcher.json").exists(), 90, "the swap to 1.1.0", service.log)
    assert install.last_swap()["outcome"] == "swapped"
    print(f"\nswap 1.0.0 -> 1.1.0 under the unit's layout: local API gap {install.last_swap()['gap_s']} s")
    _wait(lambda: (service.health() or {}).get("version") == "1.1.0", 30, "1.1.0 answering", service.log)
    after = probe(service.till.port, "/v1/license", 2.0)
    assert after is not None and before is not None
    assert {k: after.get(k) for k in ("license_state", "machine_id")} == {
        k: before.get(k) for k in ("license_state", "machine_id")
    }
    assert install.current() == "1.1.0" and install.previous() == "1.0.0"
    status = json.loads(service.agent("update", "status").stdout)  # install.sh status
    assert status["current"] == "1.1.0" and status["last_swap"]["outcome"] == "swapped"
    # The staged build is the service's own, out of the till user's reach like the seeded one.
    assert pwd.getpwuid(install.entry("1.1.0").stat().st_uid).pw_name == service.till.service
    assert _as_till(service.till, "write", str(install.entry("1.1.0")))["ok"] is False


def test_the_till_users_own_run_leaves_the_port_to_the_restarting_service(service: Service) -> None:
    """systemctl restart: the launcher stops (its agent with it), then starts again. A desktop autostart's
    `pospal-agent run` in that moment must not become the license core."""
    version = (service.health() or {}).get("version")
    assert service.stop_as_systemd() == 0
    assert probe(service.till.port, "/v1/health", 1.0) is None  # the port is free: the service is away
    home = service.till.base / "till-home"
    home.mkdir()
    os.chown(home, pwd.getpwnam(service.till.till).pw_uid, -1)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        # A till user's tray finds /run/pospal-agent by itself; this test's runtime dir is elsewhere.
        "POSPAL_RUNTIME_DIR": str(service.till.run),
        "POSPAL_AGENT_PORT": str(service.till.port),
        "POSPAL_SERVER_URL": service.env["POSPAL_SERVER_URL"],
    }
    users_run = subprocess.run(
        [*_drop(service.till.till), str(VENV_BIN / "pospal-agent"), "run"],
        cwd="/", env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert users_run.returncode == 0, users_run.stderr
    assert "the POSPal License service serves this PC" in users_run.stderr
    assert not (home / ".local").exists()  # no data dir of its own: it never started a core
    service.start()  # the restart's start: it can take its port
    assert (service.health() or {}).get("version") == version
    assert (probe(service.till.port, "/v1/license", 2.0) or {}).get("license_state") == "trial_active"
