"""`pospal-agent fingerprint [--json]`: component names, whether each worked, hashes, never raw values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from pospal_protocol import fingerprint as fpm

ROOT = Path(__file__).resolve().parents[2]
MACHINE_ID = Path("/etc/machine-id")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="this Linux machine's sources")
def test_fingerprint_json_on_this_machine_hides_raw_values():
    out = run_cli("fingerprint", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    names = [c["name"] for c in doc["components"]]
    assert names == ["machine_id", "product_uuid", "board_serial", "disk_serial", "mac"]
    working = [c for c in doc["components"] if c["ok"]]
    assert len(working) >= 2 and doc["working"] == len(working)
    assert all(len(c["hash"]) == 64 and int(c["hash"], 16) >= 0 for c in working)
    assert all(c["hash"] is None for c in doc["components"] if not c["ok"])
    if MACHINE_ID.exists():
        raw = MACHINE_ID.read_text().strip()
        for text in (out.stdout, out.stderr, run_cli("fingerprint").stdout):
            assert raw not in text and raw.upper() not in text


def test_fingerprint_table_output(monkeypatch, capsys):
    fake = fpm.Fingerprint((fpm.Component("machine_id", True, "ab" * 32), fpm.Component("mac", False, None)))
    monkeypatch.setattr(fpm, "current", lambda: fake)
    assert cli.main(["fingerprint"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["machine_id", "ok", "ab" * 32]
    assert lines[1].split() == ["mac", "unavailable", "-"]
    assert lines[-1] == "1 of 2 components available"


def test_no_subcommand_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_console_script_is_declared():
    assert 'pospal-agent = "agent.cli:main"' in (ROOT / "pyproject.toml").read_text()
