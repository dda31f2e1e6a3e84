"""tests/conftest.py skip policy: under CI=true a missing service fails the test; another OS may skip."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = textwrap.dedent("""
    import pytest

    def test_needs_postgres():
        pytest.skip("POSPAL_TEST_DATABASE_URL is not set")

    @pytest.mark.skipif(True, reason="real Windows registry")
    def test_windows_only():
        pass

    def test_plain():
        assert True
""")


def run_sample(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_a_missing_service_fails_under_ci_but_another_os_may_skip(tmp_path, ci):
    out = run_sample(tmp_path, ci)
    assert out.returncode == 1, out.stdout
    assert "1 failed, 1 passed, 1 skipped" in out.stdout
    assert "every service and tool must be present: POSPAL_TEST_DATABASE_URL is not set" in out.stdout


def test_on_a_developer_machine_skips_stay_skips_and_are_listed(tmp_path):
    out = run_sample(tmp_path, "")
    assert out.returncode == 0, out.stdout
    assert "1 passed, 2 skipped" in out.stdout
    assert "variants that did not run here" in out.stdout
    assert "  POSPAL_TEST_DATABASE_URL is not set" in out.stdout
