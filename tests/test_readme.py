"""README: its first two commands are the demo and the test run, and what it documents exists.

A newcomer copies the README's commands; these tests keep them true: the two scripts exist and parse,
every environment variable the agent and server read is in the configuration tables, every
`pospal-agent` / `pospal-server` subcommand it mentions exists, and the picture is there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)]


def test_the_first_two_commands_are_the_demo_and_the_tests():
    blocks = _code_blocks(README)
    assert blocks[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]


@pytest.mark.parametrize("script", ["scripts/demo.sh", "scripts/test.sh"])
def test_the_scripts_the_readme_names_exist_and_parse(script):
    path = ROOT / script
    assert path.is_file()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    run = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^bash scripts/test\.sh$", ci, re.M)


def _env_vars(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r'env(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]+)"', text))
    names |= set(re.findall(r'_(?:secret|flag|choice)\(\s*env,\s*"([A-Z][A-Z0-9_]+)"', text))
    return names


@pytest.mark.parametrize("config", ["agent/config.py", "server/config.py"])
def test_every_setting_is_in_the_configuration_tables(config):
    names = _env_vars(ROOT / config)
    assert len(names) >= 5, f"found too few settings in {config}: the scan is broken"
    tables = README[README.index("## Configuration") : README.index("## Building the Windows installer")]
    missing = sorted(n for n in names if f"`{n}`" not in tables)
    assert missing == []


def _subcommands(parser) -> set[str]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_agent_commands_in_the_readme_exist():
    from agent.cli import build_parser

    mentioned = set(re.findall(r"pospal-agent (?:run \[--headless\] )?([a-z]+)\b", README))
    mentioned |= set(re.findall(r"`(status|fingerprint|trial|activate|buy|sync|deactivate)\b", README))
    assert {"trial", "buy", "status"} <= mentioned
    assert sorted(mentioned - _subcommands(build_parser())) == []


def test_server_commands_in_the_readme_exist():
    from server.cli import build_parser

    mentioned = set(re.findall(r"pospal-server ([a-z]+)\b", README))
    assert {"migrate", "run", "keys", "backup", "admin"} <= mentioned
    assert sorted(mentioned - _subcommands(build_parser())) == []


def test_the_readme_picture_exists():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert pictures, "the README has no picture"
    for picture in pictures:
        assert (ROOT / picture).is_file(), picture


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict | None:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback only
            return json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="the demo is a bash script")
def test_readme_command_1_runs_the_system_and_ctrl_c_stops_it(tmp_path):
    """`bash scripts/demo.sh`: the agent answers, a trial starts, and Ctrl+C (SIGINT to the terminal's
    process group, as a terminal sends it) stops the server and the agent; the demo exits 130."""
    import signal
    import time

    venv_bin = ROOT / ".venv" / "bin"
    # With the project installed (scripts/test.sh did it) the demo skips its install step to save time;
    # without, it runs the install as a new user's first run would.
    installed = (venv_bin / "pospal-agent").exists() and (venv_bin / "pospal-server").exists()
    if shutil.which("curl") is None:
        pytest.skip("the demo script uses curl")
    agent_port, server_port = _free_port(), _free_port()
    demo_dir = tmp_path / "demo"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("POSPAL_", "STRIPE_", "DISPLAY", "WAYLAND"))
    }
    env.update(
        DEMO_DIR=str(demo_dir),
        DEMO_SERVER_PORT=str(server_port),
        POSPAL_AGENT_PORT=str(agent_port),
        DEMO_HEADLESS="1",
        DEMO_SKIP_INSTALL="1" if installed else "0",
    )
    log = (tmp_path / "demo.out").open("w")
    demo = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        status = None
        deadline = time.monotonic() + (90 if installed else 600)
        while status is None and time.monotonic() < deadline and demo.poll() is None:
            status = _get_json(f"http://127.0.0.1:{agent_port}/v1/license")
            time.sleep(0.3)
        assert status is not None, (tmp_path / "demo.out").read_text()
        assert status["license_state"] == "license_missing"
        assert (demo_dir / "trusted-keys.json").is_file()

        command = f". '{demo_dir}/env.sh' && pospal-agent trial --email owner@example.com"
        trial = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
        assert trial.returncode == 0, trial.stdout + trial.stderr
        assert _get_json(f"http://127.0.0.1:{agent_port}/v1/license")["license_state"] == "trial_active"

        os.killpg(demo.pid, signal.SIGINT)  # Ctrl+C reaches the whole foreground process group
        assert demo.wait(timeout=30) == 130
        assert _get_json(f"http://127.0.0.1:{agent_port}/v1/health") is None
        assert _get_json(f"http://127.0.0.1:{server_port}/health") is None
        assert "stopped." in (tmp_path / "demo.out").read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)
        log.close()
