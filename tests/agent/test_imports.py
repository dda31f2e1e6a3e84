"""The agent package never pulls in PySide6, ui/ or server/ (STYLE: the agent owns the state, headless)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import agent
    names = sorted(m.name for m in pkgutil.walk_packages(agent.__path__, "agent."))
    for name in names:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "ui", "server"))
    print(json.dumps({"modules": names, "leaked": leaked}))
""")


def test_every_agent_module_imports_without_pyside6_ui_or_server():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {
        "agent.core.anchors",
        "agent.core.state",
        "agent.vault.store",
        "agent.cloud.sync",
        "agent.localapi.api",
        "agent.link.channel",
        "agent.host.winservice",
        "agent.selfupdate.launcher",
        "agent.cli",
    } <= set(result["modules"])
    assert result["leaked"] == []
