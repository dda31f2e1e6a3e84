"""`pospal-server check`: validate a configuration before a deploy, without changing anything.

Each check returns `Finding`s: what was checked, whether it is fine, and for a problem one line that
names the setting and the fix. Checks that talk to a service only read or log in: the Stripe price is
fetched and the webhook endpoints listed, the database's schema revision is read, SMTP logs in and
quits, Resend lists domains. Nothing is sent, paid, created or migrated.

    public URL      https (unless development)
    Stripe          key mode (live/test) and accepted, the pinned API version accepted, the price exists
                    and is active, webhook secret is whsec_..., and the webhook endpoint at
                    POSPAL_PUBLIC_URL/v1/webhooks/stripe is enabled, in that API version, with our events
    signing keys    the key directory and its private files are readable by their owner only
    database        reachable, and at this code's newest migration
    e-mail          SMTP: login accepted (no message sent); Resend: the key is accepted
    Redis           when POSPAL_REDIS_URL is set: it answers PING (the URL, which holds the password, is
                    never printed)

`pospal-server check` prints the settings problems (`Settings.from_env`'s `ConfigError.problems`) first,
as `FAIL settings: ...` lines; these checks need settings that load, so they run once those are fixed.
"""

from __future__ import annotations

import smtplib
import ssl
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import requests

from server.billing.stripe import API_VERSION
from server.config import Settings
from server.db import Database, current_revision, head_revision
from server.errors import ConfigError
from server.webhooks import CUSTOMER_EVENTS, FLAGGED_EVENTS, SUBSCRIPTION_EVENTS

TIMEOUT_S = 10.0
# Where Stripe delivers events (server/api/billing.py), and the events the server acts on.
WEBHOOK_PATH = "/v1/webhooks/stripe"
WEBHOOK_EVENTS = SUBSCRIPTION_EVENTS | FLAGGED_EVENTS | CUSTOMER_EVENTS


