"""The person at the till, on Linux, against the agent laid out as its systemd unit lays it out
(packaging/linux/pospal-agent.service): real accounts, real permissions, real processes.

Two throwaway accounts are made with `useradd` (and removed after): the service's, which runs
`pospal-agent run --headless` with its data and marks in a 0700 state directory and its socket in a 0755
runtime directory, both its own; and a till user, who runs `tests/agent/attacker.py` with the system's
python. Every attack of issue 23's list is one test, refused by the OS model:
read the machine key, edit or delete the state and the marks, kill the service, take the port first, and
talk to the caller-checked channel as someone else. Needs root (CI runs as root).

The test interpreter may live where other accounts cannot reach it (a pyenv under /root): then the
service's process alone gets CAP_DAC_READ_SEARCH to load it. The attacker never gets any capability.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import errors
from agent.link import unixchannel
from agent.link.channel import encode, read_frame
from agent.link.channelcontrol import ChannelControl
from tests.processes import new_group_kwargs, signal_group
from tests.server.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
ATTACKER = Path(__file__).with_name("attacker.py")

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only: the systemd unit's model"),
    pytest.mark.skipif(
        sys.platform.startswith("linux") and os.geteuid() != 0,
        reason="needs root to make the service's and the till user's accounts",
    ),
]


@dataclass
class Accounts:
    """The service's account and the till user's."""

    service: str
    till: str

    @property
    def service_uid(self) -> int:
        """The service account's uid."""
        return pwd.getpwnam(self.service).pw_uid


def _useradd(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "-M", "-s", "/usr/sbin/nologin", "-d", "/nonexistent", name], check=True
        )
        return True


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    """Two throwaway accounts, removed afterwards if this module made them."""
    tag = os.getpid() % 100000
    made = Accounts(f"pospal-svc-{tag}", f"pospal-till-{tag}")
    created = [name for name in (made.service, made.till) if _useradd(name)]
    try:
        yield made
    finally:
        for name in created:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def _python_for_others() -> str:
    """An interpreter any account can run, for the attacker (standard library only)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AssertionError("no system python3 for the till user's steps")


def as_till(accounts: Accounts, *args: str) -> dict:
    """Run one attacker action as the till user; its JSON outcome."""
    result = subprocess.run(
        ["runuser", "-u", accounts.till, "--", _python_for_others(), "-I", str(ATTACKER), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class Layout:
    """The directories as systemd makes them: base (root 0755), state (service 0700), run (service 0755)."""

    base: Path
    state: Path
    data: Path
    run: Path

    @property
    def marks(self) -> Path:
        """The development build's mark file, beside the data dir (agent/vault/marks.py)."""
        return self.data.parent / f"{self.data.name}.marks.json"


