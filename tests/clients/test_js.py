"""clients/js (Node, standard library only): README's test vectors give their verdicts, and against a real
agent the genuine answer is accepted while a fake agent on the port, a replayed and an edited answer, and a
relay to a POS on another OS are refused; README's Node snippet runs and verifies. After a rotation the
same checks follow the chain: the vectors carry one. Like the Python client, it rides over `503 busy`,
`503 updating` and a swap's refused connection inside its one deadline (`Budget`, also on a fake clock).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading

import pytest

from pospal_protocol.fingerprint import current
from tests.clients.scripted import ScriptedServer, read_request
from tests.clients.test_edges import WINDOWS_PC, _drip
from tests.clients.test_flask import genuine_answer
from tests.clients.test_retry import OK, UPDATING, _busy_with, _counting
from tests.server.conftest import REPO

CLI = REPO / "clients" / "js" / "cli.mjs"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (.ci/run installs nodejs)")


def node(*args: str) -> str:
    out = subprocess.run([NODE, str(CLI), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def readme_vectors() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return json.loads(re.search(r"<!-- local-answer-vectors -->\n```json\n(.*?)\n```", text, re.S).group(1))


def test_the_readme_vectors_give_their_verdicts_in_node(tmp_path):
    doc = readme_vectors()
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(doc))
    got = dict(line.split("\t") for line in node("vectors", str(path)).splitlines())
    want = {"genuine": doc["verdict"], **{v["name"]: v["verdict"] for v in doc["variants"]}}
    assert got == want


def ask(port: int, world, tmp_path, this_pc: dict | None = None) -> dict:
    pc = tmp_path / "this-pc.json"
    pc.write_text(json.dumps(this_pc if this_pc is not None else current().hashes()))
    out = node("verify", "--port", str(port), "--trusted", str(world.trusted_path), "--this-pc", str(pc))
    return json.loads(out)


def test_node_accepts_the_genuine_agent(client_world, tmp_path):
    assert ask(client_world.agent.port, client_world, tmp_path)["verdict"] == "licensed"


@pytest.mark.parametrize("attack", ["fake agent", "replayed answer", "edited answer"])
def test_node_refuses_what_the_agent_did_not_prove(client_world, impostor, tmp_path, attack):
    if attack == "fake agent":
        answer = {"license_state": "licensed_active", "licensed": True}
    else:
        answer = genuine_answer(client_world)
        if attack == "edited answer":
            answer["days_left"] = 3650
    canned = tmp_path / "answer.json"
    canned.write_text(json.dumps(answer))
    assert ask(impostor("answer", str(canned)), client_world, tmp_path)["verdict"] == "bad_proof"


def test_node_refuses_an_answer_relayed_to_a_pos_on_another_os(client_world, impostor, tmp_path):
    relay = impostor("proxy", str(client_world.agent.port))
    assert ask(relay, client_world, tmp_path, WINDOWS_PC)["verdict"] == "other_machine"


def test_the_readme_node_snippet_verifies_the_real_agent(client_world, tmp_path):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"\*\*JavaScript \(Node\)\.\*\*.*?```js\n(.*?)\n```", text, re.S).group(1)
    module = (REPO / "clients" / "js" / "pospal-verify.mjs").as_uri()
    script = tmp_path / "pos.mjs"
    script.write_text(
        snippet.replace("./clients/js/pospal-verify.mjs", module)
        + '\nconsole.log("VERDICT", status.licensed, await agent.canSell());\nagent.close();\n'
    )
    fp = current()
    components = [{"name": c.name, "ok": c.ok, "hash": c.hash} for c in fp.components]
    (tmp_path / "this-pc.json").write_text(json.dumps({"components": components}))
    shutil.copyfile(client_world.trusted_path, tmp_path / "trusted-keys.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSPAL_")}
    env["POSPAL_AGENT_PORT"] = str(client_world.agent.port)
    run = subprocess.run(
        [NODE, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "VERDICT true true" in run.stdout, run.stdout + run.stderr


def test_node_gives_up_on_a_one_byte_per_second_answer_at_its_deadline(client_world, tmp_path):
    sent: list[int] = []
    stop = threading.Event()
    server = ScriptedServer(_drip(sent, stop))
    try:
        pc = tmp_path / "this-pc.json"
        pc.write_text(json.dumps(current().hashes()))
        argv = ["verify", "--port", str(server.port), "--trusted", str(client_world.trusted_path)]
        out = json.loads(node(*argv, "--this-pc", str(pc), "--timeout-ms", "1000"))
        assert out["verdict"] == "agent_unavailable"
        assert len(sent) <= 3  # it gave up while the answer was still dripping
    finally:
        stop.set()
        server.stop()


def test_node_refuses_a_300_mib_answer_without_reading_it(client_world, tmp_path):
    size = 300 * 1024 * 1024
    sent: list[int] = []

    def huge(_index: int, sock) -> None:
        read_request(sock)
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // 65536):
            sock.sendall(b"x" * 65536)
            sent.append(1)

    server = ScriptedServer(huge)
    try:
        pc = tmp_path / "this-pc.json"
        pc.write_text(json.dumps(current().hashes()))
        argv = ["verify", "--port", str(server.port), "--trusted", str(client_world.trusted_path)]
        assert json.loads(node(*argv, "--this-pc", str(pc)))["verdict"] == "bad_proof"
        assert len(sent) < size // 65536
    finally:
        server.stop()


# -- retries inside the deadline (issue 28 case 4, issue 24) ---------------------------------------------


def _verify_plain(port: int, tmp_path, timeout_ms: int = 5000) -> dict:
    """`cli.mjs verify` against a loopback server whose answers need no keys (not licensed)."""
    (tmp_path / "none.json").write_text('{"keys": []}')
    (tmp_path / "pc.json").write_text("{}")
    argv = ["verify", "--port", str(port), "--trusted", str(tmp_path / "none.json")]
    return json.loads(node(*argv, "--this-pc", str(tmp_path / "pc.json"), "--timeout-ms", str(timeout_ms)))


@pytest.mark.parametrize("refusal", ["busy", "updating"])
def test_node_rides_over_a_busy_or_updating_agent(tmp_path, refusal):
    asked: list[int] = []
    first = _busy_with(1) if refusal == "busy" else UPDATING
    server = ScriptedServer(_counting([first], OK, asked))
    try:
        assert _verify_plain(server.port, tmp_path)["verdict"] == "not_licensed"
        assert len(asked) == 2
    finally:
        server.stop()


def test_node_against_an_agent_busy_for_ever_gets_busy_by_its_deadline(tmp_path):
    asked: list[int] = []
    server = ScriptedServer(_counting([], _busy_with(0), asked))
    try:
        assert _verify_plain(server.port, tmp_path, timeout_ms=1000)["verdict"] == "busy"
        assert 2 <= len(asked) <= 64
    finally:
        server.stop()


def test_node_does_not_wait_for_a_retry_after_past_its_deadline(tmp_path):
    asked: list[int] = []
    server = ScriptedServer(_counting([], _busy_with(30), asked))
    try:
        assert _verify_plain(server.port, tmp_path, timeout_ms=2000)["verdict"] == "busy"
        assert len(asked) == 1
    finally:
        server.stop()


SWAP_SCRIPT = """
import { AgentClient } from %(module)s;
import readline from "node:readline";
const agent = new AgentClient({ trustedKeys: { keys: [] }, thisPc: {}, port: %(port)d, timeoutMs: 10000 });
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
console.log("FIRST", (await agent.verifiedLicense()).licensed);
await lines.next();
agent.forgetVerified();
console.log("SECOND", (await agent.verifiedLicense()).licensed);
agent.close();
process.exit(0);
"""


def test_node_rides_over_a_refused_connection_while_the_agent_swaps(tmp_path):
    old = ScriptedServer(_counting([], OK, []))
    port = old.port
    module = json.dumps((REPO / "clients" / "js" / "pospal-verify.mjs").as_uri())
    script = tmp_path / "swap.mjs"
    script.write_text(SWAP_SCRIPT % {"module": module, "port": port})
    proc = subprocess.Popen([NODE, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    asked: list[int] = []
    servers = [old]
    starter = threading.Timer(0.3, lambda: servers.append(ScriptedServer(_counting([], OK, asked), port)))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().split() == ["FIRST", "false"]
        old.stop()  # nothing listens on the port for a moment, then the new version does
        starter.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=30)
        assert out.split() == ["SECOND", "false"]
        assert len(asked) == 1
    finally:
        starter.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for server in servers:
            server.stop()


BUDGET_SCRIPT = """
import { Budget, MAX_ATTEMPTS } from %(module)s;
let seed = 28;
const rand = () => ((seed = (seed * 1103515245 + 12345) %% 2147483648) / 2147483648);
let worst = -Infinity, most = 0;
for (let i = 0; i < 500; i++) {
  let now = 1000;
  const budget = new Budget(now + 100 + rand() * 4900, () => now, async (ms) => { now += ms; });
  const took = rand() * 500, wait = [0, 10, 300, 1000, 3000, 60000][Math.floor(rand() * 6)];
  const gap = rand() < 0.3;
  for (;;) {
    budget.begin();
    if (budget.attempts > 1) worst = Math.max(worst, now + took - budget.deadline);
    now += Math.min(took, budget.deadline - now);
    if (!(await (gap ? budget.retryGap() : budget.retry(wait)))) break;
  }
  worst = Math.max(worst, now - budget.deadline);
  most = Math.max(most, budget.attempts);
}
console.log(JSON.stringify({ worst, most, max: MAX_ATTEMPTS }));
"""


def test_node_retry_budget_never_passes_the_deadline_on_a_fake_clock(tmp_path):
    module = json.dumps((REPO / "clients" / "js" / "pospal-verify.mjs").as_uri())
    script = tmp_path / "budget.mjs"
    script.write_text(BUDGET_SCRIPT % {"module": module})
    run = subprocess.run([NODE, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["worst"] <= 0  # no retry started that could not finish, no time spent past the deadline
    assert 1 <= out["most"] <= out["max"]
