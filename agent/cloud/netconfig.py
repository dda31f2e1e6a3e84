"""How the agent reaches the cloud: the operating system's trust store and proxy settings.

**Trust.** HTTPS is verified against the OS trust store through `truststore` (Windows CryptoAPI, macOS
Security framework, OpenSSL's default paths on Linux, which honour `SSL_CERT_FILE`), not certifi alone.
Antivirus HTTPS scanning (Avast, Kaspersky, Norton) and corporate proxies re-sign TLS with a root that
only the OS store holds; with certifi the agent would read "offline" and, after the lease, stop the
till. No pinning: the token signature already protects the license, TLS only protects privacy.

**Proxy.** requests asks `urllib.request.getproxies()`: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the
environment, else (on Windows) the user's Internet Settings in the registry (`ProxyEnable`,
`ProxyServer`, `ProxyOverride`), else (macOS) the System Configuration. An authenticated proxy is
given with its credentials in the URL (`http://user:pass@proxy:8080`).

`describe(url)` says which proxy and which trust store a request to `url` uses, for Diagnostics; a
proxy's password is never shown.
"""

from __future__ import annotations

import logging
import ssl
import sys
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


def _truststore_context() -> ssl.SSLContext | None:
    try:
        import truststore
    except ImportError:
        return None
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def new_session() -> requests.Session:
    """A requests Session whose HTTPS uses the OS trust store (certifi only if truststore is missing)."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    ctx = _truststore_context()
    if ctx is None:
        log.warning("truststore is not available; HTTPS trusts certifi's roots only")
        return session

    class TrustStoreAdapter(HTTPAdapter):
        """Hands urllib3 the truststore context, and no CA bundle that would replace it."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            kwargs["ssl_context"] = ctx
            return super().proxy_manager_for(proxy, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, verify, cert)
            if verify is True:
                # requests would load certifi's bundle into the context; the OS store is the trust here.
                conn.ca_certs = None
                conn.ca_cert_dir = None

    session.mount("https://", TrustStoreAdapter())
    session.trust_env = True
    session.truststore = True  # type: ignore[attr-defined]  # read back by describe()
    return session


def trust_store_name(session: Any = None) -> str:
    """Which roots verify HTTPS: the OS store (named per platform) or certifi."""
    if session is not None and not getattr(session, "truststore", False):
        return "certifi"
    if _truststore_context() is None:
        return "certifi"
    if sys.platform == "win32":
        return "Windows certificate store (truststore)"
    if sys.platform == "darwin":
        return "macOS keychain (truststore)"
    return "OpenSSL default paths (truststore)"


def mask(proxy_url: str) -> str:
    """`proxy_url` with any password replaced by `***`."""
    parts = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def proxy_for(url: str) -> tuple[str | None, str]:
    """`(proxy URL or None, where it came from)` for a request to `url`, as requests will choose it."""
    from requests.utils import get_environ_proxies

    env = urllib.request.getproxies_environment()
    source = (
        "environment" if env else ("registry (Internet Settings)" if sys.platform == "win32" else "system")
    )
    proxies = get_environ_proxies(url)
    scheme = urlsplit(url).scheme
    proxy = proxies.get(scheme) or proxies.get("all")
    return (proxy or None), (source if proxy else "direct")


def describe(url: str, session: Any = None) -> dict[str, str]:
    """`{"proxy", "trust_store"}` for Diagnostics (the proxy's password masked)."""
    try:
        proxy, source = proxy_for(url)
    except Exception as exc:  # the registry or environment unreadable: say so, never fail diagnostics
        return {"proxy": f"unknown ({exc.__class__.__name__})", "trust_store": trust_store_name(session)}
    shown = f"{mask(proxy)} (from {source})" if proxy else "none (direct)"
    return {"proxy": shown, "trust_store": trust_store_name(session)}