@dataclass(frozen=True)
class Finding:
    """One checked thing: `ok`, its name, and a line saying what was found (and the fix when not ok)."""

    ok: bool
    what: str
    detail: str

    def line(self) -> str:
        """The printed line: `ok   what: detail` or `FAIL what: detail`."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


def check_public_url(settings: Settings) -> list[Finding]:
    """Agents and browsers send codes and tokens to the public URL: it must be https in production."""
    scheme = urlsplit(settings.public_url).scheme
    if scheme == "https" or settings.is_development:
        return [Finding(True, "public URL", f"{settings.public_url} ({settings.environment})")]
    return [
        Finding(
            False,
            "public URL",
            f"POSPAL_PUBLIC_URL={settings.public_url} is not https: put the server behind TLS and set "
            "POSPAL_PUBLIC_URL=https://...",
        )
    ]


def check_stripe(settings: Settings, session: requests.Session | None = None) -> list[Finding]:
    """Key, webhook secret, API version, price and webhook endpoint: two GETs, nothing is created.

    The price is read with the pinned `Stripe-Version` header, so one request shows that Stripe accepts
    the key and the API version and has the price. The webhook endpoints are then listed to find the one
    at this server's URL: enabled, sending the events the server handles, in the pinned API version
    (its signing secret cannot be read back from Stripe, so only its format is checked).
    """
    if settings.billing != "stripe":
        return [Finding(True, "billing", f"{settings.billing} (no Stripe settings to check)")]
    findings = []
    mode = settings.stripe_key_mode()
    if mode == "unknown":
        findings.append(
            Finding(
                False,
                "Stripe key",
                "STRIPE_SECRET_KEY is not an sk_live_/sk_test_/rk_ key: copy the "
                "secret key from the Stripe Dashboard (Developers > API keys)",
            )
        )
    elif mode == "test" and not settings.is_development:
        findings.append(
            Finding(
                False,
                "Stripe key",
                "STRIPE_SECRET_KEY is a test key on a production server: no money "
                "moves; use the live key, or POSPAL_ENV=development for a staging server",
            )
        )
    key_named = bool(findings)  # the key's problem is already one line: the API check adds no "ok" for it
    secret = settings.stripe_webhook_secret.reveal() if settings.stripe_webhook_secret else ""
    if secret.startswith("whsec_") and len(secret) > len("whsec_") and secret.isascii() and " " not in secret:
        findings.append(Finding(True, "Stripe webhook secret", "whsec_... format"))
    else:
        findings.append(
            Finding(
                False,
                "Stripe webhook secret",
                "STRIPE_WEBHOOK_SECRET must be the endpoint's signing "
                "secret (whsec_...), from Developers > Webhooks > your endpoint",
            )
        )
    if mode != "unknown":
        findings.extend(_check_stripe_api(settings, session or requests.Session(), mode_ok=not key_named))
    return findings


def _stripe_get(settings: Settings, http: requests.Session, path: str) -> requests.Response:
    assert settings.stripe_secret_key
    base = (settings.stripe_api_base or "https://api.stripe.com").rstrip("/")
    return http.get(
        f"{base}{path}",
        headers={
            "Authorization": f"Bearer {settings.stripe_secret_key.reveal()}",
            "Stripe-Version": API_VERSION,
        },
        timeout=TIMEOUT_S,
    )


def _stripe_error(response: requests.Response) -> str:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return ""
    return str(error.get("message") or error.get("code") or "")


def _check_stripe_api(settings: Settings, http: requests.Session, *, mode_ok: bool) -> list[Finding]:
    """The price read (key, API version, price), then the webhook endpoint: one line per problem."""
    assert settings.stripe_price_id
    base = (settings.stripe_api_base or "https://api.stripe.com").rstrip("/")
    price = settings.stripe_price_id
    mode = settings.stripe_key_mode()
    try:
        response = _stripe_get(settings, http, f"/v1/prices/{price}")
    except requests.RequestException as exc:
        return [Finding(False, "Stripe API", f"could not reach Stripe at {base} ({type(exc).__name__})")]
    if response.status_code == 401:
        # Nothing else can be read with a refused key: the price and endpoint are not named as well.
        return [Finding(False, "Stripe key", "Stripe refused STRIPE_SECRET_KEY (401): use a current key")]
    findings = [Finding(True, "Stripe key", f"{mode} mode, accepted")] if mode_ok else []
    message = _stripe_error(response)
    if response.status_code == 400 and "version" in message.lower():
        findings.append(
            Finding(
                False,
                "Stripe API version",
                f"Stripe does not accept API version {API_VERSION} ({message}): "
                "install the stripe package pyproject.toml names",
            )
        )
        return findings
    findings.append(Finding(True, "Stripe API version", f"{API_VERSION} accepted"))
    findings.append(_price_finding(settings, response, price))
    findings.append(_check_webhook_endpoint(settings, http))
    return findings


def _price_finding(settings: Settings, response: requests.Response, price: str) -> Finding:
    if response.status_code == 404:
        return Finding(
            False,
            "Stripe price",
            f"STRIPE_PRICE_ID={price} does not exist in this Stripe account and mode: "
            "copy the price id (price_...) from the product page",
        )
    if response.status_code != 200:
        return Finding(False, "Stripe price", f"Stripe answered {response.status_code} for {price}")
    data = response.json()
    livemode = bool(data.get("livemode"))
    if settings.stripe_key_mode() in ("live", "test") and livemode != (settings.stripe_key_mode() == "live"):
        return Finding(False, "Stripe price", f"{price} is a {'live' if livemode else 'test'}-mode price")
    if not data.get("active", True):
        return Finding(False, "Stripe price", f"{price} is archived: make it active or use another price")
    return Finding(True, "Stripe price", f"{price} exists and is active")


def _check_webhook_endpoint(settings: Settings, http: requests.Session) -> Finding:
    """The endpoint at POSPAL_PUBLIC_URL/v1/webhooks/stripe: enabled, our events, our API version."""
    url = settings.public_url.rstrip("/") + WEBHOOK_PATH
    what = "Stripe webhook endpoint"
    try:
        response = _stripe_get(settings, http, "/v1/webhook_endpoints?limit=100")
    except requests.RequestException as exc:
        return Finding(False, what, f"could not list the webhook endpoints ({type(exc).__name__})")
    if response.status_code == 403:
        # A restricted key without the webhook permission: the endpoint cannot be confirmed either way.
        return Finding(True, what, "not readable with this restricted key (nothing to confirm)")
    if response.status_code != 200:
        return Finding(False, what, f"Stripe answered {response.status_code} listing webhook endpoints")
    # Matched without the scheme: a public URL that is not https is named once, by check_public_url.
    endpoints = [
        e
        for e in response.json().get("data", [])
        if str(e.get("url")).partition("://")[2] == url.partition("://")[2]
    ]
    create = f"create one at {url} with API version {API_VERSION} (Developers > Webhooks)"
    if not endpoints:
        return Finding(False, what, f"no endpoint sends to {url}: {create}")
    endpoint = endpoints[0]
    if endpoint.get("status") != "enabled":
        return Finding(False, what, f"{endpoint.get('id')} at {url} is {endpoint.get('status')}: enable it")
    version = endpoint.get("api_version")
    if version != API_VERSION:
        return Finding(
            False,
            what,
            f"{endpoint.get('id')} sends events in API version {version or 'the account default'}, this "
            f"server reads {API_VERSION}: {create}",
        )
    events = set(endpoint.get("enabled_events") or [])
    missing = sorted(WEBHOOK_EVENTS - events) if "*" not in events else []
    if missing:
        return Finding(False, what, f"{endpoint.get('id')} does not send {', '.join(missing)}: add them")
    return Finding(True, what, f"{endpoint.get('id')} at {url}, enabled, {API_VERSION}")


def check_key_dir(settings: Settings) -> list[Finding]:
    """The signing key directory and the private files in it must be the owner's alone."""
    key_dir = settings.signing_key_dir
    if not key_dir.exists():
        return [Finding(True, "signing key dir", f"{key_dir} does not exist yet (created at first start)")]
    problems = []
    for path in [key_dir, *sorted(p for p in key_dir.iterdir() if p.is_file())]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            wanted = "0700" if path.is_dir() else "0600"
            problems.append(
                Finding(
                    False,
                    "signing key dir",
                    f"{path} is mode {mode:04o}: other users can read the "
                    f"signing keys; run chmod {wanted} {path}",
                )
            )
    return problems or [Finding(True, "signing key dir", f"{key_dir} is readable by its owner only")]