def _layout(accounts: Accounts) -> Iterator[Layout]:
    base = Path(tempfile.mkdtemp(prefix="pospal-till-", dir="/tmp"))
    os.chmod(base, 0o755)
    uid = accounts.service_uid
    gid = pwd.getpwnam(accounts.service).pw_gid
    layout = Layout(base, base / "state", base / "state" / "data", base / "run")
    for directory, mode in ((layout.state, 0o700), (layout.run, 0o755)):
        directory.mkdir()
        os.chown(directory, uid, gid)
        os.chmod(directory, mode)
    try:
        yield layout
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _service_argv(accounts: Accounts) -> list[str]:
    drop = ["setpriv", f"--reuid={accounts.service}", f"--regid={accounts.service}", "--clear-groups"]
    reach = subprocess.run(
        [*drop, sys.executable, "-c", "import agent.cli"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if reach.returncode != 0:
        drop += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*drop, sys.executable, "-m", "agent.cli", "run", "--headless"]


def _start_service(accounts: Accounts, layout: Layout, port: int, log: Path) -> subprocess.Popen:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(layout.state),
        "POSPAL_DATA_DIR": str(layout.data),
        "POSPAL_RUNTIME_DIR": str(layout.run),
        "POSPAL_AGENT_PORT": str(port),
        "POSPAL_SERVER_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: offline
        "PYTHONPATH": str(REPO),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            _service_argv(accounts), cwd=REPO, env=env, stdout=out, stderr=out, **new_group_kwargs()
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        signal_group(proc, kill=True)
        proc.wait(10)


def tray(layout: Layout, accounts: Accounts) -> ChannelControl:
    """The genuine tray's control: trusts only the service's account."""
    trusted = {accounts.service_uid}
    return ChannelControl(
        lambda t: unixchannel.connect(layout.run, trusted_uids=trusted, timeout=t), timeout=30
    )


@dataclass
class Running:
    """The service process and where it keeps things."""

    proc: subprocess.Popen
    layout: Layout
    port: int
    control: ChannelControl


@pytest.fixture(scope="module")
def service(accounts: Accounts) -> Iterator[Running]:
    """The agent as its service account, with a provisional trial started from the tray (key, state, marks
    written)."""
    layout_gen = _layout(accounts)
    layout = next(layout_gen)
    port = free_port()
    proc = _start_service(accounts, layout, port, layout.base / "agent.out")
    control = tray(layout, accounts)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                control.status()
                break
            except errors.LocalApiError:
                assert proc.poll() is None, (layout.base / "agent.out").read_text()
                assert time.monotonic() < deadline, "the service's channel never answered"
                time.sleep(0.1)
        assert control.start_trial().license_state == "trial_active"  # offline: the provisional trial
        yield Running(proc, layout, port, control)
    finally:
        control.close()
        _stop(proc)
        next(layout_gen, None)


def test_the_service_keeps_its_key_state_and_marks_where_only_its_account_can_reach() -> None:
    text = (REPO / "packaging" / "linux" / "pospal-agent.service").read_text(encoding="utf-8")
    assert "StateDirectoryMode=0700" in text and "RuntimeDirectoryMode=0755" in text  # what the layout mimics


def test_till_user_cannot_read_the_machine_key_or_the_api_token(service: Running, accounts: Accounts) -> None:
    key, token = service.layout.data / "machine-key.pem", service.layout.data / "api-token"
    assert key.is_file() and token.is_file()
    for path in (key, token, service.layout.data / "state.json", service.layout.marks):
        assert as_till(accounts, "read", str(path)) == {"ok": False, "errno": "EACCES"}, path


def test_till_user_cannot_edit_or_delete_the_state_or_the_marks(service: Running, accounts: Accounts) -> None:
    state, marks = service.layout.data / "state.json", service.layout.marks
    before = {p: p.read_bytes() for p in (state, marks)}
    for action in ("write", "delete"):
        for path in (state, marks):
            assert as_till(accounts, action, str(path))["ok"] is False, (action, path)
    # Nor a fresh data dir beside it, for a new identity and a new provisional trial.
    assert as_till(accounts, "mkdir", str(service.layout.state / "data2"))["ok"] is False
    assert {p: p.read_bytes() for p in (state, marks)} == before
    assert service.control.status().license_state == "trial_active"


def test_till_user_cannot_kill_the_service(service: Running, accounts: Accounts) -> None:
    assert as_till(accounts, "kill", str(service.proc.pid)) == {"ok": False, "errno": "EPERM"}
    assert service.proc.poll() is None
    assert service.control.status().license_state == "trial_active"


def test_till_user_cannot_put_a_socket_where_the_service_listens(
    service: Running, accounts: Accounts
) -> None:
    assert as_till(accounts, "mkdir", str(service.layout.run / "agent.sock.d"))["errno"] == "EACCES"
    # Nor make the runtime directory while the service is away (systemd removes it on stop).
    assert as_till(accounts, "mkdir", str(service.layout.base / "run2"))["errno"] == "EACCES"


def test_another_users_credential_is_refused_on_the_real_socket(service: Running, accounts: Accounts) -> None:
    sock = str(unixchannel.socket_path(service.layout.run))
    hello = as_till(accounts, "hello", sock)
    assert hello["status"] == 200 and hello["body"]["user"] == f"uid:{pwd.getpwnam(accounts.till).pw_uid}"
    # The till user's credential, presented by another account (root, here): refused.
    stream = unixchannel.connect(service.layout.run, trusted_uids={accounts.service_uid})
    try:
        request = {
            "method": "GET",
            "path": "/v1/license",
            "body": {},
            "credential": hello["body"]["credential"],
        }
        stream.send_all(encode(request))
        answer = read_frame(stream)
    finally:
        stream.close()
    assert answer is not None and answer["body"]["error"] == "wrong_caller"
    # The genuine tray's credential, presented by the till user: refused too.
    service.control.status()
    stolen = service.control._credential
    assert stolen
    answer = as_till(accounts, "ask", sock, stolen, "POST", "/v1/deactivate", "{}")
    assert answer["status"] == 401 and answer["body"]["error"] == "wrong_caller"
    assert service.control.status().license_state == "trial_active"


def test_staff_read_the_status_but_spend_nothing_without_the_owners_proof(
    service: Running, accounts: Accounts
) -> None:
    sock = str(unixchannel.socket_path(service.layout.run))
    credential = as_till(accounts, "hello", sock)["body"]["credential"]
    status = as_till(accounts, "ask", sock, credential, "GET", "/v1/license", "{}")
    assert status["status"] == 200 and status["body"]["license_state"] == "trial_active"
    for path in ("/v1/portal", "/v1/terminals/add", "/v1/terminals/keep"):
        answer = as_till(
            accounts, "ask", sock, credential, "POST", path, '{"email": "o@x.gr", "machine_ids": ["m"]}'
        )
        assert answer["status"] == 403 and answer["body"]["error"] == "owner_proof_required", path


def test_a_program_that_took_the_port_first_gets_no_credential_nor_owner_code(accounts: Accounts) -> None:
    """The till user starts first: holds the agent's port and serves a socket of their own. The service
    cannot listen (it exits; systemd restarts it); the tray says the service is stopped, refuses the
    impostor's socket before sending a byte, and never touches the port."""
    layout_gen = _layout(accounts)
    layout = next(layout_gen)
    port = free_port()
    evil = layout.base / "evil"
    evil.mkdir()
    os.chown(evil, pwd.getpwnam(accounts.till).pw_uid, -1)
    log = evil / "received.jsonl"
    squatter = subprocess.Popen(
        [
            "runuser",
            "-u",
            accounts.till,
            "--",
            _python_for_others(),
            "-I",
            str(ATTACKER),
            "squat",
            str(port),
            str(evil / "run"),
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
        **new_group_kwargs(),
    )
    proc = None
    try:
        assert squatter.stdout is not None and json.loads(squatter.stdout.readline()) == {"ok": True}
        proc = _start_service(accounts, layout, port, layout.base / "agent.out")
        assert proc.wait(60) != 0  # "cannot listen on 127.0.0.1:<port>"
        assert "cannot listen" in (layout.base / "agent.out").read_text(errors="replace")
        # (The agent itself may knock on the port to say who holds it; what counts is the tray, below.)
        before_tray = log.read_text().splitlines() if log.exists() else []
        genuine = tray(layout, accounts)
        stopped: list = []
        unsubscribe = genuine.subscribe(stopped.append)
        deadline = time.monotonic() + 10
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        unsubscribe()
        genuine.close()
        assert stopped and stopped[0].reason == "service_stopped" and not stopped[0].licensed
        # The same tray pointed at the impostor's socket (an edited POSPAL_RUNTIME_DIR): refused, unsent.
        impostor = tray(Layout(layout.base, layout.state, layout.data, evil / "run"), accounts)
        with pytest.raises(errors.NotGenuineService):
            impostor.prove_owner("owner@cafe.example", "123456")
        impostor.close()
        received = log.read_text().splitlines() if log.exists() else []
        assert received == before_tray, received
        assert not any('"unix"' in line for line in received)
    finally:
        if proc is not None:
            _stop(proc)
        signal_group(squatter, kill=True)
        squatter.wait(10)
        next(layout_gen, None)
