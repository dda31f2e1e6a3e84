"""Terminal names the owner understands (issue 27, item 5), with real `pospal-agent` processes and a real
server: a name given at activation, a till renamed from its own command line, and the owner renaming
another till, whose next sync shows it. Two tills both showed as `vm` (their host name) before."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.agent.conftest import REPO, emailed_code, pay, write_trusted_keys
from tests.agent.test_e2e import wait_for_prompt

EMAIL = "owner@names-e2e.example"


def _prompted(agent, args: tuple[str, ...], db_url: str) -> tuple[str, subprocess.Popen]:
    """Run `pospal-agent ARGS`, answer its "Code: " prompt with the code just e-mailed; (stderr, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env=agent.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = wait_for_prompt(proc, "Code: ")
    _out, err = proc.communicate(emailed_code(db_url, EMAIL) + "\n", timeout=60)
    return seen + err, proc


def test_tills_are_named_at_activation_renamed_by_themselves_and_by_the_owner(real_server, agents, tmp_path):
    db_url = real_server.env["POSPAL_DATABASE_URL"]
    keys = write_trusted_keys(real_server.url, tmp_path / "trusted.json")
    bar = agents(real_server.url, keys).start()
    buyer = bar.popen_cli(
        "buy", EMAIL, "--restaurant", "Cafe", "--quantity", "2", "--name", "Bar", "--poll", "0.2"
    )
    pay(buyer.stdout.readline().strip())
    assert buyer.wait(60) == 0, buyer.communicate(timeout=10)[1]
    assert bar.license()["terminal_name"] == "Bar"

    kitchen = agents(real_server.url, keys).start()
    _err, proc = _prompted(kitchen, ("activate", EMAIL), db_url)
    assert proc.returncode == 0, _err
    default = kitchen.license()["terminal_name"]
    host = socket.gethostname()
    assert default.startswith(f"{host}-") and len(default) == len(host) + 5  # the host and a key tag

    renamed = kitchen.cli("rename", "Kitchen")
    assert renamed.returncode == 0, renamed.stderr
    assert kitchen.license()["terminal_name"] == "Kitchen"
    kitchen_id = kitchen.license()["machine_id"]

    # The owner, at the bar, renames the kitchen's till: a step asks for the owner's code first.
    seen, proc = _prompted(bar, ("rename", "Kitchen 2", "--terminal", kitchen_id), db_url)
    assert proc.returncode == 0 and "Next step: the owner confirms" in seen, seen
    assert kitchen.cli("sync").returncode == 0
    assert kitchen.license()["terminal_name"] == "Kitchen 2"
    listed = bar.cli("terminals")
    assert "Bar" in listed.stdout and "Kitchen 2" in listed.stdout, listed.stdout
