"""server.config: typed settings from the environment, hidden secrets, clear errors naming the variable."""

from __future__ import annotations

import pytest

from server.config import Secret, Settings
from server.errors import ConfigError


def test_defaults_are_a_sqlite_demo_with_sandbox_billing(tmp_path):
    settings = Settings.from_env({"POSPAL_SERVER_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'pospal.db'}"
    assert (settings.billing, settings.email) == ("sandbox", "console")
    assert settings.signing_key_dir == tmp_path / "keys"
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.allowed_origins == ()
    assert settings.redis_url is None and not settings.auto_migrate


def test_stripe_key_makes_stripe_the_default_and_requires_the_rest(tmp_path):
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env({"POSPAL_SERVER_DATA_DIR": str(tmp_path), "STRIPE_SECRET_KEY": "sk_test_x"})
    settings = Settings.from_env(
        {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_y", "STRIPE_PRICE_ID": "price_1"}
    )
    assert settings.billing == "stripe"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"POSPAL_EMAIL": "smtp"}, "SMTP_URL"),
        ({"POSPAL_EMAIL": "resend"}, "RESEND_API_KEY"),
        ({"POSPAL_EMAIL": "pigeon"}, "POSPAL_EMAIL"),
        ({"POSPAL_BILLING": "paypal"}, "POSPAL_BILLING"),
        ({"POSPAL_DATABASE_URL": "mysql://x/y"}, "POSPAL_DATABASE_URL"),
        ({"POSPAL_DATABASE_URL": "::not a url"}, "POSPAL_DATABASE_URL"),
        ({"POSPAL_AUTO_MIGRATE": "maybe"}, "POSPAL_AUTO_MIGRATE"),
        ({"POSPAL_LOG_LEVEL": "LOUD"}, "POSPAL_LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_secrets_never_show_in_repr_or_str():
    settings = Settings.from_env(
        {
            "STRIPE_SECRET_KEY": "sk_live_TOPSECRET",
            "STRIPE_WEBHOOK_SECRET": "whsec_TOPSECRET",
            "STRIPE_PRICE_ID": "price_1",
            "POSPAL_EMAIL": "smtp",
            "SMTP_URL": "smtp://user:TOPSECRET@mail:587",
            "POSPAL_REDIS_URL": "redis://:TOPSECRET@r:6379/0",
        }
    )
    assert "TOPSECRET" not in repr(settings)
    assert "TOPSECRET" not in str(settings)
    assert settings.stripe_secret_key.reveal() == "sk_live_TOPSECRET"
    assert f"{Secret('x')}" == "Secret('**********')"


def test_allowed_origins_are_a_trimmed_list():
    settings = Settings.from_env({"ALLOWED_ORIGINS": "https://a.example/, https://b.example"})
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


def test_logs_scrub_secret_fields():
    import io
    import json
    import logging

    from server.logs import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream)
    try:
        logging.getLogger("pospal.test").info(
            "code_sent", extra={"email": "a@b.gr", "code": "123456", "detail": {"api_key": "k", "n": 1}}
        )
    finally:
        logging.getLogger().handlers.clear()
    line = json.loads(stream.getvalue())
    assert line["event"] == "code_sent" and line["email"] == "a@b.gr"
    assert line["code"] == "[redacted]" and line["detail"] == {"api_key": "[redacted]", "n": 1}
    assert "123456" not in stream.getvalue()


# ------------------------------------------------------------------------------- the production guard

_PRODUCTION = {
    "POSPAL_PUBLIC_URL": "https://license.example.com",
    "POSPAL_BILLING": "stripe",
    "STRIPE_SECRET_KEY": "sk_live_x",
    "STRIPE_WEBHOOK_SECRET": "whsec_y",
    "STRIPE_PRICE_ID": "price_1",
    "POSPAL_EMAIL": "smtp",
    "SMTP_URL": "smtp://user:pw@mail.example.com:587",
}


def test_production_starts_with_real_billing_and_mail():
    settings = Settings.from_env(_PRODUCTION)
    assert settings.environment == "production" and not settings.is_development
    assert settings.stripe_key_mode() == "live"


def test_production_refuses_sandbox_billing():
    env = {k: v for k, v in _PRODUCTION.items() if not k.startswith("STRIPE_")} | {"POSPAL_BILLING": ""}
    with pytest.raises(ConfigError, match=r"POSPAL_BILLING is sandbox.*set POSPAL_BILLING=stripe"):
        Settings.from_env(env)


def test_production_refuses_console_email():
    with pytest.raises(ConfigError, match=r"POSPAL_EMAIL is console.*set POSPAL_EMAIL=smtp"):
        Settings.from_env(_PRODUCTION | {"POSPAL_EMAIL": "console"})


@pytest.mark.parametrize("variable", ["POSPAL_ENABLE_TEST_HOOKS", "POSPAL_TEST_CLOCK_FILE"])
def test_production_refuses_test_hooks(variable):
    value = "1" if variable == "POSPAL_ENABLE_TEST_HOOKS" else "/tmp/clock"
    with pytest.raises(ConfigError, match=rf"{variable} is set.*remove {variable}"):
        Settings.from_env(_PRODUCTION | {variable: value})


def test_production_refuses_stripe_without_webhook_secret():
    env = {k: v for k, v in _PRODUCTION.items() if k != "STRIPE_WEBHOOK_SECRET"}
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:9000", "http://[::1]:8000", "http://127.0.0.2"]
)
def test_loopback_public_url_is_development(url):
    settings = Settings.from_env({"POSPAL_PUBLIC_URL": url, "POSPAL_ENABLE_TEST_HOOKS": "1"})
    assert settings.is_development and settings.billing == "sandbox"


