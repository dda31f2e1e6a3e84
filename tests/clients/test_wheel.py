"""pospal-client is a distribution of its own: its wheel builds offline, installs into a fresh venv with
nothing but `cryptography`, and README's snippet, unchanged, verifies a real agent's answer there.

The venv is made by uv (`--offline`: only what the locked install already fetched), the wheel from this
tree with `pip wheel --no-index`. The snippet runs from an empty directory, so nothing of the repository is
importable; the agent is a real `pospal-agent run --headless` on this PC's own fingerprint, and the trust
file is found as in the demo, through POSPAL_TRUSTED_KEYS.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.server.conftest import REPO

LIST_DISTRIBUTIONS = "import importlib.metadata as m; print([d.name for d in m.distributions()])"
IGNORE = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist")


def build_wheel(out: Path) -> Path:
    """Build pospal-client's wheel from a copy of the tree (clients/python, pospal_protocol/, agent/keys/)."""
    src = out / "src"
    shutil.copytree(REPO / "clients" / "python", src / "clients" / "python", ignore=IGNORE)
    shutil.copytree(REPO / "pospal_protocol", src / "pospal_protocol", ignore=IGNORE)
    shutil.copytree(REPO / "agent" / "keys", src / "agent" / "keys", ignore=IGNORE)
    dist = out / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(dist), str(src / "clients" / "python")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("pospal_client-*.whl")
    return wheel


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv with only the wheel and its dependency installed (offline); returns its python."""
    uv = [sys.executable, "-m", "uv"]
    subprocess.run(uv + ["venv", "-q", "--python", sys.executable, str(root)], check=True, timeout=120)
    python = root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    install = uv + ["pip", "install", "-q", "--offline", "--python", str(python)]
    if subprocess.run(install + [str(wheel)], capture_output=True, timeout=300).returncode != 0:
        # uv's cache lacks cryptography's wheel (a venv restored without it): take the installed copy of
        # cryptography and its dependencies, then the wheel without resolving. Still no index.
        _copy_distributions(python, ("cryptography", "cffi", "pycparser"))
        subprocess.run(install + ["--no-deps", str(wheel)], check=True, timeout=300)
    return python


def _copy_distributions(python: Path, names: tuple[str, ...]) -> None:
    """Copy installed distributions (their files, from RECORD) into the venv of `python`."""
    from importlib import metadata

    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            src = Path(dist.locate_file(file))
            if src.is_file() and ".." not in file.parts:
                dest = target / file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- pos-snippet -->\n```python\n(.*?)\n```", text, re.S)
    assert match, "README has no pos-snippet block"
    return match.group(1)


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    print(f"pospal-client wheel: {wheel.name}, {wheel.stat().st_size} bytes")
    return fresh_venv(tmp / "venv", wheel)


def test_the_wheel_holds_the_client_the_kernel_and_the_shipped_keys(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pospal_client/py.typed", "pospal_client/keys/trusted.json", "pospal_protocol/proof.py"} <= names
    assert not [n for n in names if n.startswith(("agent/", "server/", "ui/"))]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == ["Requires-Dist: cryptography>=42"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without POSPAL_* and PYTHON* (no PYTHONPATH into the repository)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSPAL_", "PYTHON"))}
    return {**env, **extra}


def test_the_fresh_venv_has_only_the_client_and_cryptography(venv_python):
    out = subprocess.run(
        [str(venv_python), "-c", LIST_DISTRIBUTIONS],
        cwd=venv_python.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert set(eval(out)) <= {"pospal-client", "pospal_client", "cryptography", "cffi", "pycparser"}
    for absent in ("agent", "server", "jwt", "PySide6", "flask"):
        argv = [str(venv_python), "-c", f"import {absent}"]
        probe = subprocess.run(argv, cwd=venv_python.parent, env=clean_env(), capture_output=True, timeout=60)
        assert probe.returncode != 0, absent


def test_the_readme_snippet_verifies_the_real_agent_from_the_fresh_venv(venv_python, client_world, tmp_path):
    script = tmp_path / "pos.py"
    script.write_text(
        readme_snippet()
        + "\nstatus = agent.verified_license()\nprint('VERDICT', status['licensed'], agent.can_sell())\n"
    )
    env = clean_env(
        HOME=str(tmp_path),
        POSPAL_AGENT_PORT=str(client_world.agent.port),
        POSPAL_TRUSTED_KEYS=str(client_world.trusted_path),
    )
    run = subprocess.run(
        [str(venv_python), str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "VERDICT True True" in run.stdout, run.stdout + run.stderr
    assert "refused" not in run.stdout


def test_without_the_trust_file_the_fresh_venv_refuses_the_demo_agent(venv_python, client_world, tmp_path):
    # The demo server's key is not among the agent's shipped keys: without POSPAL_TRUSTED_KEYS the client
    # must not take the demo's answer as proven.
    env = clean_env(HOME=str(tmp_path), POSPAL_AGENT_PORT=str(client_world.agent.port))
    code = "from pospal_client import AgentClient; print('SELL', AgentClient().can_sell())"
    run = subprocess.run(
        [str(venv_python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert "SELL False" in run.stdout, run.stdout + run.stderr
