"""Agent settings from the environment (agent/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import DEFAULT_AGENT_PORT, DEFAULT_SERVER_URL, AgentSettings, default_data_dir
from agent.errors import ConfigError


def test_defaults():
    s = AgentSettings.from_env({})
    assert (s.server_url, s.agent_port, s.allowed_origins, s.trusted_keys_path) == (
        DEFAULT_SERVER_URL,
        DEFAULT_AGENT_PORT,
        (),
        None,
    )
    assert s.data_dir == default_data_dir() and "pospal" in str(s.data_dir).lower()


def test_windows_keeps_one_identity_per_machine_in_programdata(monkeypatch):
    from agent import config

    monkeypatch.setattr(config.sys, "platform", "win32")
    monkeypatch.setenv("ProgramData", r"C:\ProgramData")
    assert str(config.default_data_dir()).replace("/", "\\").endswith(r"C:\ProgramData\POSPal\License Agent")


def test_elsewhere_the_machine_dir_is_used_only_when_writable(monkeypatch, tmp_path):
    from agent import config

    monkeypatch.setattr(config.sys, "platform", "linux")
    monkeypatch.setattr(config, "_writable", lambda path: True)
    assert config.default_data_dir() == Path("/var/lib/pospal")
    monkeypatch.setattr(config, "_writable", lambda path: False)
    assert config.default_data_dir() == config.legacy_user_data_dir()


def test_writable_looks_at_the_nearest_existing_parent(tmp_path):
    from agent import config

    assert config._writable(tmp_path / "not" / "yet")
    (tmp_path / "file").write_text("x")
    assert not config._writable(tmp_path / "file" / "below")


def test_values_from_env(tmp_path):
    jwks = tmp_path / "keys.json"
    jwks.write_text('{"keys": []}')
    s = AgentSettings.from_env(
        {
            "POSPAL_SERVER_URL": "http://127.0.0.1:8000/",
            "POSPAL_AGENT_PORT": "17421",
            "POSPAL_DATA_DIR": str(tmp_path / "data"),
            "POSPAL_AGENT_ALLOWED_ORIGINS": "http://localhost:3000, https://POS.example.com",
            "POSPAL_TRUSTED_KEYS": str(jwks),
        }
    )
    assert s.server_url == "http://127.0.0.1:8000"
    assert s.agent_port == 17421
    assert s.data_dir == Path(tmp_path / "data")
    assert s.allowed_origins == ("http://localhost:3000", "https://pos.example.com")
    assert s.trusted_keys_path == jwks


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("POSPAL_SERVER_URL", "ftp://x"),
        ("POSPAL_SERVER_URL", "license.pospal.gr"),
        ("POSPAL_AGENT_PORT", "http"),
        ("POSPAL_AGENT_PORT", "70000"),
        ("POSPAL_AGENT_ALLOWED_ORIGINS", "https://pos.example.com/path"),
        ("POSPAL_AGENT_ALLOWED_ORIGINS", "*"),
        ("POSPAL_TRUSTED_KEYS", "/nonexistent/keys.json"),
    ],
)
def test_bad_values_fail_naming_the_variable(var, value):
    with pytest.raises(ConfigError, match=var):
        AgentSettings.from_env({var: value})