def check_database(settings: Settings) -> list[Finding]:
    """Reachable, and migrated to this code's newest revision (read only)."""
    db = Database(settings.database_url, pool_size=1)
    try:
        current = current_revision(db)
    except Exception as exc:  # any driver error means the same thing to the operator
        return [
            Finding(
                False,
                "database",
                f"cannot read POSPAL_DATABASE_URL's database ({type(exc).__name__}): "
                "check the URL, the network and the credentials",
            )
        ]
    finally:
        db.dispose()
    head = head_revision()
    if current != head:
        return [
            Finding(
                False,
                "database",
                f"schema is at {current or 'nothing'}, this server needs {head}: run `pospal-server migrate`",
            )
        ]
    return [Finding(True, "database", f"reachable, schema at {head}")]


def check_email(settings: Settings, session: requests.Session | None = None) -> list[Finding]:
    """Log in to the e-mail provider without sending anything."""
    if settings.email == "smtp":
        assert settings.smtp_url
        return [_check_smtp(settings.smtp_url.reveal())]
    if settings.email == "resend":
        assert settings.resend_api_key
        return [_check_resend(settings, session or requests.Session())]
    return [Finding(True, "e-mail", "console (development: codes are printed, never sent)")]


def _check_smtp(url: str) -> Finding:
    from server.mail.smtp import SmtpMailer

    try:
        mailer = SmtpMailer(url, "check@localhost", timeout=TIMEOUT_S)
    except ConfigError as exc:
        return Finding(False, "SMTP", str(exc))
    password = unquote(urlsplit(url).password or "")
    where = f"{mailer.host}:{mailer.port}"
    try:
        context = ssl.create_default_context()
        smtp = (
            smtplib.SMTP_SSL(mailer.host, mailer.port, timeout=TIMEOUT_S, context=context)
            if mailer.use_ssl
            else smtplib.SMTP(mailer.host, mailer.port, timeout=TIMEOUT_S)
        )
        with smtp:
            smtp.ehlo()
            if mailer.starttls:
                if not smtp.has_extn("starttls"):
                    return Finding(
                        False, "SMTP", f"{where} offers no STARTTLS: use smtps:// or another relay"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if mailer.username:
                _login(smtp, mailer.username, password)
    except smtplib.SMTPAuthenticationError as exc:
        return Finding(
            False,
            "SMTP",
            f"{where} refused the login ({exc.smtp_code}): fix the user and password in SMTP_URL",
        )
    except (OSError, smtplib.SMTPException) as exc:
        return Finding(False, "SMTP", f"cannot talk to {where} ({type(exc).__name__}): check SMTP_URL")
    return Finding(True, "SMTP", f"{where} accepted the login (nothing sent)")


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """Log in once: PLAIN when offered (smtplib's `login` would retry a refusal with every mechanism)."""
    if "PLAIN" in (smtp.esmtp_features.get("auth") or "").upper().split():
        smtp.user, smtp.password = user, password
        smtp.auth("PLAIN", smtp.auth_plain)
    else:
        smtp.login(user, password)


def _check_resend(settings: Settings, http: requests.Session) -> Finding:
    assert settings.resend_api_key
    try:
        response = http.get(
            f"{settings.resend_api_base}/domains",
            headers={"Authorization": f"Bearer {settings.resend_api_key.reveal()}"},
            timeout=TIMEOUT_S,
        )
    except requests.RequestException as exc:
        return Finding(False, "Resend", f"cannot reach {settings.resend_api_base} ({type(exc).__name__})")
    if response.status_code == 200:
        return Finding(True, "Resend", "RESEND_API_KEY accepted (nothing sent)")
    name = ""
    try:
        name = str(response.json().get("name", ""))
    except ValueError:
        pass
    if name == "restricted_api_key":
        # A sending-only key may not list domains: the key itself was recognised.
        return Finding(True, "Resend", "RESEND_API_KEY accepted (sending access only; nothing sent)")
    return Finding(
        False,
        "Resend",
        f"Resend refused RESEND_API_KEY ({response.status_code} {name}): "
        "create a key with sending access and set RESEND_API_KEY",
    )


def check_redis(settings: Settings) -> list[Finding]:
    """When Redis is configured (shared rate limits), it must answer PING: no key is read or written."""
    if not settings.redis_url:
        return [Finding(True, "Redis", "not configured (rate limits are kept in each process's memory)")]
    import redis

    try:
        client = redis.Redis.from_url(
            settings.redis_url.reveal(), socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
    except ValueError:
        return [Finding(False, "Redis", "POSPAL_REDIS_URL is not a redis:// or rediss:// URL")]
    try:
        client.ping()
    except redis.AuthenticationError:
        return [Finding(False, "Redis", "Redis refused the password in POSPAL_REDIS_URL: fix the URL")]
    except redis.RedisError as exc:
        return [
            Finding(
                False,
                "Redis",
                f"cannot reach POSPAL_REDIS_URL's Redis ({type(exc).__name__}): check the URL, the network "
                "and the password, or unset POSPAL_REDIS_URL to keep rate limits in memory (one instance)",
            )
        ]
    finally:
        client.close()
    return [Finding(True, "Redis", "answers PING")]


CHECKS: tuple[Callable[[Settings], list[Finding]], ...] = (
    check_public_url,
    check_stripe,
    check_key_dir,
    check_database,
    check_email,
    check_redis,
)


def run_checks(
    settings: Settings, checks: Iterable[Callable[[Settings], list[Finding]]] = CHECKS
) -> list[Finding]:
    """Every check's findings, in order (a check that crashes is itself a finding)."""
    findings: list[Finding] = []
    for check in checks:
        try:
            findings.extend(check(settings))
        except Exception as exc:
            findings.append(Finding(False, check.__name__.removeprefix("check_"), f"check failed: {exc!r}"))
    return findings