def test_explicit_development_allows_the_fakes_and_explicit_production_refuses_them():
    dev = Settings.from_env({"POSPAL_PUBLIC_URL": "https://staging.example.com", "POSPAL_ENV": "development"})
    assert dev.is_development and (dev.billing, dev.email) == ("sandbox", "console")
    with pytest.raises(ConfigError, match="POSPAL_BILLING is sandbox"):
        Settings.from_env({"POSPAL_ENV": "production"})


# --------------------------------------------------------------------- every problem at once, one line each


def test_every_bad_setting_is_named_at_once_one_problem_each():
    env = _PRODUCTION | {
        "POSPAL_EMAIL": "console",
        "POSPAL_ENABLE_TEST_HOOKS": "1",
        "POSPAL_SEAT_IDLE_DAYS": "abc",
        "POSPAL_AUTO_MIGRATE": "maybe",
        "POSPAL_DATABASE_URL": "mysql://x/y",
    }
    del env["STRIPE_WEBHOOK_SECRET"]
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    problems = raised.value.problems
    expected = [
        "POSPAL_DATABASE_URL must be sqlite or postgresql",
        "POSPAL_AUTO_MIGRATE must be 1/0",
        "POSPAL_SEAT_IDLE_DAYS must be a whole number of days",
        "STRIPE_WEBHOOK_SECRET is required when POSPAL_BILLING is stripe",
        "POSPAL_EMAIL is console",
        "POSPAL_ENABLE_TEST_HOOKS is set",
    ]
    assert len(problems) == len(expected), problems
    for start, problem in zip(expected, problems, strict=True):
        assert problem.startswith(start), (start, problem)
        assert "\n" not in problem


def test_one_problem_is_still_one_line():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"POSPAL_LOG_LEVEL": "LOUD"})
    assert raised.value.problems == ("POSPAL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not 'LOUD'",)


def test_idle_days_below_the_lease_are_refused_in_production_only():
    """Issue 28, case 8: a seat must not free while its idle till's 14-day token can still run."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(_PRODUCTION | {"POSPAL_SEAT_IDLE_DAYS": "13"})
    [problem] = raised.value.problems
    assert problem.startswith("POSPAL_SEAT_IDLE_DAYS=13 is shorter than the 14-day offline lease")
    assert Settings.from_env(_PRODUCTION | {"POSPAL_SEAT_IDLE_DAYS": "14"}).seat_idle_days == 14
    # The fleet simulation compresses a month into days on a development server, and may go lower.
    assert Settings.from_env({"POSPAL_SEAT_IDLE_DAYS": "2"}).seat_idle_days == 2
